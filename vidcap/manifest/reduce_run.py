"""Reducers over a run folder: merge (manifest + results) and remaining (rows still to caption).

Shards partition the manifest by key and each shard's results hold only its own keys, so both reducers
work one shard at a time and stream their output: memory follows the largest shard, never the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Collection

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidcap.durable import atomic_path
from vidcap.errors import UserError
from vidcap.manifest.io import TableWriter, manifest_format
from vidcap.manifest.resolve import best_per_key
from vidcap.manifest.split import load_shard
from vidcap.engines import engine_class
from vidcap.results import RESULT_SCHEMA, WRITTEN_AT, read_results
from vidcap.run import ROW_COLUMN, RunDir


@dataclass
class ReduceCounts:
    rows: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    pending: int = 0  # no result yet
    given_up: int = 0  # left out of `remaining` by --max-attempts
    dropped: int = 0  # left out of `merge` by --drop-flagged
    written: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)


def _shard_best(run: RunDir, index: int) -> pa.Table:
    return best_per_key(read_results(run, index), key="key")


#: the task of a run that was split but not yet frozen (TaskSpec's default)
DEFAULT_TASK = "caption"


def _result_fields(config: dict) -> list[pa.Field]:
    """The result columns of a merged file, fixed by the run's config alone: the task's declared columns, the
    store's own, the engine's declared per-row figures, then `failures`. Never read from the results, so a
    merged file has one schema whether no shard, some or all have results (columns an engine did not
    declare stay in the store and are left out)."""
    store = list(RESULT_SCHEMA)[1:] + [pa.field(WRITTEN_AT, pa.float64())]
    if "task" in config or "job" in config:
        from vidcap.tasks.spec import TaskSpec

        spec = TaskSpec.from_config(config)
        declared = list(spec.make_task().columns) + store + list(engine_class(spec.engine).columns)
    else:  # split but not yet frozen by a task command: the default task's columns, captions
        from vidcap.tasks import task_class

        declared = list(task_class(DEFAULT_TASK)().columns) + store
    fields: dict[str, pa.Field] = {}
    for f in declared:
        if f.name != "key":
            fields.setdefault(f.name, f)
    fields["failures"] = pa.field("failures", pa.int64())
    return list(fields.values())


def merge_run(run: RunDir, output: str | os.PathLike[str], caption_column: str = "text",
              drop_flags: Collection[str] = ()) -> ReduceCounts:
    """Every manifest row, in manifest order, with the result that counts for it (or none yet).

    Rows whose `flags` (caption checks) hold any of `drop_flags` are left out and counted as dropped."""
    manifest_format(output)
    config = run.load_config()
    key = config["manifest"]["key"]
    columns = config["manifest"]["columns"]
    shards = range(int(config["shards"]["count"]))
    result_fields = _result_fields(config)
    rename = {"text": caption_column}
    out_names = [rename.get(f.name, f.name) for f in result_fields]
    clash = sorted(set(out_names) & set(columns))
    if clash:
        hint = " (name the caption column with --caption-column)" if caption_column in clash else ""
        raise UserError(f"the manifest already has column(s) {clash} that merge would add{hint}")
    schema = pa.schema(
        [pq.read_schema(run.shard_path(0)).field(c) for c in columns]
        + [pa.field(n, f.type) for n, f in zip(out_names, result_fields)]
    )
    counts = ReduceCounts()
    with atomic_path(output) as tmp:
        with TableWriter(tmp, schema, like=output) as writer:
            for index in shards:
                shard = load_shard(run, index)
                best = _shard_best(run, index)
                joined = _attach(shard, key, best, result_fields)
                _count(counts, joined)
                if drop_flags:
                    joined = _drop_flagged(joined, drop_flags, counts)
                joined = joined.rename_columns([rename.get(n, n) for n in joined.column_names])
                writer.write(joined.select(schema.names).cast(schema))
                counts.written += joined.num_rows
    return counts


def remaining_run(run: RunDir, output: str | os.PathLike[str], max_attempts: int | None = None,
                  done: tuple[str, ...] = ("ok",)) -> ReduceCounts:
    """Manifest rows with no result of a `done` status (`ok`), every column intact, in manifest order.

    With `max_attempts`, rows that already failed that many times are left out (and counted). `vidcap
    resume` also counts `skipped` rows as done, as its shard tasks do (a row with nothing to do, such as an
    empty caption to draw tags from, is never sent again)."""
    manifest_format(output)
    config = run.load_config()
    key = config["manifest"]["key"]
    columns = config["manifest"]["columns"]
    shards = range(int(config["shards"]["count"]))
    counts = ReduceCounts()
    with atomic_path(output) as tmp:
        writer = None
        for index in shards:
            shard = load_shard(run, index)
            best = _shard_best(run, index)
            joined = _attach(shard, key, best, [pa.field("status", pa.string()), pa.field("error", pa.string()), pa.field("failures", pa.int64())])
            _count(counts, joined)
            status = pc.fill_null(joined["status"], "")
            todo = pc.invert(pc.is_in(status, value_set=pa.array(list(done), pa.string())))
            if max_attempts is not None:
                exhausted = pc.and_(todo, pc.greater_equal(pc.fill_null(joined["failures"], 0), max_attempts))
                counts.given_up += pc.sum(exhausted).as_py() or 0
                todo = pc.and_(todo, pc.invert(exhausted))
            rows = shard.filter(todo).select(columns)
            if writer is None:
                writer = TableWriter(tmp, rows.schema, like=output)
            writer.write(rows)
            counts.written += rows.num_rows
        assert writer is not None
        writer.close()
    return counts


def _attach(shard: pa.Table, key: str, best: pa.Table, fields: list[pa.Field]) -> pa.Table:
    """Left-join the winning results onto the shard rows, keeping the shard's (manifest) order.

    By position (index_in + take), not Acero's join, which refuses list columns (tags) as payload."""
    names = [f.name for f in fields]
    best = best.select(["key"] + [n for n in names if n in best.column_names])
    shard_keys = shard[key] if shard.schema.field(key).type == best.schema.field("key").type \
        else pc.cast(shard[key], best.schema.field("key").type)
    positions = pc.index_in(shard_keys, value_set=best["key"])
    picked = best.take(positions)
    joined = shard
    for f in fields:
        column = picked[f.name] if f.name in picked.column_names else pa.nulls(joined.num_rows, type=f.type)
        joined = joined.append_column(f.name, column)
    return joined.sort_by(ROW_COLUMN)


