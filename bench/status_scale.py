"""Benchmark: `vidcap status` on a run of 100,000 one-row shards, half of them done.

The run is built directly (a real config from `vidcap submit --prepare-only`, then 100,000 shards in it):
each done shard has a completion marker with its counts, a compacted results file and a stats file, as a
finished shard has; the others have nothing yet. Timed: `run_status` + `format_status` (what `vidcap
status` does), cold (first call: every marker read), warm just after a shard finished (every marker
statted, none read) and warm (the marker cache, the done folder unchanged: no marker statted). Baseline: the old code
path (per shard: read the results, the stats twice, test the marker), timed on every shard of a run of
--sample shards built the same way, and scaled linearly to the big run. Not timed on a sample of the big
run: there each shard's read lists a folder of 100,000 files, which would inflate the baseline many times.

    .venv/bin/python bench/status_scale.py                   # 100,000 shards
    .venv/bin/python bench/status_scale.py --shards 20000    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vidcap.results import read_results, result_counts, result_rows
from vidcap.run import RunDir
from vidcap.status import format_status, run_status

TARGET_S = 2.0


def build(root: Path, shards: int) -> RunDir:
    manifest = root / "m.csv"
    manifest.write_text("path\nv0.mp4\n")
    subprocess.run([sys.executable, "-m", "vidcap", "submit", str(manifest), "--run", str(root / "run"),
                    "--engine", "noop", "--shards", "1", "--prepare-only"], check=True, capture_output=True)
    run = RunDir.at(root / "run")
    config = run.load_config()
    config["shards"] = {"count": shards, "sizes": [1] * shards}
    run.save_config(config)
    for folder in (run.results_dir, run.done_dir, run.stats_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rows = result_rows([{"key": "v0.mp4", "status": "ok", "text": "a caption", "seconds": 0.5}])
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink)
    parquet = sink.getvalue().to_pybytes()
    now = time.time()
    for index in range(shards // 2):
        name = f"shard-{index:05d}"
        (run.results_dir / f"{name}.upto-0000.parquet").write_bytes(parquet)
        started = now - 3600 + index * 0.01
        stats = {"shard": index, "started_at": started, "updated_at": started + 2, "seconds": 2.0, "rows_ok": 1,
                 "rows_error": 0, "finished": True, "videos_per_s": 0.5}
        (run.stats_dir / f"{name}.json").write_text(json.dumps(stats))
        marker = {"rows": 1, "finished_at": started + 2, "started_at": started, "processed": 1,
                  **result_counts(rows)} if index < 2 else None
        (run.done_dir / name).write_text(json.dumps(marker or {"rows": 1, "finished_at": started + 2,
                                                              "started_at": started, "processed": 1, "ok": 1,
                                                              "error": 0, "spent": {}}))
    return run


def settle(run: RunDir) -> None:
    """Wait until the done folder last changed over 2 s ago (vidcap.status._DoneCache.SETTLED_NS)."""
    wait = os.stat(run.done_dir).st_mtime + 2.1 - time.time()
    if wait > 0:
        time.sleep(wait)


def old_status(run: RunDir, shards: list[int]) -> None:
    """The code path before: per shard read the results, the stats (twice: state and rate), the marker."""
    from vidcap.manifest.resolve import best_per_key

    for index in shards:
        best_per_key(read_results(run, index), key="key")
        run.read_stats(index)
        run.is_done(index)
    for index in shards:
        run.read_stats(index)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", type=int, default=100_000)
    p.add_argument("--sample", type=int, default=2_000, help="shards the old code path is timed on")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="vidcap-status-bench-"))
    try:
        t = time.perf_counter()
        run = build(root, args.shards)
        print(f"built a run of {args.shards} shards ({args.shards // 2} done) in {time.perf_counter() - t:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        timings, cpu = {}, {}
        for label in ("cold", "warm, busy", "warm"):
            if label == "warm, busy":  # a shard finished just now: the done folder changed, every marker is statted
                run.mark_done(0, run.read_done(0))
            if label == "warm":  # nothing finished for a while: the settled listing is trusted, no marker statted
                settle(run)
                run_status(run)
            t, c = time.perf_counter(), time.process_time()
            report = run_status(run)
            text = format_status(run, report)
            timings[label], cpu[label] = time.perf_counter() - t, time.process_time() - c
        for label in ("cli cold", "cli warm"):  # what a user waits for: interpreter start, imports, the table
            if label == "cli cold":
                run.status_cache_path.unlink(missing_ok=True)
                settle(run)
            else:
                subprocess.run([sys.executable, "-m", "vidcap", "status", str(run.root)], check=True,
                               capture_output=True)  # a second look, after a settled listing
            t, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-m", "vidcap", "status", str(run.root)], check=True, capture_output=True)
            timings[label] = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[label] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        assert len(report.done.index) == args.shards // 2 and "ok 50000" in text or args.shards != 100_000
        (root / "small").mkdir()
        small = build(root / "small", args.sample)
        t, c = time.perf_counter(), time.process_time()
        old_status(small, list(range(args.sample)))
        old = (time.perf_counter() - t) * args.shards / args.sample
        old_cpu = (time.process_time() - c) * args.shards / args.sample
        print(f"status, cold (markers read)  {timings['cold']:6.2f} s  (cpu {cpu['cold']:.2f} s)")
        print(f"status, warm, a shard just finished (markers statted)  {timings['warm, busy']:6.2f} s  "
              f"(cpu {cpu['warm, busy']:.2f} s)")
        print(f"status, warm (marker cache)  {timings['warm']:6.2f} s  (cpu {cpu['warm']:.2f} s)   target < {TARGET_S:g} s: "
              f"{'met' if timings['warm'] < TARGET_S else 'NOT met'} (cold: "
              f"{'met' if timings['cold'] < TARGET_S else 'not met'})")
        print(f"`vidcap status` command, cold {timings['cli cold']:6.2f} s (cpu {cpu['cli cold']:.2f} s), warm "
              f"{timings['cli warm']:6.2f} s (cpu {cpu['cli warm']:.2f} s) "
              f"(a fresh process: start-up and imports included; the OS page cache stays warm, it cannot be dropped here)")
        print(f"old code path (a run of {args.sample} shards, scaled linearly)  {old:6.1f} s  (cpu {old_cpu:.1f} s)")
        print(f"load average now {os.getloadavg()[0]:.1f}: on a shared machine the cpu seconds are the steadier figure")
        print(f"speed-up: {old / timings['cold']:.1f}x cold, {old / timings['warm']:.1f}x warm; the command: "
              f"{old / timings['cli cold']:.1f}x cold, {old / timings['cli warm']:.1f}x warm")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
