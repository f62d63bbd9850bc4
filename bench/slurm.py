"""Benchmark: what the Slurm layer costs: a 100-shard run with the no-op engine, submit to all done.

Three runs of the same work, measured here, one after the other:
  baseline  `vidcap submit --executor local`: every shard in one process, no scheduler (the "no Slurm" time)
  slurm     `vidcap submit --executor slurm`: one array task per shard, through submitit; the clock runs
            from the start of the command to the moment the last completion marker exists
  bare      the same number of array tasks running `/bin/true` with plain sbatch: what Slurm alone costs

Prints wall times, the ratio slurm / baseline, and the overhead per array task three ways: (wall - ideal) /
tasks for the parallelism the cluster allows (ideal = the baseline's worker time / tasks at once), Slurm's
elapsed time per task (sacct) minus the worker's own time (stats files), and CPU seconds per task (sacct
TotalCPU) against the baseline's per shard. The test cluster must be up (`make cluster-up`).

    .venv/bin/python bench/slurm.py [--shards 100] [--videos-per-shard 1] [--array-parallelism P] [--readers R]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from worker_helpers import make_clips  # noqa: E402

from vidcap.run import RunDir  # noqa: E402

COMMON = ["--engine", "noop", "--batch-size", "4", "--resize", "0", "--num-frames", "2"]


def vidcap(*args: object) -> str:
    proc = subprocess.run([sys.executable, "-m", "vidcap", *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"vidcap {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def wait_markers(run: RunDir, shards: int, deadline_s: float) -> float:
    """Poll (every 50 ms) until every completion marker exists; the time.time() it was seen."""
    end = time.monotonic() + deadline_s
    pending = set(range(shards))
    while pending:
        pending = {i for i in pending if not run.is_done(i)}
        if not pending:
            break
        if time.monotonic() > end:
            sys.exit(f"gave up: {len(pending)} shards not done after {deadline_s} s (`vidcap status {run.root}`)")
        time.sleep(0.05)
    return time.time()


def sacct_tasks(arrays: list[str], count: int, deadline_s: float = 60) -> list[dict[str, str]]:
    """sacct's record of each array task (waits for all `count` to have an end: sacct lags a little)."""
    end = time.monotonic() + deadline_s
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-j", ",".join(arrays),  # not -X: it drops TotalCPU
                              "-o", "JobID,State,ElapsedRaw,Start,End,TotalCPU"],
                             capture_output=True, text=True).stdout
        rows = [dict(zip(["id", "state", "elapsed", "start", "end", "cpu"], line.split("|")))
                for line in out.splitlines() if line.strip()]
        rows = [r for r in rows if re.fullmatch(r"\d+_\d+", r["id"]) or r["id"] in arrays]  # not its steps
        if len(rows) >= count and all(r["end"] not in ("", "Unknown") for r in rows):
            return rows
        if time.monotonic() > end:
            sys.exit(f"sacct has {len(rows)} of {count} finished tasks after {deadline_s} s")
        time.sleep(1)


