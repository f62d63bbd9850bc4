"""Send a run's unfinished shards to an executor: this machine (local) or Slurm job arrays."""

from __future__ import annotations

from vidcap.run import RunDir
from vidcap.scheduler.resources import ResourceRequest
from vidcap.scheduler.submission import Submission

EXECUTORS = ("local", "slurm")


def submit_unfinished(run: RunDir, executor: str, request: ResourceRequest | None = None,
                      workers: int | None = None) -> Submission:
    """Run (local) or submit (slurm) every shard without a completion marker. `request`: Slurm resources;
    `workers`: local worker processes (None: as many as the visible GPUs allow, see vidcap.scheduler.workers)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    shards = run.unfinished_shards()
    if not shards:
        print(f"{run.root}: every shard is done; nothing to submit")
        return Submission(executor, [])
    if executor == "local":
        from vidcap.scheduler.local import run_local

        outcomes = run_local(run, shards, workers=workers)
        done = sum(o.finished for o in outcomes)
        print(f"{run.root}: {done} of {len(shards)} shards finished on this machine")
        return Submission("local", shards, outcomes=outcomes)
    from vidcap.scheduler.slurm_submit import submit_slurm  # submitit is imported only for Slurm

    return submit_slurm(run, shards, request or ResourceRequest())


def wait_for(run: RunDir, submission: Submission, timeout_s: float | None) -> None:
    """Local runs are finished when submit returns; Slurm runs are waited on with a deadline."""
    if submission.executor == "slurm" and submission.job_ids:
        from vidcap.scheduler.slurm_submit import wait_slurm

        wait_slurm(run, submission, timeout_s)