def _drop_flagged(joined: pa.Table, flags: Collection[str], counts: ReduceCounts) -> pa.Table:
    """The rows whose `flags` list holds none of `flags` (a row with no result or no flags stays)."""
    if "flags" not in joined.column_names or joined.num_rows == 0:
        return joined
    column = joined["flags"].combine_chunks()
    hit = pc.is_in(pc.list_flatten(column), value_set=pa.array(sorted(flags), pa.string()))
    rows = pc.filter(pc.list_parent_indices(column), hit)
    drop = np.zeros(joined.num_rows, dtype=bool)
    drop[rows.to_numpy(zero_copy_only=False)] = True
    counts.dropped += int(drop.sum())
    return joined.filter(pa.array(~drop))


def _count(counts: ReduceCounts, joined: pa.Table) -> None:
    counts.rows += joined.num_rows
    status = pc.fill_null(joined["status"], "").to_numpy(zero_copy_only=False)
    counts.ok += int(np.count_nonzero(status == "ok"))
    counts.error += int(np.count_nonzero(status == "error"))
    counts.skipped += int(np.count_nonzero(status == "skipped"))
    counts.pending += int(np.count_nonzero(status == ""))
    if np.any(status == "error"):
        for reason in joined.filter(pa.array(status == "error"))["error"].to_pylist():
            short = (reason or "unknown").split(":")[0][:60]
            counts.failures_by_reason[short] = counts.failures_by_reason.get(short, 0) + 1
