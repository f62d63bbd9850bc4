"""Benchmark: tags from captions through the API engine, and `vidcap tags-report` on millions of rows.

1. API tags/s: the OpenAI-compatible engine draws tags for N captions from the test server
   (tests/openai_server.py in a child process, answering each caption's known tag list after a fixed response
   time, as a real API would), in batches as the worker sends them, and the tag task parses each answer;
   --concurrency 32 against one request at a time (Open-Sora's loop). Target: >= 20x. Every row's tags are
   checked to be its own caption's.
2. tags-report: counts the tags of a synthetic output file of 1M and 10M rows (Parquet list<string>, and
   CSV comma-separated text), each in its own subprocess so its peak RSS is its own, against a baseline
   that loads the whole column into Python lists (what a pandas/`Counter` script does) at 1M rows.
   Streaming means the 10M-row peak stays near the 1M-row peak.

    .venv/bin/python bench/tags.py                       # both parts, 10M rows
    .venv/bin/python bench/tags.py --rows 1000000 --skip-api
    .venv/bin/python bench/tags.py --skip-report --latency 1.0 --concurrency 32 --captions 320
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TARGET_API_SPEEDUP = 20.0
VOCAB_SIZE = 3000
CHUNK_ROWS = 1_000_000


# -- data -------------------------------------------------------------------------------------------
def vocabulary(size: int = VOCAB_SIZE) -> pa.Array:
    stems = ["car", "dog", "woman", "tree", "street lamp", "bicycle", "river", "kitchen", "cloud", "boat"]
    return pa.array([f"{stems[i % len(stems)]} {i}" if i >= len(stems) else stems[i] for i in range(size)])


def make_output(path: Path, rows: int, fmt: str, seed: int = 0) -> None:
    """A `vidcap tag` output: path, text, objects (Zipf-distributed tags, 0-6 per row), status."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    schema = pa.schema([("path", pa.string()), ("text", pa.string()),
                        ("objects", pa.list_(pa.string()) if fmt == "parquet" else pa.string()),
                        ("status", pa.string())])
    writer = pq.ParquetWriter(path, schema) if fmt == "parquet" else pacsv.CSVWriter(str(path), schema)
    try:
        for start in range(0, rows, CHUNK_ROWS):
            n = min(CHUNK_ROWS, rows - start)
            counts = rng.integers(0, 7, n)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
            picks = np.minimum(rng.zipf(1.3, int(offsets[-1])) - 1, VOCAB_SIZE - 1)
            tags = pa.ListArray.from_arrays(pa.array(offsets), pc.take(vocab, pa.array(picks)))
            ok = rng.random(n) > 0.02
            status = pa.array(np.where(ok, "ok", "error"))
            tags = pc.if_else(pa.array(ok), tags, pa.nulls(n, tags.type))
            if fmt == "csv":
                tags = pc.binary_join(tags, ", ")
            ids = pa.array(np.arange(start, start + n)).cast(pa.string())
            table = pa.table([pc.binary_join_element_wise("/data/v", ids, ".mp4", ""),
                              pa.array(np.full(n, "A red car drives along a wet road at night.")), tags, status],
                             schema=schema)
            writer.write_table(table)
    finally:
        writer.close()


# -- API ------------------------------------------------------------------------------------------
API_KEY = "sk-bench-tags"
WORDS = "red car wet road night woman blue coat dog park children bicycles dirt path trees cat rain".split()


def serve(conn, latency_s: float) -> None:  # noqa: ANN001 - a multiprocessing Connection
    """Child process: the test server; on each message, report the most requests in flight since the last."""
    from openai_server import FakeOpenAIServer

    with FakeOpenAIServer(api_key=API_KEY, latency_s=latency_s) as server:
        conn.send(server.base_url)
        while conn.recv() != "stop":
            conn.send(server.max_in_flight)
            server.max_in_flight = 0


def api_run(server, base_url: str, concurrency: int, captions: list[str], batch: int) -> dict:  # noqa: ANN001
    from openai_server import tags_for

    from vidcap.engines.base import Sample
    from vidcap.engines.openai_api import OpenAIEngine, OpenAISettings
    from vidcap.tasks.tag import TagSettings, TagTask

    task = TagTask(TagSettings(keys=("objects",)))
    engine = OpenAIEngine(OpenAISettings(model="gpt-4o", api_base=base_url, concurrency=concurrency,
                                         max_new_tokens=128), api_key=API_KEY)
    samples = [Sample(key=f"c{i}", text=text) for i, text in enumerate(captions)]
    for sample in samples:
        sample.prompt = task.prompt_for(sample)
    try:
        engine.run(samples[:1])  # connect once, outside the timing
        server.send("reset")
        server.recv()
        began = time.perf_counter()
        tags = 0
        for start in range(0, len(samples), batch):
            chunk = samples[start:start + batch]
            for sample, result in zip(chunk, engine.run(chunk)):
                assert result.ok, result.error
                values = task.values(sample, result)
                assert values["objects"] == tags_for(sample.text), (sample.key, values)
                tags += len(values["objects"])
        seconds = time.perf_counter() - began
        server.send("report")
        return {"rows_per_s": len(samples) / seconds, "tags_per_s": tags / seconds, "rows": len(samples),
                "max_in_flight": server.recv(), "retries": engine.figures()["retries"]}
    finally:
        engine.close()


