"""Benchmark: `vidcap split` of a 100,000-row manifest into 100,000 shards.

Ours: vidcap.manifest.split.split (each shard's Parquet built in memory and written in a pool of
threads, made durable by one syncfs of the file system (vidcap.durable.Batch), renamed into place, then
the config). Baseline, in the same run on the same manifest: the code
path before (each shard written by pyarrow to a temporary path and renamed, one after the other, and never
fsynced, so not even durable). Both runs start from a fresh run folder.

    .venv/bin/python bench/split_scale.py                 # 100,000 shards
    .venv/bin/python bench/split_scale.py --shards 20000  # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidcap.manifest.io import read_manifest
from vidcap.manifest.split import shard_bounds, split
from vidcap.run import ROW_COLUMN, RunDir


def old_split(manifest: Path, run: RunDir, shards: int) -> None:
    table = read_manifest(manifest)
    table = table.append_column(ROW_COLUMN, pa.array(range(table.num_rows), type=pa.int64()))
    run.shards_dir.mkdir(parents=True, exist_ok=True)
    for index, (start, stop) in enumerate(shard_bounds(table.num_rows, shards)):
        path = run.shard_path(index)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table.slice(start, stop - start), tmp)
        os.replace(tmp, path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=100_000)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vidcap-split-bench-"))
    try:
        manifest = root / "m.csv"
        manifest.write_text("path,caption_hint\n" + "".join(f"videos/{i:07d}.mp4,clip {i}\n" for i in range(args.shards)))
        print(f"{args.shards} rows into {args.shards} shards; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs")
        t = time.perf_counter()
        old_split(manifest, RunDir.at(root / "old"), args.shards)
        old = time.perf_counter() - t
        t = time.perf_counter()
        split(manifest, RunDir.at(root / "new"), shards=args.shards)
        new = time.perf_counter() - t
        assert pq.read_table(RunDir.at(root / "new").shard_path(args.shards - 1)).num_rows == 1
        print(f"old code path (serial, not durable)  {old:7.1f} s  ({old / args.shards * 1e6:.0f} us/shard)")
        print(f"split (threads, durable: syncfs)    {new:7.1f} s  ({new / args.shards * 1e6:.0f} us/shard)")
        print(f"speed-up: {old / new:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
