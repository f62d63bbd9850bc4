"""How the processes of one shard task are placed: the one place that tells one process from tensor parallel.

A run needs `spec.needs().ranks` processes per shard task (the tensor-parallel size). Three ways to get them:

* one rank: this process runs the shards itself, with one engine for all of them;
* N ranks, and this process is one of N Slurm tasks of its job step (a plain sbatch job with
  `--ntasks-per-node=N`, or submitit's tasks): this process is one rank (SLURM_PROCID) and the others are
  its siblings in the step;
* N ranks, and this process is alone (a workstation, or a Slurm step of one task holding N GPUs): it starts
  the N ranks here and watches them (`vidcap.parallel.launch`).

`vidcap run-shard`, the local executor and Slurm submission all ask here; nothing else reads the size.
"""

from __future__ import annotations

import os
import threading

from vidcap.errors import UserError
from vidcap.run import RunDir
from vidcap.worker import ShardOutcome

#: what submitit calls in each array task (a "module:function" string, see vidcap.scheduler.task)
SINGLE_RANK_TARGET = "vidcap.worker:run_shard"
TENSOR_PARALLEL_TARGET = "vidcap.parallel:run_shard_ranks"


def ranks_per_task(run: RunDir) -> int:
    from vidcap.tasks.spec import load_spec

    return load_spec(run).needs().ranks


def array_task_target(ranks: int) -> str:
    """What each Slurm task of an array task runs (every one of the `ranks` tasks runs the same)."""
    return SINGLE_RANK_TARGET if ranks == 1 else TENSOR_PARALLEL_TARGET


def step_tasks() -> int:
    """How many Slurm tasks this process's job step has (1 outside Slurm, or in the batch script itself)."""
    if not os.environ.get("SLURM_JOB_ID"):
        return 1
    return int(os.environ.get("SLURM_STEP_NUM_TASKS") or 1)


def run_here(run: RunDir, shards: list[int], progress: bool = True) -> list[ShardOutcome]:
    """Run `shards` one after another with this process's part of the work (see the module docstring)."""
    if not shards:
        return []
    ranks, tasks = ranks_per_task(run), step_tasks()
    if ranks == 1:
        return _run_single(run, shards, progress)
    if tasks == ranks:
        from vidcap.parallel import run_shards_as_step_task

        return run_shards_as_step_task(run, shards, progress=progress)
    if tasks != 1:
        raise UserError(f"this Slurm job step has {tasks} tasks, but the run needs {ranks} tensor-parallel ranks "
                        f"per shard: give it {ranks} tasks (--ntasks-per-node={ranks}, one GPU each) or one task "
                        f"that holds {ranks} GPUs")
    from vidcap.parallel import run_shards_local

    return run_shards_local(run, shards, progress=progress)


def _run_single(run: RunDir, shards: list[int], progress: bool) -> list[ShardOutcome]:
    from vidcap.signals import stop_on_signals
    from vidcap.tasks.spec import load_spec
    from vidcap.worker import run_shards

    spec = load_spec(run)
    stop = threading.Event()
    with stop_on_signals(stop):
        engine = spec.make_engine()
        try:
            engine.open(spec)
            return run_shards(run, shards, engine, stop, progress)
        finally:
            engine.close()
