"""The local executor: every unfinished shard on this machine, one after another.

One engine serves every shard (a model loads once, not once per shard); with tensor parallel, one set of
ranks does (vidcap.scheduler.placement). SIGTERM/Ctrl-C stop after the batch in flight; what was written
stays and the next `submit`/`resume` continues from it.
"""

from __future__ import annotations

from vidcap.run import RunDir
from vidcap.scheduler.placement import run_here
from vidcap.worker import ShardOutcome


def run_local(run: RunDir, shards: list[int], progress: bool = True) -> list[ShardOutcome]:
    return run_here(run, shards, progress=progress)
