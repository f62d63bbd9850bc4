"""The local executor: every unfinished shard on this machine, one after another, in this process.

One engine serves every shard (a model loads once, not once per shard). SIGTERM/Ctrl-C stop after the
batch in flight; what was written stays and the next `submit`/`resume` continues from it.
"""

from __future__ import annotations

import threading

from vidcap.engines import create_engine
from vidcap.jobconfig import check_engine, load_job
from vidcap.run import RunDir
from vidcap.signals import stop_on_signals
from vidcap.worker import ShardOutcome, run_shards


def run_local(run: RunDir, shards: list[int], progress: bool = True) -> list[ShardOutcome]:
    outcomes: list[ShardOutcome] = []
    if not shards:
        return outcomes
    job = load_job(run)
    if job.engine.tp_size > 1:  # N ranks on this machine share one model load across the shards
        from vidcap.parallel import run_shards_local

        return run_shards_local(run, shards, progress=progress)
    stop = threading.Event()
    with stop_on_signals(stop):
        engine = create_engine(job.engine)
        try:
            check_engine(engine, job)
            outcomes = run_shards(run, shards, engine, stop, progress)
        finally:
            engine.close()
    return outcomes