def cpu_seconds(text: str) -> float:
    """sacct TotalCPU: [DD-][HH:]MM:SS[.mmm]."""
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end first at a tie
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def run_bare_array(work: Path, tasks: int, parallelism: int | None) -> tuple[float, list[dict[str, str]]]:
    """`/bin/true` in `tasks` array tasks: sbatch to the last task's end, as sacct records it."""
    spec = f"0-{tasks - 1}" + (f"%{parallelism}" if parallelism else "")
    start = time.time()
    job = subprocess.run(["sbatch", "--parsable", f"--array={spec}", "--time=5", "--mem=100M", "--cpus-per-task=1",
                          f"--output={work}/bare-%a.out", "--wrap", "true"],
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        time.sleep(0.05)
    seen = time.time()
    rows = sacct_tasks([job], tasks)
    return seen - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=100)
    parser.add_argument("--videos-per-shard", type=int, default=1)
    parser.add_argument("--array-parallelism", type=int, help="the %%P throttle (default: none, the node decides)")
    parser.add_argument("--readers", type=int, default=1, help="frame-reading processes per task (0: in the worker)")
    parser.add_argument("--deadline", type=float, default=900, help="give up after this many seconds")
    args = parser.parse_args()
    shards = args.shards
    load0 = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-slurm-"))
    manifest = make_clips(work / "videos", shards * args.videos_per_shard)
    common = [*COMMON, "--readers", args.readers]
    node = subprocess.run(["scontrol", "show", "node"], capture_output=True, text=True).stdout
    slots = int(re.search(r"CPUTot=(\d+)", node).group(1))
    print(f"{shards} shards x {args.videos_per_shard} video(s), no-op engine; node: {slots} Slurm CPUs on "
          f"{os.cpu_count()} real cores; 1 CPU per task; throttle {args.array_parallelism or 'none'}; "
          f"{args.readers} reader process(es)")

    # -- baseline: one process, no scheduler
    local = RunDir.at(work / "local")
    start = time.time()
    vidcap("submit", manifest, "--run", local.root, "--shards", shards, *common, "--executor", "local")
    local_wall = time.time() - start
    local_stats = [local.read_stats(i) for i in range(shards)]
    local_shard_s = statistics.mean(s["seconds"] for s in local_stats)
    local_cpu = os.times()  # children's CPU time: the vidcap process above
    local_cpu_s = local_cpu.children_user + local_cpu.children_system

    # -- slurm: the real CLI, one array task per shard
    run = RunDir.at(work / "slurm")
    throttle = ["--array-parallelism", args.array_parallelism] if args.array_parallelism else []
    start = time.time()
    out = vidcap("submit", manifest, "--run", run.root, "--shards", shards, *common, "--executor", "slurm",
                 "--time", 10, "--cpus-per-task", 1, "--mem-gb", 0.5, *throttle)
    submitted = time.time()
    done_at = wait_markers(run, shards, args.deadline)
    slurm_wall = done_at - start
    jobs = [json.loads(line)["job_id"] for line in run.jobs_path.read_text().splitlines()]
    arrays = sorted({j.split("_")[0] for j in jobs})
    tasks = sacct_tasks(arrays, shards)
    states = {t["state"] for t in tasks}
    stats = [run.read_stats(i) for i in range(shards)]
    worker_s = [s["seconds"] for s in stats]
    first_start = min(s["started_at"] for s in stats)
    parallelism = min(args.array_parallelism or slots, slots)  # 1 CPU a task
    worker_at_once = most_at_once([(s["started_at"], s["updated_at"]) for s in stats])  # float times, exact
    elapsed = [int(t["elapsed"]) for t in tasks]
    cpu = [cpu_seconds(t["cpu"]) for t in tasks]
    ideal = local_shard_s * shards / parallelism  # the worker's own time, uncontended, spread over the slots

    # -- bare Slurm: /bin/true tasks
    bare_wall, bare_tasks = run_bare_array(work, shards, args.array_parallelism)
    bare_elapsed = [int(t["elapsed"]) for t in bare_tasks]

    print(f"\nbaseline (local executor, one process)  {local_wall:7.1f} s for {shards} shards: "
          f"{local_wall / shards * 1000:.0f} ms a shard wall, worker {local_shard_s * 1000:.0f} ms a shard, "
          f"{local_cpu_s / shards * 1000:.0f} ms CPU a shard")
    print(f"slurm (vidcap submit --executor slurm)    {slurm_wall:7.1f} s submit to all {shards} markers "
          f"(the submit command took {submitted - start:.2f} s; first worker started "
          f"{first_start - start:.1f} s after it began); {len(arrays)} array(s), states {sorted(states)}")
    print(f"bare Slurm (/bin/true array tasks)       {bare_wall:7.1f} s sbatch to the last task gone, "
          f"sacct elapsed {statistics.mean(bare_elapsed):.2f} s a task (whole seconds)")
    outside = statistics.mean(elapsed) - statistics.mean(worker_s)
    print(f"\nparallelism: {parallelism} tasks at once allowed ({slots} slots, throttle "
          f"{args.array_parallelism or 'none'}); workers seen running at once: {worker_at_once}; "
          f"{os.cpu_count()} real cores")
    print(f"per task: worker (run_shard, stats files) {statistics.mean(worker_s):.2f} s mean "
          f"(locally {local_shard_s:.2f} s); Slurm elapsed (sacct, 1 s steps) {statistics.mean(elapsed):.2f} s "
          f"mean -> {outside:.2f} s a task outside the worker (python + submitit start, imports, exit), "
          f"both under contention")
    print(f"CPU per task: {statistics.mean(cpu):.2f} s (sacct TotalCPU of the task) vs {local_cpu_s / shards:.2f} s "
          f"a shard in one process -> {statistics.mean(cpu) - local_cpu_s / shards:.2f} CPU s of overhead a task; "
          f"all tasks need {sum(cpu) / (os.cpu_count() or 1):.1f} s of the {os.cpu_count()} cores at the least")
    print(f"overhead per array task (wall): (slurm {slurm_wall:.1f} s - baseline {local_wall:.1f} s) / {shards} = "
          f"{(slurm_wall - local_wall) / shards * 1000:.0f} ms;  against the slots: (slurm {slurm_wall:.1f} s - "
          f"ideal {ideal:.1f} s [baseline worker time / {parallelism} at once]) / {shards} = "
          f"{(slurm_wall - ideal) / shards * 1000:.0f} ms")
    print(f"\nratio slurm / baseline wall: {slurm_wall / local_wall:.2f}x  "
          f"(bare Slurm / baseline: {bare_wall / local_wall:.2f}x; slurm / bare Slurm: {slurm_wall / bare_wall:.2f}x)")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (at the start {load0:.1f}): other work on this "
          f"machine skews every figure; compare the ratios of one run")
    print(f"folders kept in {work}")


if __name__ == "__main__":
    main()
