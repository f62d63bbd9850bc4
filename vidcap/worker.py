"""Run one shard: frames read ahead in another process, captions in batches, every batch made durable.

The loop checks its stop event between batches: on SIGTERM (or a scheduler's stop) it finishes the batch
in flight, writes it, and returns without the completion marker, so a rerun continues where it stopped.
A row that cannot be read becomes an `error` row with the reader's reason, in its own place: captions are
matched to rows by position inside each batch, never shifted by a failure beside them.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from vidcap.engines import Engine, Sample, create_engine
from vidcap.engines.batching import caption_batch
from vidcap.jobconfig import JobConfig, check_engine, load_job
from vidcap.manifest.resolve import best_per_key
from vidcap.manifest.split import load_shard
from vidcap.prefetch import Item, Prefetcher
from vidcap.results import STATUS_ERROR, STATUS_OK, ResultWriter, read_results, result_rows
from vidcap.run import RunDir
from vidcap.signals import stop_on_signals

STATS_EVERY_S = 10.0


@dataclass
class ShardOutcome:
    index: int
    finished: bool  # False: stopped early (signal); a rerun continues
    stats: dict[str, Any] = field(default_factory=dict)


def resolve_paths(values: list[str], job: JobConfig, manifest_path: str) -> list[str]:
    """Relative manifest paths are taken from `--data-root`, else from the manifest's own folder."""
    root = Path(job.data_root) if job.data_root else Path(manifest_path).parent
    return [v if os.path.isabs(v) else str(root / v) for v in values]


def rows_to_do(run: RunDir, index: int, shard: pa.Table, key: str, max_attempts: int) -> tuple[pa.Table, int, int]:
    """Shard rows that still need a caption: no `ok` result yet and fewer than `max_attempts` failures.

    Returns (rows, already ok, given up)."""
    best = best_per_key(read_results(run, index), key="key")
    if best.num_rows == 0:
        return shard, 0, 0
    ok_keys = best.filter(pc.equal(best["status"], STATUS_OK))["key"]
    spent_keys = best.filter(pc.and_(pc.not_equal(best["status"], STATUS_OK),
                                     pc.greater_equal(best["failures"], max_attempts)))["key"]
    done = pc.is_in(shard[key], value_set=ok_keys)
    spent = pc.is_in(shard[key], value_set=spent_keys)
    todo = shard.filter(pc.invert(pc.or_(done, spent)))
    return todo, pc.sum(done).as_py() or 0, pc.sum(spent).as_py() or 0


class _Stats:
    """Figures of one shard attempt, written to RUN/stats/ while it runs and at the end."""

    def __init__(self, run: RunDir, index: int, total: int, done_before: int, given_up: int, todo: int) -> None:
        self.run, self.index = run, index
        self.started = time.time()
        self.data: dict[str, Any] = {
            "shard": index, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": self.started, "rows_total": total, "rows_ok_before": done_before,
            "rows_given_up": given_up, "rows_todo": todo, "rows_ok": 0, "rows_error": 0,
            "prompt_tokens": 0, "generated_tokens": 0, "read_wait_s": 0.0, "model_s": 0.0,
            "batches": 0, "finished": False, "stopped": False,
            "cost_usd": None,  # this attempt's rows; `vidcap status` adds up every attempt's from the results
        }
        self._written = 0.0

    def add_batch(self, rows: list[dict[str, Any]], read_wait: float, model_s: float) -> None:
        d = self.data
        d["batches"] += 1
        d["read_wait_s"] += read_wait
        d["model_s"] += model_s
        for row in rows:
            d["rows_ok" if row["status"] == STATUS_OK else "rows_error"] += 1
            d["prompt_tokens"] += row.get("prompt_tokens") or 0
            d["generated_tokens"] += row.get("generated_tokens") or 0
            if row.get("cost_usd") is not None:
                d["cost_usd"] = (d["cost_usd"] or 0.0) + row["cost_usd"]

    def write(self, engine: Engine | None, force: bool = False, **final: Any) -> dict[str, Any]:
        now = time.time()
        if not force and now - self._written < STATS_EVERY_S:
            return self.data
        d = self.data
        d.update(final)
        d["updated_at"] = now
        d["seconds"] = now - self.started
        processed = d["rows_ok"] + d["rows_error"]
        d["videos_per_s"] = processed / d["seconds"] if d["seconds"] > 0 else 0.0
        if engine is not None:
            d["engine"] = engine.stats()
        self.run.write_stats(self.index, d)
        self._written = now
        return d


