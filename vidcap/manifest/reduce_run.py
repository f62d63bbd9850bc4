"""Reducers over a run folder: merge (manifest + results) and remaining (rows still to caption).

Shards partition the manifest by key and each shard's results hold only its own keys, so both reducers
work one shard at a time and stream their output: memory follows the largest shard, never the run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidcap.durable import atomic_path
from vidcap.errors import UserError
from vidcap.manifest.io import TableWriter, manifest_format
from vidcap.manifest.resolve import best_per_key
from vidcap.manifest.split import load_shard
from vidcap.results import RESULT_COLUMNS, read_results
from vidcap.run import ROW_COLUMN, RunDir


@dataclass
class ReduceCounts:
    rows: int = 0
    ok: int = 0
    error: int = 0
    skipped: int = 0
    pending: int = 0  # no result yet
    given_up: int = 0  # left out of `remaining` by --max-attempts
    written: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)


def _shard_best(run: RunDir, index: int) -> pa.Table:
    return best_per_key(read_results(run, index), key="key")


def _task_columns(run: RunDir) -> list[pa.Field]:
    """The output columns the run's task declares (none for a run not yet frozen)."""
    config = run.load_config()
    if "task" not in config and "job" not in config:
        return []
    from vidcap.tasks.spec import TaskSpec

    return list(TaskSpec.from_config(config).make_task().columns)


def _result_schema(run: RunDir, shards: range) -> list[pa.Field]:
    """Union of the result columns over all shards (engines may add columns such as cost_usd); the task's
    declared columns and the store's own are there even before any result exists."""
    fields: dict[str, pa.Field] = {}
    for index in shards:
        for f in read_results(run, index).schema:
            if f.name != "key" and f.name not in fields:
                fields[f.name] = f
    for f in _task_columns(run):
        fields.setdefault(f.name, f)
    for name in RESULT_COLUMNS[1:]:
        fields.setdefault(name, pa.field(name, pa.string()))
    fields["failures"] = pa.field("failures", pa.int64())
    return list(fields.values())


def merge_run(run: RunDir, output: str | os.PathLike[str], caption_column: str = "text") -> ReduceCounts:
    """Every manifest row, in manifest order, with the result that counts for it (or none yet)."""
    manifest_format(output)
    config = run.load_config()
    key = config["manifest"]["key"]
    columns = config["manifest"]["columns"]
    shards = range(int(config["shards"]["count"]))
    result_fields = _result_schema(run, shards)
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
