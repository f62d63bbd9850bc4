"""The local executor: every unfinished shard on this machine, one after another, in this process.

One engine serves every shard (a model loads once, not once per shard). SIGTERM/Ctrl-C stop after the
batch in flight; what was written stays and the next `submit`/`resume` continues from it.
"""

from __future__ import annotations

import threading

from vidcap.run import RunDir
from vidcap.signals import stop_on_signals
from vidcap.tasks.spec import load_spec
from vidcap.worker import ShardOutcome, run_shards


def run_local(run: RunDir, shards: list[int], progress: bool = True) -> list[ShardOutcome]:
    outcomes: list[ShardOutcome] = []
    if not shards:
        return outcomes
    spec = load_spec(run)
    if spec.needs().ranks > 1:  # N ranks on this machine share one model load across the shards
        from vidcap.parallel import run_shards_local

        return run_shards_local(run, shards, progress=progress)
    stop = threading.Event()
    with stop_on_signals(stop):
        engine = spec.make_engine()
        try:
            engine.open(spec)
            outcomes = run_shards(run, shards, engine, stop, progress)
        finally:
            engine.close()
    return outcomes
