"""The local executor: every unfinished shard on this machine, one after another.

One engine serves every shard (a model loads once, not once per shard); with tensor parallel, one set of
ranks does (vidcap.scheduler.placement). SIGTERM/Ctrl-C stop after the batch in flight; what was written
stays and the next `submit`/`resume` continues from it. With `--workers N` (or several GPUs) a pool of N
such processes shares the shards out (vidcap.scheduler.workers); in a worker, `shards` are the pool's
claims, handed out one at a time, rather than a list.
"""

from __future__ import annotations

from typing import Iterable

from vidcap.run import RunDir
from vidcap.scheduler.placement import run_here
from vidcap.worker import ShardOutcome


def run_local(run: RunDir, shards: Iterable[int], progress: bool = True,
              workers: int | None = None) -> list[ShardOutcome]:
    if isinstance(shards, list):
        if not shards:
            return []
        from vidcap.scheduler.workers import pool_plans, run_pool

        plans = pool_plans(run, workers)
        if plans is not None:
            return run_pool(run, shards, plans, progress=progress)
    return run_here(run, shards, progress=progress)  # type: ignore[arg-type]  # claims are iterated once
