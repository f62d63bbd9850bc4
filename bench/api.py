"""Benchmark: API captioning throughput, one request at a time (Open-Sora's script) vs N in flight.

Runs the OpenAI engine against the local fake chat-completions server (tests/openai_server.py) with a
fixed response time, in batches as the worker sends them, and prints videos/s at concurrency 1 and at
--concurrency, and their ratio (target >= 20x at 32). The server runs in a child process so its image
decoding does not share a GIL with the engine. Also printed: the engine process's CPU per video, which
caps what one task can do when the API answers fast (1000 / that many videos/s per core).

The default response time, 1 s, is still well below GPT-4o's (several seconds). At 0.2 s and 32 in
flight the engine and the server need 160 requests/s between them, which a 2-core machine shared with
other work cannot give: the figure then measures the CPU, not the engine (see --latency 0.2).

    .venv/bin/python bench/api.py [--latency 1.0] [--concurrency 32] [--videos 320] [--batch 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from openai_server import FakeOpenAIServer  # noqa: E402
from vidcap.engines.base import Sample  # noqa: E402
from vidcap.engines.openai_api import OpenAIEngine, OpenAISettings  # noqa: E402

KEY = "sk-bench"


def serve(conn: Connection, latency_s: float) -> None:
    """Child process: run the server; on each message, report the most requests in flight since the last."""
    with FakeOpenAIServer(api_key=KEY, latency_s=latency_s) as server:
        conn.send(server.base_url)
        while conn.recv() != "stop":
            conn.send(server.max_in_flight)
            server.max_in_flight = 0


def make_samples(n: int, frames: int, height: int, width: int) -> list[Sample]:
    # smooth random texture: JPEG sizes like real frames (tens of KB), unlike pixel noise (hundreds)
    noise = np.random.default_rng(0).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(noise).resize((width, height), Image.Resampling.BILINEAR))
    return [Sample(key=f"v{i}", prompt="Describe this video.",
                   frames=[np.roll(base, 7 * i + j, axis=1) for j in range(frames)]) for i in range(n)]


def run(server: Connection, base_url: str, concurrency: int, samples: list[Sample], batch: int) -> dict:
    """Caption `samples` in batches; videos/s, engine CPU ms per video, most in flight at the server."""
    engine = OpenAIEngine(OpenAISettings(model="gpt-4o", api_base=base_url, concurrency=concurrency), api_key=KEY)
    try:
        engine.caption(samples[:1])  # connect once, outside the timing
        server.send("reset")
        server.recv()
        began, cpu = time.perf_counter(), time.process_time()
        captions = []
        for start in range(0, len(samples), batch):
            captions += engine.caption(samples[start:start + batch])
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        assert all(c.ok for c in captions), [c.error for c in captions if not c.ok][:3]
        server.send("report")
        return {"videos_per_s": len(samples) / seconds, "cpu_ms": 1000 * cpu / len(samples),
                "max_in_flight": server.recv(), "retries": engine.stats()["retries"], "videos": len(samples)}
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=1.0, help="server seconds per answer")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--videos", type=int, default=320, help="videos at --concurrency")
    parser.add_argument("--baseline-videos", type=int, default=10, help="videos at concurrency 1")
    parser.add_argument("--batch", type=int, default=64, help="samples per caption() call, as the worker sends")
    parser.add_argument("--frames", type=int, default=3)
    parser.add_argument("--size", default="360x640", help="frame HxW before the engine's resize")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child, args.latency), daemon=True)
    server.start()
    base_url = parent.recv()
    try:
        samples = make_samples(max(args.videos, args.baseline_videos), args.frames, height, width)
        one = run(parent, base_url, 1, samples[:args.baseline_videos], args.batch)
        many = run(parent, base_url, args.concurrency, samples[:args.videos], args.batch)
    finally:
        parent.send("stop")
        server.join(timeout=10)

    print(f"server response time {args.latency:g} s, {args.frames} frames of {width}x{height}, "
          f"batches of {args.batch}")
    for concurrency, r in ((1, one), (args.concurrency, many)):
        print(f"concurrency {concurrency:2d}: {r['videos_per_s']:8.2f} videos/s  ({r['videos']} videos, most in "
              f"flight at the server {r['max_in_flight']}, retries {r['retries']}, engine CPU "
              f"{r['cpu_ms']:.1f} ms/video)")
    print(f"ratio: {many['videos_per_s'] / one['videos_per_s']:.1f}x  (target >= 20x)")


if __name__ == "__main__":
    main()
