"""Benchmark: does the prefetch process hide decoding behind the model?

A consumer spends a fixed time per item (time.sleep, like waiting on a GPU) on ITEMS items of 3 frames
from 720p H.264 videos. For each consumer time it runs:
  sequential   Prefetcher(workers=0): read, then consume, one after the other
  prefetch     Prefetcher(workers=1, ahead=8): a worker process reads ahead into shared memory
and prints each wall time next to the sequential sum (decode + consume) and next to max(decode, consume).
Target: prefetch wall within 10% of max(decode, consume). Decode is the readers' own time in that very
run (the sum of Item.seconds), so a machine whose load changes between runs does not skew the ratio.
The prefetch wall includes starting the worker process (its first-item latency is shown apart).

It also times the hand-over alone (a reader that makes 3 x 720p frames without decoding): our
shared-memory ring against pickling the same FrameSet through a multiprocessing Queue.

    .venv/bin/python bench/prefetch.py
    .venv/bin/python bench/prefetch.py --items 64 --consume 0.05 0.2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

from vidcap.frames import FrameSet
from vidcap.prefetch import Prefetcher
from vidcap.fixtures.synth import make_video

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"


def videos(count: int = 4) -> list[str]:
    """Distinct 4 s 1280x720 clips at 30 fps with a 2 s GOP, cached in .cache/bench/."""
    paths = []
    for seed in range(count):
        path = CACHE / f"720p-4s-gop60-seed{seed}.mp4"
        if not path.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".part.mp4")
            make_video(partial, seconds=4, fps=30, width=1280, height=720, gop=60, seed=500 + seed)
            partial.rename(path)
        paths.append(str(path))
    return paths


def run(paths: list[str], workers: int, consume: float) -> tuple[float, float, float]:
    """(wall, first-item latency, seconds the readers spent) for one pass with a consumer."""
    began = time.perf_counter()
    first = 0.0
    read = 0.0
    with Prefetcher(paths, 3, resize=336, workers=workers, ahead=8) as prefetcher:
        for item in prefetcher:
            if item.error:
                raise RuntimeError(f"{item.path}: {item.error}")
            first = first or time.perf_counter() - began
            read += item.seconds
            time.sleep(consume)
    return time.perf_counter() - began, first, read


def made_frames(path: str, num_frames: int, **_: object) -> FrameSet:
    """3 fresh 720p frames and no decoding: what is left to time is the hand-over."""
    frames = [np.full((720, 1280, 3), i, np.uint8) for i in range(num_frames)]
    return FrameSet(frames=frames, indices=list(range(num_frames)), timestamps=[0.0] * num_frames, is_video=True)


def _queue_producer(queue: mp.Queue, count: int) -> None:
    for index in range(count):
        queue.put((index, made_frames("", 3)))
    queue.put(None)


def handover(count: int) -> tuple[float, float]:
    """Seconds per item through our ring and through a pickling Queue (both bounded at 8 ahead)."""
    with Prefetcher(["x"] * count, 3, workers=1, ahead=8, reader=made_frames) as prefetcher:
        items = iter(prefetcher)
        next(items)  # the worker has started
        began = time.perf_counter()
        rest = sum(1 for _ in items)
        ring = (time.perf_counter() - began) / rest
    context = mp.get_context("spawn")
    queue = context.Queue(maxsize=8)
    producer = context.Process(target=_queue_producer, args=(queue, count))
    producer.start()
    queue.get()
    began = time.perf_counter()
    rest = 0
    while queue.get() is not None:
        rest += 1
    pickled = (time.perf_counter() - began) / rest
    producer.join()
    return ring, pickled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--consume", type=float, nargs="+", default=[0.1, 0.2, 0.4],
                        help="consumer seconds per item (default: about 0.5x, 1x and 2x the decode time here)")
    args = parser.parse_args()
    clips = videos()
    paths = [clips[i % len(clips)] for i in range(args.items)]
    run(paths[:4], 0, 0.0)  # warm the page cache and the imports
    print(f"{len(paths)} items, 3 frames each from 4 s 1280x720 H.264 clips, resized to 336; seconds per pass")
    consumes = args.consume
    print(f"{'consume/item':>12} | {'sequential':>10} {'decode':>7} {'consume':>7} {'sum':>6} {'seq/sum':>7} | "
          f"{'prefetch':>8} {'decode':>7} {'consume':>7} {'max':>6} {'startup':>7} {'prefetch/max':>12}")
    for consume in consumes:
        consumed = consume * len(paths)
        sequential, _, read_seq = run(paths, 0, consume)
        wall, first, read = run(paths, 1, consume)
        best = max(read, consumed)
        print(f"{consume * 1000:10.0f}ms | {sequential:10.2f} {read_seq:7.2f} {consumed:7.2f} "
              f"{read_seq + consumed:6.2f} {sequential / (read_seq + consumed):7.3f} | {wall:8.2f} {read:7.2f} "
              f"{consumed:7.2f} {best:6.2f} {first:7.2f} {wall / best:11.3f}x"
              f"{'' if wall <= 1.1 * best else '  (over the 10% target)'}")
    ring, pickled = handover(200)
    print(f"\nhand-over of 3 x 1280x720 frames (8.3 MB) per item: shared-memory ring {ring * 1000:.1f} ms, "
          f"pickled through a Queue {pickled * 1000:.1f} ms ({pickled / ring:.1f}x the ring)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
