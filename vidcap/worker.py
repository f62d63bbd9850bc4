"""Run one shard of any task: the source's samples, the engine's answers, the task's columns, durably.

    lock the shard -> rows still to do -> Source.batches -> Engine.run (OOM halving) -> Task.values -> store

The worker is blind to what the task computes: it only moves samples and rows. Its loop checks the stop
event between batches: on SIGTERM (or a scheduler's stop) it finishes the batch in flight, writes it, and
returns without the completion marker, so a rerun continues where it stopped. A row that cannot be read
becomes an `error` row with the source's reason, in its own place: answers are matched to rows by position
inside each batch, never shifted by a failure beside them.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from vidcap.engines.base import Engine, Result, Sample
from vidcap.engines.batching import run_batch
from vidcap.manifest.resolve import best_per_key
from vidcap.manifest.split import load_shard
from vidcap.results import RESULT_COLUMNS, STATUS_ERROR, STATUS_OK, ResultWriter, read_results, result_rows
from vidcap.run import RunDir
from vidcap.signals import signal_sets_event
from vidcap.sources import source_class
from vidcap.tasks.base import AnswerError, Task
from vidcap.tasks.spec import TaskSpec, load_spec

STATS_EVERY_S = 10.0


@dataclass
class ShardOutcome:
    index: int
    finished: bool  # False: stopped early (signal); a rerun continues
    stats: dict[str, Any] = field(default_factory=dict)


def rows_to_do(run: RunDir, index: int, shard: pa.Table, key: str, max_attempts: int) -> tuple[pa.Table, int, int]:
    """Shard rows that still need an answer: no `ok` result yet and fewer than `max_attempts` failures.

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


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT/SIGUSR2 set `stop` instead of killing the process mid-write (main thread only).

    USR2 is Slurm's "time limit (or preemption) is near" (slurm/caption_array.sbatch passes it on); it is
    blocked in the frame readers, which would die of it (see vidcap.signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means now
        # os.write, not print: a handler may run in the middle of the progress bar's own write to stderr
        os.write(2, f"\nvidcap: {signal.Signals(signum).name}: stopping after the batch in flight\n".encode())
        stop.set()  # the main thread never waits on this event, so setting it here cannot deadlock

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        # a USR2 once the shard is over is ignored: its default action would kill a process whose work is done
        late = signal.SIG_IGN if signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None) else None
        with signal_sets_event(signal.SIGUSR2, stop, "\nvidcap: SIGUSR2: stopping after the batch in flight\n", late):
            yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class Counters:
    """Figures that add up (datatrove's stat_update): a counter is created by its first `count`."""

    def __init__(self, **start: Any) -> None:
        self.data: dict[str, Any] = dict(start)

    def count(self, name: str, value: float = 1) -> None:
        self.data[name] = (self.data.get(name) or 0) + value

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.count(name, time.perf_counter() - started)


#: per-row figures of the engine (Result.extra) summed into the shard stats
SUMMED_EXTRAS = ("cost_usd",)


class ShardStats(Counters):
    """Figures of one shard attempt, written to RUN/stats/ while it runs (every STATS_EVERY_S) and at the end."""

    def __init__(self, run: RunDir, index: int, total: int, done_before: int, given_up: int, todo: int) -> None:
        self.run, self.index = run, index
        self.started = time.time()
        super().__init__(
            shard=index, host=socket.gethostname(), pid=os.getpid(), started_at=self.started, rows_total=total,
            rows_ok_before=done_before, rows_given_up=given_up, rows_todo=todo, rows_ok=0, rows_error=0,
            prompt_tokens=0, generated_tokens=0, read_wait_s=0.0, model_s=0.0, batches=0, finished=False,
            stopped=False,
            cost_usd=None,  # this attempt's rows; `vidcap status` adds up every attempt's from the results
        )
        self._written = 0.0

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.count("batches")
        for row in rows:
            self.count("rows_ok" if row["status"] == STATUS_OK else "rows_error")
            self.count("prompt_tokens", row.get("prompt_tokens") or 0)
            self.count("generated_tokens", row.get("generated_tokens") or 0)
            for name in SUMMED_EXTRAS:
                if row.get(name) is not None:
                    self.count(name, row[name])

    def write(self, figures: dict[str, Any] | None = None, force: bool = False, **final: Any) -> dict[str, Any]:
        now = time.time()
        if not force and now - self._written < STATS_EVERY_S:
            return self.data
        d = self.data
        d.update(final)
        d["updated_at"] = now
        d["seconds"] = now - self.started
        processed = d["rows_ok"] + d["rows_error"]
        d["videos_per_s"] = processed / d["seconds"] if d["seconds"] > 0 else 0.0
        d.update(figures or {})
        self.run.write_stats(self.index, d)
        self._written = now
        return d