def bench_api(count: int, baseline: int, latency: float, concurrency: int, batch: int) -> None:
    import multiprocessing as mp

    rng = np.random.default_rng(1)
    captions = [" ".join(rng.choice(WORDS, 8)) + f" scene{i}" for i in range(max(count, baseline))]
    parent, child_end = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child_end, latency), daemon=True)
    server.start()
    base_url = parent.recv()
    try:
        one = api_run(parent, base_url, 1, captions[:baseline], batch)
        many = api_run(parent, base_url, concurrency, captions[:count], batch)
    finally:
        parent.send("stop")
        server.join(timeout=10)
    print(f"\n== API tags: server response time {latency:g} s, batches of {batch}, each row's tags checked")
    for c, r in ((1, one), (concurrency, many)):
        print(f"  concurrency {c:2d}: {r['tags_per_s']:8.1f} tags/s  {r['rows_per_s']:7.2f} captions/s  "
              f"({r['rows']} captions, most in flight at the server {r['max_in_flight']}, retries {r['retries']})")
    print(f"  ratio: {many['tags_per_s'] / one['tags_per_s']:.1f}x tags/s  (target >= {TARGET_API_SPEEDUP:g}x)")


# -- children (own process, own peak RSS) ---------------------------------------------------------
def child(mode: str, path: str) -> None:
    started = time.perf_counter()
    if mode == "stream":
        from vidcap.tags.report import count_tags

        result = count_tags(path, "objects")
        distinct, total = len(result.counts), result.total_tags
    else:  # the whole column as Python lists, then a Counter
        column = (pq.read_table(path, columns=["objects", "status"]) if path.endswith(".parquet") else
                  pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(include_columns=["objects", "status"])))
        counts: Counter[str] = Counter()
        for tags, status in zip(column["objects"].to_pylist(), column["status"].to_pylist()):
            if status == "ok" and tags:
                counts.update(tags if isinstance(tags, list) else [t.strip() for t in tags.split(",")])
        distinct, total = len(counts), sum(counts.values())
    seconds = time.perf_counter() - started
    peak_mb = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "distinct": distinct, "total": total}))


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: its own since exec; ru_maxrss would carry the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(mode: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_report(rows: int, folder: Path) -> None:
    print(f"\n== tags-report: streaming count vs whole column in Python ({rows:,} rows)")
    small = min(1_000_000, rows)
    for fmt in ("parquet", "csv"):
        results = {}
        for n in sorted({small, rows}):
            path = folder / f"out_{n}.{fmt}"
            began = time.perf_counter()
            make_output(path, n, fmt)
            print(f"  made {path.name}: {path.stat().st_size / 1e6:,.0f} MB in {time.perf_counter() - began:.1f} s")
            results[n] = run_child("stream", path)
            print(f"  {fmt:7s} {n:>11,} rows  streaming: {results[n]['seconds']:6.2f} s  "
                  f"peak {results[n]['peak_mb']:7.0f} MB  ({results[n]['total']:,} tags, "
                  f"{results[n]['distinct']:,} distinct, {n / results[n]['seconds']:,.0f} rows/s)")
        naive = run_child("naive", folder / f"out_{small}.{fmt}")
        assert naive["total"] == results[small]["total"] and naive["distinct"] == results[small]["distinct"]
        print(f"  {fmt:7s} {small:>11,} rows  baseline:  {naive['seconds']:6.2f} s  peak {naive['peak_mb']:7.0f} MB")
        print(f"  {fmt}: baseline/streaming at {small:,} rows: time {naive['seconds'] / results[small]['seconds']:.1f}x, "
              f"peak memory {naive['peak_mb'] / results[small]['peak_mb']:.1f}x; streaming peak at "
              f"{rows:,} / at {small:,} rows: {results[rows]['peak_mb'] / results[small]['peak_mb']:.2f}x")
        for n in results:
            (folder / f"out_{n}.{fmt}").unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the big tags-report file")
    parser.add_argument("--captions", type=int, default=320, help="captions sent at --concurrency")
    parser.add_argument("--baseline-captions", type=int, default=10, help="captions sent one at a time")
    parser.add_argument("--latency", type=float, default=1.0, help="the test server's response time, s (GPT-4o: seconds)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128, help="samples per engine call (the worker's default "
                                                                "for the API is 4 x concurrency)")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-report", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not args.skip_api:
        bench_api(args.captions, args.baseline_captions, args.latency, args.concurrency, args.batch)
    if not args.skip_report:
        with tempfile.TemporaryDirectory(prefix="vidcap-bench-tags-") as folder:
            bench_report(args.rows, Path(folder))


if __name__ == "__main__":
    main()