def batch_rows(items: list[Item], engine: Engine, prompt: str) -> list[dict[str, Any]]:
    """Caption the readable items of one batch; one result row per item, in the items' order."""
    readable = [i for i in items if i.frames is not None]
    samples = [Sample(key=i.path, frames=i.frames.frames, prompt=prompt, is_video=i.frames.is_video)
               for i in readable]
    started = time.perf_counter()
    captions = caption_batch(engine, samples) if samples else []
    if len(captions) != len(samples):
        raise RuntimeError(f"engine returned {len(captions)} captions for {len(samples)} samples")
    share = (time.perf_counter() - started) / max(1, len(samples))
    by_item = {id(item): caption for item, caption in zip(readable, captions)}
    rows = []
    for item in items:
        caption = by_item.get(id(item))
        if caption is None:
            rows.append({"status": STATUS_ERROR, "error": item.error or "unreadable"})
            continue
        row = {"status": STATUS_ERROR, "error": caption.error} if caption.error else \
            {"status": STATUS_OK, "text": caption.text}
        row.update(seconds=share, prompt_tokens=caption.prompt_tokens, generated_tokens=caption.generated_tokens)
        # engine figures (an API's cost, attempts, latency) on error rows too: a refusal is billed
        row.update({k: v for k, v in caption.extra.items() if isinstance(v, (int, float, str))})
        rows.append(row)
    return rows


def run_shard(
    run: RunDir | str,
    index: int,
    engine: Engine | None = None,
    stop: threading.Event | None = None,
    progress: bool | None = None,
) -> ShardOutcome:
    """Caption every unfinished row of shard `index`; write the completion marker when all are done."""
    run = run if isinstance(run, RunDir) else RunDir.at(run)
    config = run.load_config()
    job = load_job(run)
    key = config["manifest"]["key"]
    shard = load_shard(run, index)
    todo, done_before, given_up = rows_to_do(run, index, shard, key, job.max_attempts)
    stats = _Stats(run, index, shard.num_rows, done_before, given_up, todo.num_rows)
    if todo.num_rows == 0:
        final = stats.write(None, force=True, finished=True)
        run.mark_done(index, {"rows": shard.num_rows, "finished_at": time.time()})
        return ShardOutcome(index, True, final)

    keys = todo[key].cast(pa.string()).to_pylist()
    paths = resolve_paths(todo[job.path_column].cast(pa.string()).to_pylist(), job, config["manifest"]["path"])
    own_engine = engine is None
    own_stop = stop is None
    stop = stop or threading.Event()
    if own_engine:
        engine = create_engine(job.engine)
        check_engine(engine, job)
    assert engine is not None
    if progress is None:
        progress = True
    bar = tqdm(total=len(keys), desc=f"shard {index}", unit="video", disable=not progress,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    stopped = False
    try:
        with (stop_on_signals(stop) if own_stop else _nothing()), ResultWriter(run, index) as writer, \
                Prefetcher(paths, job.num_frames, resize=job.resize, backend=job.backend,
                           ahead=job.ahead, workers=job.readers) as prefetch:
            batches = prefetch.batches(job.batch_size)
            while True:
                if stop.is_set():
                    stopped = True
                    break
                waited = time.perf_counter()
                items = next(batches, None)
                waited = time.perf_counter() - waited
                if items is None:
                    break
                started = time.perf_counter()
                rows = batch_rows(items, engine, job.engine.prompt)
                for item, row in zip(items, rows):
                    row["key"] = keys[item.index]
                writer.append(result_rows(rows))
                stats.add_batch(rows, waited, time.perf_counter() - started)
                stats.write(engine)
                bar.update(len(items))
            if not stopped:
                writer.compact()
        final = stats.write(engine, force=True, finished=not stopped, stopped=stopped)
        if not stopped:
            run.mark_done(index, {"rows": shard.num_rows, "finished_at": time.time()})
        return ShardOutcome(index, not stopped, final)
    finally:
        bar.close()
        if own_engine:
            engine.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def run_shards(run: RunDir, shards: list[int], engine: Engine, stop: threading.Event,
               progress: bool | None = None) -> list[ShardOutcome]:
    """Run shards one after another with one engine; stop at the first one that stopped early."""
    outcomes: list[ShardOutcome] = []
    for index in shards:
        outcomes.append(run_shard(run, index, engine=engine, stop=stop, progress=progress))
        if not outcomes[-1].finished:
            break
    return outcomes