def batch_rows(samples: list[Sample], engine: Engine, task: Task) -> list[dict[str, Any]]:
    """Run the readable samples of one batch; one result row per sample (without `key`), in samples' order."""
    readable = [s for s in samples if not s.error]
    for sample in readable:
        sample.prompt = task.prompt_for(sample)
    started = time.perf_counter()
    results = run_batch(engine, readable) if readable else []
    if len(results) != len(readable):
        raise RuntimeError(f"engine returned {len(results)} results for {len(readable)} samples")
    share = (time.perf_counter() - started) / max(1, len(readable))
    answers = {id(sample): result for sample, result in zip(readable, results)}
    reserved = set(RESULT_COLUMNS) | set(task.columns.names)
    rows = []
    for sample in samples:
        result = answers.get(id(sample))
        if result is None:
            rows.append({**task.error_values, "status": STATUS_ERROR, "error": sample.error or "unreadable"})
            continue
        row = task_row(task, sample, result)
        row.update(seconds=share, prompt_tokens=result.prompt_tokens, generated_tokens=result.generated_tokens)
        # engine figures (an API's cost, attempts, latency) on error rows too: a refusal is billed. They never
        # replace the store's or the task's own columns.
        row.update({k: v for k, v in result.extra.items()
                    if k not in reserved and (v is None or isinstance(v, (int, float, str)))})
        rows.append(row)
    return rows


def task_row(task: Task, sample: Sample, result: Result) -> dict[str, Any]:
    """The task's columns and the status of one answered sample."""
    if result.error:
        return {**task.error_values, "status": STATUS_ERROR, "error": result.error}
    try:
        values = task.values(sample, result)
    except AnswerError as exc:
        return {**task.error_values, "status": STATUS_ERROR, "error": str(exc) or "unusable answer"}
    unknown = set(values) - set(task.columns.names)
    if unknown:
        raise RuntimeError(f"task {task.name!r} returned columns it does not declare: {sorted(unknown)}")
    return {**values, "status": STATUS_OK, "error": ""}


def run_shard(
    run: RunDir | str,
    index: int,
    engine: Engine | None = None,
    stop: threading.Event | None = None,
    progress: bool | None = None,
) -> ShardOutcome:
    """Answer every unfinished row of shard `index`; write the completion marker when all are done.

    `engine`: an opened engine the caller owns (one model for many shards); else one is made, opened and
    closed here. The shard's lock is taken before anything else, so a duplicate task stops at once."""
    run = run if isinstance(run, RunDir) else RunDir.at(run)
    config = run.load_config()
    spec = load_spec(run)
    task = spec.make_task()
    key = config["manifest"]["key"]
    own_stop = stop is None
    stop = stop or threading.Event()
    with ResultWriter(run, index) as writer:  # the lock: a second task on this shard stops here (ShardBusy)
        shard = load_shard(run, index)
        todo, done_before, given_up = rows_to_do(run, index, shard, key, spec.max_attempts)
        stats = ShardStats(run, index, shard.num_rows, done_before, given_up, todo.num_rows)
        if todo.num_rows == 0:
            final = stats.write(force=True, finished=True)
            run.mark_done(index, {"rows": shard.num_rows, "finished_at": time.time()})
            return ShardOutcome(index, True, final)
        keys = todo[key].cast(pa.string()).to_pylist()
        with (stop_on_signals(stop) if own_stop else _nothing()), \
                source_class(task.source)(spec.source, task, todo, keys, config["manifest"]["path"]) as source, \
                _engine_for(spec, engine) as engine:
            stopped = _drain(source, engine, task, writer, stats, stop, spec.batch_size, index, progress)
            if not stopped:
                writer.compact()
            figures = {"engine": engine.figures(), "source": source.figures()}
        final = stats.write(figures, force=True, finished=not stopped, stopped=stopped)
    if not stopped:
        run.mark_done(index, {"rows": shard.num_rows, "finished_at": time.time()})
    return ShardOutcome(index, not stopped, final)


def _drain(source: Any, engine: Engine, task: Task, writer: ResultWriter, stats: ShardStats,
           stop: threading.Event, batch_size: int, index: int, progress: bool | None) -> bool:
    """Every batch of the source through the engine into the store; True when stopped early."""
    bar = tqdm(total=stats.data["rows_todo"], desc=f"shard {index}", unit="row",
               disable=progress is False, mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr)
    batches = source.batches(batch_size)
    try:
        while True:
            if stop.is_set():
                return True
            with stats.timed("read_wait_s"):
                samples = next(batches, None)
            if samples is None:
                return False
            with stats.timed("model_s"):
                rows = batch_rows(samples, engine, task)
            for sample, row in zip(samples, rows):
                row["key"] = sample.key
            writer.append(result_rows(rows, task.columns))
            stats.add_rows(rows)
            stats.write({"engine": engine.figures()})
            bar.update(len(samples))
    finally:
        bar.close()


@contextmanager
def _engine_for(spec: TaskSpec, engine: Engine | None) -> Iterator[Engine]:
    """The caller's engine, or one made and opened here and closed on every way out."""
    if engine is not None:
        yield engine
        return
    own = spec.make_engine()
    try:
        own.open(spec)
        yield own
    finally:
        own.close()


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
