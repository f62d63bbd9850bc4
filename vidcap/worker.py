"""Run one shard of any task: the source's samples, the engine's answers, the task's columns, durably.

    lock the shard -> rows still to do -> Source.batches -> Engine.run (OOM halving) -> Task.values -> store

The worker is blind to what the task computes: it only moves samples and rows. Its loop checks the stop
event between batches: on SIGTERM (or a scheduler's stop) it finishes the batch in flight, writes it, and
returns without the completion marker, so a rerun continues where it stopped. A row that cannot be read
becomes an `error` row with the source's reason, in its own place: answers are matched to rows by position
inside each batch, never shifted by a failure beside them.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from vidcap.attempts import AttemptJournal
from vidcap.engines.base import Engine, Result, Sample
from vidcap.engines.batching import run_batch
from vidcap.manifest.resolve import best_per_key
from vidcap.manifest.split import load_shard
from vidcap.results import (RESULT_COLUMNS, STATUS_ERROR, STATUS_OK, STATUS_SKIPPED, ResultWriter, done_summary,
                            read_results, result_rows)
from vidcap.run import RunDir
from vidcap.signals import stop_on_signals
from vidcap.stats import ShardStats
from vidcap.sources import source_class
from vidcap.tasks.base import AnswerError, Task
from vidcap.tasks.spec import TaskSpec, load_spec


@dataclass
class ShardOutcome:
    index: int
    finished: bool  # False: stopped early (signal); a rerun continues
    stats: dict[str, Any] = field(default_factory=dict)


def failures_so_far(run: RunDir, index: int) -> dict[str, int]:
    """Keys of the shard that failed before, with how many times: their samples carry `attempt` = that + 1."""
    best = best_per_key(read_results(run, index), key="key")
    if best.num_rows == 0:
        return {}
    failed = best.filter(pc.and_(pc.not_equal(best["status"], STATUS_OK), pc.greater(best["failures"], 0)))
    return dict(zip(failed["key"].cast(pa.string()).to_pylist(), failed["failures"].to_pylist()))


def rows_to_do(run: RunDir, index: int, shard: pa.Table, key: str, max_attempts: int) -> tuple[pa.Table, int, int]:
    """Shard rows that still need an answer: no `ok` (or `skipped`: nothing to do) result yet and fewer than
    `max_attempts` failures.

    Returns (rows, already ok, given up)."""
    best = best_per_key(read_results(run, index), key="key")
    if best.num_rows == 0:
        return shard, 0, 0
    final = pc.is_in(best["status"], value_set=pa.array([STATUS_OK, STATUS_SKIPPED]))
    ok_keys = best.filter(final)["key"]
    spent_keys = best.filter(pc.and_(pc.invert(final),
                                     pc.greater_equal(best["failures"], max_attempts)))["key"]
    done = pc.is_in(shard[key], value_set=ok_keys)
    spent = pc.is_in(shard[key], value_set=spent_keys)
    todo = shard.filter(pc.invert(pc.or_(done, spent)))
    return todo, pc.sum(done).as_py() or 0, pc.sum(spent).as_py() or 0


def batch_rows(samples: list[Sample], engine: Engine, task: Task) -> list[dict[str, Any]]:
    """Run the readable samples of one batch; one result row per sample (without `key`), in samples' order."""
    readable = [s for s in samples if not s.error and not s.skip]
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
            status = STATUS_SKIPPED if sample.skip and not sample.error else STATUS_ERROR
            rows.append({**task.error_values, "status": status, "error": sample.error or sample.skip or "unreadable"})
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
        values = {**task.error_values, **exc.values}
        _check_declared(task, values)
        return {**values, "status": STATUS_ERROR, "error": str(exc) or "unusable answer"}
    _check_declared(task, values)
    return {**values, "status": STATUS_OK, "error": ""}


def _check_declared(task: Task, values: dict[str, Any]) -> None:
    unknown = set(values) - set(task.columns.names)
    if unknown:
        raise RuntimeError(f"task {task.name!r} returned columns it does not declare: {sorted(unknown)}")


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
    spec = load_spec(run)  # what this run does (vidcap.tasks.spec)
    task = spec.make_task()
    key = config["manifest"]["key"]
    own_stop = stop is None
    stop = stop or threading.Event()
    with ResultWriter(run, index) as writer:  # the store, and its lock first: a duplicate task stops here
        shard = load_shard(run, index)
        todo, done_before, given_up = rows_to_do(run, index, shard, key, spec.max_attempts)
        stats = ShardStats(run, index, shard.num_rows, done_before, given_up, todo.num_rows)  # vidcap.stats
        if todo.num_rows == 0:
            final = stats.write(force=True, finished=True)
            run.mark_done(index, done_summary(run, index, shard.num_rows, final))
            return ShardOutcome(index, True, final)
        keys = todo[key].cast(pa.string()).to_pylist()
        # signals first: the reader processes and their resource tracker inherit how USR2 is handled
        with (stop_on_signals(stop) if own_stop else nullcontext()), \
                source_class(task.source)(spec.source, task, todo, keys, config["manifest"]["path"]) as source, \
                _engine_for(spec, engine) as engine:  # reading starts before the model loads
            with AttemptJournal(run.attempts_path(index)) as journal:  # an API's requests, before they leave
                engine.log_attempts(journal)
                try:
                    stopped = _drain(source, engine, task, writer, stats, stop, spec.batch_size, index, progress,
                                     failures_so_far(run, index))
                finally:
                    engine.log_attempts(None)
            if not stopped:
                writer.compact()
            figures = {"engine": engine.figures(), "source": source.figures()}
        final = stats.write(figures, force=True, finished=not stopped, stopped=stopped)
    if not stopped:
        run.mark_done(index, done_summary(run, index, shard.num_rows, final))
    return ShardOutcome(index, not stopped, final)


def _drain(source: Any, engine: Engine, task: Task, writer: ResultWriter, stats: ShardStats,
           stop: threading.Event, batch_size: int, index: int, progress: bool | None,
           failures: dict[str, int] | None = None) -> bool:
    """Every batch of the source through the engine into the store; True when stopped early. `failures`:
    earlier failures per key, told to the engine as each sample's `attempt`."""
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
            if failures:
                for sample in samples:
                    sample.attempt = 1 + failures.get(sample.key, 0)
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


def run_shards(run: RunDir, shards: list[int], engine: Engine, stop: threading.Event,
               progress: bool | None = None) -> list[ShardOutcome]:
    """Run shards one after another with one engine; stop at the first one that stopped early."""
    outcomes: list[ShardOutcome] = []
    for index in shards:
        outcomes.append(run_shard(run, index, engine=engine, stop=stop, progress=progress))
        if not outcomes[-1].finished:
            break
    return outcomes
