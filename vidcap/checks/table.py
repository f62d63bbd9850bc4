"""Run the caption checks over a CSV or Parquet file of any captioner, streaming: `vidcap check-captions`.

Batches are read, checked and written one at a time (pyarrow's streaming CSV reader or Parquet row
groups), so memory stays flat on 10M rows. The output is the input with a `flags` column added (or
replaced): list<string> in Parquet, comma-separated text in CSV (vidcap's list convention), empty when a
caption passed every check.
It is written to a temporary file and renamed at the end, so a killed run never leaves a half file.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Collection, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidcap.checks import CaptionChecker, CheckContext, CheckSettings, FLAGS
from vidcap.errors import UserError
from vidcap.manifest.io import TableWriter, file_columns, iter_batches, manifest_format

FLAGS_COLUMN = "flags"
FLAGS_TYPE = pa.list_(pa.string())


@dataclass
class CheckCounts:
    """What a pass over a file found: rows read, rows per flag, rows with at least one flag."""

    rows: int = 0
    flagged: int = 0
    dropped: int = 0  # not written (--drop-flagged)
    per_flag: Counter = field(default_factory=Counter)

    def add(self, flags: list[list[str]]) -> None:
        self.rows += len(flags)
        for row in flags:
            if row:
                self.flagged += 1
                self.per_flag.update(row)


@dataclass(frozen=True)
class Columns:
    """Input columns beyond the caption that give each row's context (None: not in this file)."""

    text: str = "text"
    finish_reason: str | None = None
    generated_tokens: str | None = None


def flags_array(flags: list[list[str]]) -> pa.Array:
    """The `flags` column of a batch (TableWriter writes lists as comma-separated text in CSV)."""
    return pa.array(flags, type=FLAGS_TYPE)


def check_batch(checker: CaptionChecker, batch: pa.RecordBatch, columns: Columns,
                context: CheckContext) -> list[list[str]]:
    """The flags of every row of one batch, in row order."""
    texts = batch.column(columns.text).to_pylist()
    if columns.finish_reason is None and columns.generated_tokens is None:
        flags = checker.flags
        return [flags(t, context) for t in texts]
    reasons = (batch.column(columns.finish_reason).to_pylist() if columns.finish_reason
               else [context.finish_reason] * len(texts))
    tokens = (_as_ints(batch.column(columns.generated_tokens), columns.generated_tokens)
              if columns.generated_tokens else [context.generated_tokens] * len(texts))
    return [checker.flags(t, replace(context, finish_reason=r or None, generated_tokens=n))
            for t, r, n in zip(texts, reasons, tokens)]


def _as_ints(column: pa.Array, name: str) -> list[int | None]:
    if pa.types.is_integer(column.type):
        return column.to_pylist()
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
    try:
        return pc.cast(text, pa.int64()).to_pylist()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = next(v for v in column.to_pylist() if v not in (None, "") and not str(v).strip().isdigit())
        raise UserError(f"column '{name}': not a whole number of tokens: {bad!r}") from None


