"""Cut a manifest into shards inside a run folder.

Shards are contiguous runs of manifest rows (sizes differ by at most one), so the split is deterministic,
balanced, and concatenating the shards in order gives back the manifest order. Each shard keeps every
manifest column plus `_row`, the manifest row number.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidcap.errors import UserError
from vidcap.manifest.io import DEFAULT_KEY, fingerprint, read_manifest
from vidcap.durable import Batch
from vidcap.run import ROW_COLUMN, SHARD_NAME, RunDir

CONFIG_VERSION = 1
SHARD_FILE = SHARD_NAME + ".parquet"  # RunDir.shard_path's name


@dataclass
class SplitResult:
    run: RunDir
    rows: int
    shard_sizes: list[int]
    reused: bool  # the run already held this exact split


def shard_bounds(rows: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) of each shard: the first `rows % shards` shards get one row more."""
    base, extra = divmod(rows, shards)
    bounds, start = [], 0
    for i in range(shards):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def count_shards(rows: int, shards: int | None, rows_per_shard: int | None) -> int:
    if (shards is None) == (rows_per_shard is None):
        raise UserError("give exactly one of --shards N or --rows-per-shard M")
    if shards is not None:
        if shards < 1:
            raise UserError(f"--shards must be at least 1 (got {shards})")
        if shards > rows:
            raise UserError(f"--shards {shards} is more than the {rows} rows of the manifest")
        return shards
    assert rows_per_shard is not None
    if rows_per_shard < 1:
        raise UserError(f"--rows-per-shard must be at least 1 (got {rows_per_shard})")
    return math.ceil(rows / rows_per_shard)


def split(
    manifest: str | os.PathLike[str],
    run: RunDir,
    shards: int | None = None,
    rows_per_shard: int | None = None,
    key: str = DEFAULT_KEY,
    dedup: str | None = None,
    force: bool = False,
) -> SplitResult:
    """Create (or check) the run folder's shards for this manifest."""
    manifest = Path(manifest).absolute()
    table = read_manifest(manifest, key=key, dedup=dedup)
    count = count_shards(table.num_rows, shards, rows_per_shard)
    print_ = fingerprint(manifest)
    wanted = {
        "path": str(manifest),
        "fingerprint": print_,
        "key": key,
        "dedup": dedup,
        "rows": table.num_rows,
        "columns": [c for c in table.column_names],
    }
    if run.exists():
        config = run.load_config()
        old = config.get("manifest", {})
        same = (
            old.get("fingerprint") == print_
            and old.get("key") == key
            and old.get("dedup") == dedup
            and config.get("shards", {}).get("count") == count
        )
        if same:
            return SplitResult(run, table.num_rows, config["shards"]["sizes"], reused=True)
        if not force:
            what = []
            if old.get("fingerprint") != print_:
                what.append(f"manifest {old.get('path')} ({old.get('fingerprint', '?')[:19]}…)")
            if old.get("key") != key or old.get("dedup") != dedup:
                what.append(f"key '{old.get('key')}'")
            if config.get("shards", {}).get("count") != count:
                what.append(f"{config.get('shards', {}).get('count')} shards")
            raise UserError(
                f"{run.root}: this run was split from {' and '.join(what)}; "
                f"use another --run, or --force to archive its results and split again"
            )
        _refuse_live_tasks(run)
        archive = _archive_run(run)
        print(f"archived the previous split and its results to {archive}")

    table = table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), type=pa.int64()))
    bounds = shard_bounds(table.num_rows, count)
    run.shards_dir.mkdir(parents=True, exist_ok=True)
    folder = os.fspath(run.shards_dir)  # names as strings: pathlib per shard cost more than the rest
    with Batch() as batch:  # every shard durable before the config that says they exist
        for index, (start, stop) in enumerate(bounds):
            batch.write(os.path.join(folder, SHARD_FILE.format(index)),
                        functools.partial(_parquet_bytes, table.slice(start, stop - start)))
    config = {
        "version": CONFIG_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "manifest": wanted,
        "shards": {"count": count, "sizes": [stop - start for start, stop in bounds]},
    }
    run.save_config(config)  # written last: a run with a config has all its shards
    return SplitResult(run, table.num_rows, config["shards"]["sizes"], reused=False)


def _refuse_live_tasks(run: RunDir) -> None:
    """A task of the old split still writing (or queued to) would write old shards' results into the new
    split, and its job records would map new shard numbers to old jobs: refuse until they are over."""
    from vidcap.results import live_writers

    busy = live_writers(run)
    if busy:
        raise UserError(f"{run.root}: tasks of the current split are still writing ({'; '.join(busy[:3])}"
                        f"{' ...' if len(busy) > 3 else ''}); stop them or let them finish before --force")
    slurm = sorted({job for shard, job in run.latest_jobs().items() if "_" in job or job.isdigit()})
    if slurm:
        from vidcap.scheduler.slurm import job_states
        from vidcap.scheduler.slurm_states import UNKNOWN, is_live

        states = job_states(slurm)
        live = [f"{job} ({state.lower()})" for job, state in states.items() if is_live(state) or state == UNKNOWN]
        if live:
            raise UserError(f"{run.root}: Slurm jobs of the current split are still queued or running, or Slurm "
                            f"does not answer about them: {', '.join(live[:5])}{' ...' if len(live) > 5 else ''}; "
                            f"scancel them or let them end before --force")


def _parquet_bytes(table: pa.Table) -> pa.Buffer:
    """A shard's Parquet file in memory (writing it to a path through pyarrow's file layer cost twice as much)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue()


def _archive_run(run: RunDir) -> Path:
    """Move the old split, results, markers, stats and job records aside: nothing a user paid for is deleted."""
    archive = run.previous_dir / time.strftime("%Y%m%d-%H%M%S")
    archive.mkdir(parents=True, exist_ok=True)
    for path in (run.config_path, run.shards_dir, run.results_dir, run.done_dir, run.stats_dir, run.jobs_path,
                 run.status_cache_path):
        if path.exists():
            shutil.move(str(path), str(archive / path.name))
    return archive


def load_shard(run: RunDir, index: int) -> pa.Table:
    path = run.shard_path(index)
    if not path.is_file():
        raise UserError(f"{run.root}: no shard {index} (the run has {run.num_shards} shards: 0..{run.num_shards - 1})")
    return pq.read_table(path)
