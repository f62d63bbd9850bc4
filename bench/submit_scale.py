"""Benchmark: `vidcap submit --executor slurm` of a run of 100,000 shards on the test cluster, held.

The cluster's MaxArraySize (1001 on the test cluster) cuts the run into arrays; every array is submitted
held (`--sbatch hold=true`), timed from the call to the recorded job ids, then cancelled by its own ids
(never anyone else's jobs). Baseline in the same run: the same submission through submitit's plain
`map_array` path per array without vidcap (what a user would write), on the first --sample shards and
scaled. Figures: seconds, shards per second, and where the time goes (submitit pickles one file per task).

    .venv/bin/python bench/submit_scale.py                 # 100,000 shards
    .venv/bin/python bench/submit_scale.py --shards 5000   # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidcap.cli import main as vidcap
from vidcap.run import RunDir

TARGET_S = 30.0


def cancel(job_ids: list[str]) -> None:
    arrays = sorted({j.split("_")[0] for j in job_ids})
    for start in range(0, len(arrays), 50):
        subprocess.run(["scancel", *arrays[start:start + 50]], timeout=60, check=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=100_000)
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vidcap-submit-bench-", dir=os.environ.get("VIDCAP_BENCH_DIR")))
    run = RunDir.at(root / "run")
    ids: list[str] = []
    try:
        manifest = root / "m.csv"
        manifest.write_text("path\n" + "".join(f"videos/{i:07d}.mp4\n" for i in range(args.shards)))
        t = time.perf_counter()
        assert vidcap(["submit", str(manifest), "--run", str(run.root), "--engine", "noop", "--shards",
                       str(args.shards), "--prepare-only"]) == 0
        print(f"prepared {args.shards} shards in {time.perf_counter() - t:.1f} s; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        t = time.perf_counter()
        code = vidcap(["submit", str(manifest), "--run", str(run.root), "--engine", "noop", "--executor", "slurm",
                       "--sbatch", "hold=true", "--time", "5"])
        took = time.perf_counter() - t
        ids = list(run.latest_jobs().values())
        arrays = len({j.split("_")[0] for j in ids})
        print(f"submit: {took:.1f} s for {len(ids)} shard tasks in {arrays} arrays "
              f"({len(ids) / took:.0f} tasks/s; exit {code}); target < {TARGET_S:g} s: "
              f"{'met' if took < TARGET_S and len(ids) == args.shards else 'NOT met'}")
        pickles = sum(1 for _ in run.logs_dir.rglob("*.pkl"))
        print(f"files submitit wrote in the logs folder: {pickles} pickles")
    finally:
        if ids:
            t = time.perf_counter()
            cancel(ids)
            print(f"cancelled our {len({j.split('_')[0] for j in ids})} arrays in {time.perf_counter() - t:.1f} s")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
