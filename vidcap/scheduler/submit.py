"""Send a run's unfinished shards to an executor: this machine (local) or a Slurm job array."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from vidcap.run import RunDir
from vidcap.worker import ShardOutcome


@dataclass
class Submission:
    executor: str
    shards: list[int]
    job_ids: list[str] = field(default_factory=list)
    outcomes: list[ShardOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.finished for o in self.outcomes)


def submit_unfinished(run: RunDir, args: argparse.Namespace) -> Submission:
    shards = run.unfinished_shards()
    if not shards:
        print(f"{run.root}: every shard is done; nothing to submit")
        return Submission(args.executor, [])
    if args.executor == "local":
        from vidcap.scheduler.local import run_local

        outcomes = run_local(run, shards, workers=getattr(args, "workers", None))
        done = sum(o.finished for o in outcomes)
        print(f"{run.root}: {done} of {len(shards)} shards finished on this machine")
        return Submission("local", shards, outcomes=outcomes)
    from vidcap.scheduler.slurm_submit import submit_slurm

    return submit_slurm(run, shards, args)


def wait_for(run: RunDir, submission: Submission, timeout_s: float | None) -> None:
    """Local runs are finished when submit returns; Slurm runs are waited on with a deadline."""
    if submission.executor == "slurm" and submission.job_ids:
        from vidcap.scheduler.slurm_submit import wait_slurm

        wait_slurm(run, submission, timeout_s)
