"""Benchmark: the local worker pool, 2 workers against 1, in the same run.

Two engines:
* noop with a latency per batch: an engine whose cost is not this machine's CPU (a GPU, an API), the case the
  pool is for. Target: 2 workers >= 1.7x the videos/s of 1 worker on this 2-core machine.
* the tiny Hugging Face model: CPU-bound, so 2 workers on 2 shared cores show what the cores allow.

Each figure is the pool's whole wall time (worker start-up and model loading included), for the same
shards, split afresh for each measurement.

    .venv/bin/python bench/workers.py [--videos 96] [--rows-per-shard 8] [--latency 1.0] [--skip-tiny]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from vidcap.engines.hf_settings import HFSettings  # noqa: E402
from vidcap.engines.noop import NoopSettings  # noqa: E402
from vidcap.tasks.caption import CaptionSettings  # noqa: E402
from vidcap.tasks.spec import SourceSettings, TaskSpec, freeze_spec  # noqa: E402
from vidcap.manifest.split import split  # noqa: E402
from vidcap.results import read_results  # noqa: E402
from vidcap.run import RunDir  # noqa: E402
from vidcap.scheduler.workers import plan_workers, run_pool  # noqa: E402
from vidcap.fixtures.synth import make_video  # noqa: E402
from vidcap.fixtures.tiny_models import make_tiny_model  # noqa: E402


def measure(work: Path, name: str, engine: NoopSettings | HFSettings, workers: int, rows_per_shard: int,
            batch: int, readers: int) -> float:
    """videos/s of a pool of `workers` over the whole manifest."""
    run = RunDir.at(work / f"run-{name}-{workers}")
    shutil.rmtree(run.root, ignore_errors=True)
    split(work / "m.csv", run, rows_per_shard=rows_per_shard)
    freeze_spec(run, TaskSpec(task="caption", settings=CaptionSettings(prompt="Describe the video.", num_frames=3,
                                                                        resize=64),
                              engine="noop" if isinstance(engine, NoopSettings) else "hf", engine_settings=engine,
                              batch_size=batch, source=SourceSettings(readers=readers, ahead=4 * batch)))
    started = time.perf_counter()
    outcomes = run_pool(run, run.unfinished_shards(), plan_workers(workers, 1, [], on_cpu=True), progress=False)
    wall = time.perf_counter() - started
    assert all(o.finished for o in outcomes), "a shard did not finish"
    rows = sum(read_results(run, i).num_rows for i in range(run.num_shards))
    videos = len((work / "m.csv").read_text().splitlines()) - 1
    assert rows == videos, (rows, videos)
    print(f"  {name:<5} {workers} worker(s): {videos} videos in {wall:6.2f} s = {videos / wall:6.2f} videos/s",
          flush=True)
    return videos / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--rows-per-shard", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--readers", type=int, default=0, help="frame-reading processes per worker")
    parser.add_argument("--latency", type=float, default=1.0, help="noop engine: seconds per batch")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-workers-"))
    names = []
    for i in range(args.videos):
        make_video(work / f"v{i:03d}.mp4", seconds=0.5, fps=12, width=160, height=96, seed=i)
        names.append(f"v{i:03d}.mp4")
    (work / "m.csv").write_text("path\n" + "\n".join(names) + "\n")
    print(f"{args.videos} videos, {args.rows_per_shard} per shard, batch {args.batch_size}, readers "
          f"{args.readers}, {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f}), "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")

    noop = NoopSettings(latency_s=args.latency)
    print(f"noop engine, {args.latency} s per batch:")
    one = measure(work, "noop", noop, 1, args.rows_per_shard, args.batch_size, args.readers)
    two = measure(work, "noop", noop, 2, args.rows_per_shard, args.batch_size, args.readers)
    print(f"  ratio 2 workers / 1 worker: {two / one:.2f}x (target >= 1.7x)")

    if not args.skip_tiny:
        model = make_tiny_model(work / "tiny", family="llava")
        tiny = HFSettings(model=str(model), max_new_tokens=32, device="cpu")
        print("tiny LLaVA model on the CPU, 32 new tokens:")
        one = measure(work, "tiny", tiny, 1, args.rows_per_shard, args.batch_size, args.readers)
        two = measure(work, "tiny", tiny, 2, args.rows_per_shard, args.batch_size, args.readers)
        print(f"  ratio 2 workers / 1 worker: {two / one:.2f}x (CPU-bound: the 2 cores are shared)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
