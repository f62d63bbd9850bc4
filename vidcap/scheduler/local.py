"""The local executor: every unfinished shard on this machine, one after another, in this process.

One engine serves every shard (a model loads once, not once per shard). SIGTERM/Ctrl-C stop after the
batch in flight; what was written stays and the next `submit`/`resume` continues from it. With `--workers N`
(or several GPUs) a pool of N such processes shares the shards out (vidcap.scheduler.workers); `shards` may
then be the pool's claims, handed out one at a time, rather than a list.
"""

from __future__ import annotations

import threading
from typing import Iterable

from vidcap.engines import create_engine
from vidcap.jobconfig import check_engine, load_job
from vidcap.run import RunDir
from vidcap.worker import ShardOutcome, run_shards, stop_on_signals


def run_local(run: RunDir, shards: Iterable[int], progress: bool = True,
              workers: int | None = None) -> list[ShardOutcome]:
    outcomes: list[ShardOutcome] = []
    if isinstance(shards, list) and not shards:
        return outcomes
    job = load_job(run)
    if isinstance(shards, list):
        from vidcap.scheduler.workers import plan_workers, run_pool, visible_gpus

        on_cpu = (job.engine.device or "").startswith("cpu")
        if workers is not None or len(plan_workers(None, job.engine.tp_size, [] if on_cpu else visible_gpus(),
                                                   on_cpu)) > 1:
            return run_pool(run, shards, workers, job.engine.tp_size, on_cpu=on_cpu, progress=progress)
    if job.engine.tp_size > 1:  # N ranks on this machine share one model load across the shards
        from vidcap.parallel import run_shards_local

        return run_shards_local(run, shards, progress=progress)
    stop = threading.Event()
    with stop_on_signals(stop):
        engine = create_engine(job.engine)
        try:
            check_engine(engine, job)
            outcomes = run_shards(run, shards, engine, stop, progress)  # type: ignore[arg-type]
        finally:
            engine.close()
    return outcomes
