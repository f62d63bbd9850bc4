"""Benchmark: `vidcap submit --executor slurm` of a run of 100,000 shards on the test cluster, held.

The cluster's MaxArraySize (1001 on the test cluster) cuts the run into arrays; every array is submitted
held (`--sbatch hold=true`), timed from the call to the recorded job ids, then cancelled by its own ids
(never anyone else's jobs). Baseline in the same run: the same tasks (ShardTask over the run's shards, the
same sbatch options, held) through submitit's plain `executor.batch()` path, one array per MaxArraySize
tasks, as vidcap submitted them before `vidcap.scheduler.slurm_array`: on the first --sample shards, then
scaled to --shards (it pickles one file into one folder per task, so it grows linearly). The baseline
leaves out vidcap's own bookkeeping (jobs.jsonl, config), so the ratio understates the gain. Figures:
seconds, tasks per second, the ratio, and the pickles each way wrote.

Slurm counts every array task against MaxJobCount, cancelled ones too until MinJobAge (300 s) has passed:
the test cluster's is 250,000 (slurm/cluster-up.sh), so two 100,000-shard measurements fit within 5 minutes.

    .venv/bin/python bench/submit_scale.py                 # 100,000 shards
    .venv/bin/python bench/submit_scale.py --shards 5000   # quick
    .venv/bin/python bench/submit_scale.py --run /tmp/r100k  # keeps the prepared run for the next time
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

import submitit

from vidcap.cli import main as vidcap
from vidcap.run import RunDir
from vidcap.scheduler.placement import array_task_target
from vidcap.scheduler.resources import SlurmResources
from vidcap.scheduler.slurm import cluster_max_array_size
from vidcap.scheduler.task import ShardTask

TARGET_S = 30.0


def cancel(job_ids: list[str]) -> None:
    arrays = sorted({j.split("_")[0] for j in job_ids})
    for start in range(0, len(arrays), 50):
        subprocess.run(["scancel", *arrays[start:start + 50]], timeout=60, check=False)


def baseline(run: RunDir, sample: int, folder: Path) -> tuple[float, list[str], int]:
    """submitit's own batch path on shards 0..sample-1, held: seconds, job ids, pickles written."""
    limit = cluster_max_array_size()
    resources = SlurmResources(time_min=5, sbatch={"hold": True})
    executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=resources.max_requeues)
    params = resources.submitit_parameters(f"vidcap-{run.root.name}")
    params["array_parallelism"] = limit
    executor.update_parameters(**params)
    task = ShardTask(array_task_target(1))
    ids: list[str] = []
    t = time.perf_counter()
    try:
        for start in range(0, sample, limit):
            with executor.batch():
                jobs = [executor.submit(task, str(run.root), shard) for shard in range(start, min(start + limit, sample))]
            ids.extend(job.job_id for job in jobs)
        return time.perf_counter() - t, ids, sum(1 for _ in folder.rglob("*.pkl"))
    except BaseException:
        cancel(ids)
        raise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=2000, help="shards the baseline submits (then scaled)")
    p.add_argument("--run", type=Path, help="keep the prepared run here and reuse it next time (splitting "
                                            "100,000 shards is not what this measures)")
    args = p.parse_args()
    root = args.run or Path(tempfile.mkdtemp(prefix="vidcap-submit-bench-", dir=os.environ.get("VIDCAP_BENCH_DIR")))
    run = RunDir.at(root / "run")
    ids: list[str] = []
    base_ids: list[str] = []
    try:
        manifest = root / "m.csv"
        if (run.root / "config.json").exists() and manifest.exists() and run.num_shards == args.shards:
            print(f"reusing the {args.shards} shards prepared in {run.root}")
        else:
            shutil.rmtree(run.root, ignore_errors=True)
            root.mkdir(parents=True, exist_ok=True)
            manifest.write_text("path\n" + "".join(f"videos/{i:07d}.mp4\n" for i in range(args.shards)))
            t = time.perf_counter()
            assert vidcap(["submit", str(manifest), "--run", str(run.root), "--engine", "noop", "--shards",
                           str(args.shards), "--prepare-only"]) == 0
            print(f"prepared {args.shards} shards in {time.perf_counter() - t:.1f} s")
        for left in (run.jobs_path, run.logs_dir, root / "baseline-logs"):  # a previous measurement's
            shutil.rmtree(left, ignore_errors=True) if left.is_dir() else left.unlink(missing_ok=True)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        sample = min(args.sample, args.shards)
        base_s, base_ids, base_pickles = baseline(run, sample, root / "baseline-logs")
        cancel(base_ids)
        scaled = base_s * args.shards / sample
        print(f"baseline (submitit executor.batch, held): {base_s:.1f} s for {sample} tasks "
              f"({sample / base_s:.0f} tasks/s, {base_pickles} pickles); scaled to {args.shards}: {scaled:.0f} s")
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
        print(f"pickles written at submit: {pickles} (one per array); baseline / vidcap: {scaled / took:.1f}x "
              f"faster ({len(ids) / took:.0f} vs {sample / base_s:.0f} tasks/s)")
    finally:
        if ids:
            t = time.perf_counter()
            cancel(ids)
            print(f"cancelled our {len({j.split('_')[0] for j in ids})} arrays in {time.perf_counter() - t:.1f} s")
        if args.run is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
