"""Re-threshold a finished motion output (CSV or Parquet) from its numbers, without reading a video again.

Streams the file in record batches (memory stays flat however many rows), recomputes `cmotion` with
`vidcap.motion.labels.motion_label` from `cmotion_dx`, `cmotion_dy` and `cmotion_zoom`, and leaves every
other column as it was. A row without numbers keeps its `cmotion`: `unclassified` stays unclassified (the
motion could not be measured at any threshold) and an error row stays empty. The new file replaces the old
one atomically (or goes to `output`), so an interrupted relabel leaves the original intact.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from vidcap.errors import UserError
from vidcap.manifest.io import TableWriter, file_columns, iter_batches
from vidcap.motion.labels import check_threshold, motion_label

#: The output columns a motion run adds, besides status and error.
LABEL = "cmotion"
DX, DY, ZOOM = "cmotion_dx", "cmotion_dy", "cmotion_zoom"
POINTS, CONFIDENCE, REASON = "cmotion_points", "cmotion_confidence", "cmotion_reason"
NUMBERS = (DX, DY, ZOOM)


def relabel_file(path: str | os.PathLike, threshold: float, output: str | os.PathLike | None = None) -> Counter:
    """Rewrite `cmotion` of `path` at `threshold` (into `output`, default in place); the count per label."""
    try:
        check_threshold(threshold)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    path = Path(path)
    target = Path(output) if output is not None else path
    names = file_columns(path)
    missing = [c for c in (LABEL, *NUMBERS) if c not in names]
    if missing:
        raise UserError(f"{path}: not a motion output: no column {', '.join(repr(c) for c in missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    counts: Counter = Counter()
    writer = None
    rows = 0
    try:
        for batch in iter_batches(path):
            batch = relabel_batch(batch, threshold, path, first_row=rows)
            rows += batch.num_rows
            counts.update(v for v in batch.column(LABEL).to_pylist() if v)
            if writer is None:
                writer = TableWriter(tmp, batch.schema, like=target)
            writer.write(batch)
        if writer is None:  # no rows at all: keep the header
            writer = TableWriter(tmp, _schema(path), like=target)
        writer.close()
        writer = None
        os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return counts


def relabel_batch(batch: pa.RecordBatch, threshold: float, path: str | os.PathLike = "",
                  first_row: int = 0) -> pa.RecordBatch:
    """The batch with `cmotion` recomputed from the numbers at `threshold` (other columns untouched).

    `path` and `first_row` (the batch's first data row, 0-based) only name a bad value in the error."""
    numbers = [_floats(batch.column(name), name, path, first_row) for name in NUMBERS]
    old = batch.column(LABEL).to_pylist()
    labels = [label if dx is None or dy is None or zoom is None else motion_label(dx, dy, zoom, threshold)
              for label, dx, dy, zoom in zip(old, *numbers)]
    index = batch.schema.get_field_index(LABEL)
    kind = batch.schema.field(index).type
    column = pa.array(labels, type=pa.string()).cast(kind) if kind != pa.string() else pa.array(labels, pa.string())
    return batch.set_column(index, batch.schema.field(index), column)


def _floats(column: pa.Array, name: str, path: str | os.PathLike, first_row: int) -> list[float | None]:
    """A number column as floats (CSV gives text; empty is missing); UserError naming a bad value."""
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        values = column.cast(pa.float64())
    else:
        text = column.cast(pa.string())
        text = pc.if_else(pc.equal(pc.utf8_trim_whitespace(text), ""), pa.scalar(None, pa.string()), text)
        try:
            values = text.cast(pa.float64())
        except pa.ArrowInvalid:
            bad = next(i for i, v in enumerate(text.to_pylist()) if v is not None and not _is_float(v))
            raise UserError(f"{path}: row {first_row + bad + 1}: column {name!r}: not a number: "
                            f"{text[bad].as_py()!r}") from None
    return [None if v is None or v != v else v for v in values.to_pylist()]


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _schema(path: Path) -> pa.Schema:
    import pyarrow.parquet as pq

    from vidcap.manifest.io import manifest_format

    if manifest_format(path) == "parquet":
        return pq.read_schema(path)
    return pa.schema([(name, pa.string()) for name in file_columns(path)])