def check_file(source: str | os.PathLike[str], output: str | os.PathLike[str], settings: CheckSettings,
               columns: Columns, context: CheckContext, progress: bool = True,
               batch_rows: int = 1 << 16, drop_flags: Collection[str] = (), workers: int = 1) -> CheckCounts:
    """Check every caption of `source` and write it to `output` with a `flags` column; counts per flag.
    Rows raising any of `drop_flags` are counted but not written (a clean file)."""
    source, output = Path(source), Path(output)
    manifest_format(output)  # refuse an unknown output type before reading anything
    if source.resolve() == output.resolve():
        raise UserError(f"{output}: the output would overwrite the input; name another file")
    names = file_columns(source)
    for name in (columns.text, columns.finish_reason, columns.generated_tokens):
        if name is not None and name not in names:
            raise UserError(f"{source}: no column '{name}' (columns: {', '.join(names)})")
    counts = CheckCounts()
    total = _row_count(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    bar = _progress(total, progress)
    writer = None
    try:
        for batch, flags in _checked(iter_batches(source, batch_rows=batch_rows), settings, columns, context,
                                     workers):
            counts.add(flags)
            out = _with_flags(batch, flags_array(flags))
            if drop_flags:
                keep = [not any(f in drop_flags for f in row) for row in flags]
                counts.dropped += len(keep) - sum(keep)
                out = out.filter(pa.array(keep, pa.bool_()))
            if writer is None:
                writer = TableWriter(tmp, out.schema, like=output)
            writer.write(out)
            bar.update(batch.num_rows)
        if writer is None:  # a file with a header and no rows: still an output, with the flags column
            schema = _schema_with_flags(source)
            writer = TableWriter(tmp, schema, like=output)
        writer.close()
        writer = None
        os.replace(tmp, output)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return counts


def _checked(batches: Iterator[pa.RecordBatch], settings: CheckSettings, columns: Columns, context: CheckContext,
             workers: int) -> Iterator[tuple[pa.RecordBatch, list[list[str]]]]:
    """(batch, its flags) in file order: in this process, or in `workers` processes with at most two batches
    per worker in flight (memory stays bounded; only the columns the checks read are sent)."""
    if workers <= 1:
        checker = CaptionChecker(settings)
        for batch in batches:
            yield batch, check_batch(checker, batch, columns, context)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    needed = [n for n in (columns.text, columns.finish_reason, columns.generated_tokens) if n]
    pending: deque = deque()
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=(settings, columns, context)) as pool:
        for batch in batches:
            pending.append((batch, pool.submit(_check_in_worker, batch.select(needed))))
            while len(pending) > 2 * workers:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


_WORKER: tuple[CaptionChecker, Columns, CheckContext] | None = None


def _start_worker(settings: CheckSettings, columns: Columns, context: CheckContext) -> None:
    global _WORKER
    _WORKER = (CaptionChecker(settings), columns, context)


def _check_in_worker(batch: pa.RecordBatch) -> list[list[str]]:
    assert _WORKER is not None
    checker, columns, context = _WORKER
    return check_batch(checker, batch, columns, context)


def _with_flags(batch: pa.RecordBatch, flags: pa.Array) -> pa.RecordBatch:
    arrays = list(batch.columns)
    names = list(batch.schema.names)
    if FLAGS_COLUMN in names:  # checked again: the new flags replace the old
        i = names.index(FLAGS_COLUMN)
        del arrays[i], names[i]
    return pa.RecordBatch.from_arrays(arrays + [flags], names=names + [FLAGS_COLUMN])


def _schema_with_flags(source: Path) -> pa.Schema:
    if manifest_format(source) == "parquet":
        schema = pq.read_schema(source)
    else:
        schema = pa.schema([(n, pa.string()) for n in file_columns(source)])
    if FLAGS_COLUMN in schema.names:
        schema = schema.remove(schema.get_field_index(FLAGS_COLUMN))
    return schema.append(pa.field(FLAGS_COLUMN, FLAGS_TYPE))


def _row_count(source: Path) -> int | None:
    if manifest_format(source) == "parquet":
        try:
            return pq.ParquetFile(source).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            return None  # iter_batches names the problem
    return None


def _progress(total: int | None, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="row", unit_scale=True, desc="checking", file=sys.stderr,
                disable=not enabled, mininterval=1.0)


def format_counts(counts: CheckCounts, checks: tuple[str, ...]) -> str:
    """A table: rows per flag and their share, then rows with any flag and clean rows."""
    def line(name: str, n: int) -> str:
        share = f"{100 * n / counts.rows:.2f}%" if counts.rows else "-"
        return f"{name:<14}{n:>12}  {share:>8}"

    out = [f"{'flag':<14}{'rows':>12}  {'share':>8}"]
    out += [line(name, counts.per_flag.get(name, 0)) for name in FLAGS if name in checks]
    out += [line("any flag", counts.flagged), line("clean", counts.rows - counts.flagged),
            line("total", counts.rows)]
    if counts.dropped:
        out.append(line("left out", counts.dropped))
    return "\n".join(out)
