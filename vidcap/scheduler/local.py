"""The local executor: every unfinished shard on this machine, one after another, in this process.

One engine serves every shard (a model loads once, not once per shard). SIGTERM/Ctrl-C stop after the
batch in flight; what was written stays and the next `submit`/`resume` continues from it. With `--workers N`
(or several GPUs) a pool of N such processes shares the shards out (vidcap.scheduler.workers); `shards` may
then be the pool's claims, handed out one at a time, rather than a list.
"""

from __future__ import annotations

import threading
from typing import Iterable

from vidcap.run import RunDir
from vidcap.signals import stop_on_signals
from vidcap.tasks.spec import load_spec
from vidcap.worker import ShardOutcome, run_shards


def run_local(run: RunDir, shards: Iterable[int], progress: bool = True,
              workers: int | None = None) -> list[ShardOutcome]:
    outcomes: list[ShardOutcome] = []
    if isinstance(shards, list) and not shards:
        return outcomes
    spec = load_spec(run)
    needs = spec.needs()
    if isinstance(shards, list):
        from vidcap.scheduler.workers import plan_workers, run_pool, visible_gpus

        on_cpu = needs.gpus_per_rank == 0
        if workers is not None or len(plan_workers(None, needs.ranks, [] if on_cpu else visible_gpus(),
                                                   on_cpu)) > 1:
            return run_pool(run, shards, workers, needs.ranks, on_cpu=on_cpu, progress=progress)
    if needs.ranks > 1:  # N ranks on this machine share one model load across the shards
        from vidcap.parallel import run_shards_local

        return run_shards_local(run, shards, progress=progress)
    stop = threading.Event()
    with stop_on_signals(stop):
        engine = spec.make_engine()
        try:
            engine.open(spec)
            outcomes = run_shards(run, shards, engine, stop, progress)  # type: ignore[arg-type]
        finally:
            engine.close()
    return outcomes
