"""Every Slurm job state, and what it means for a shard: the one place that names them.

A shard's job is in one of four phases:

* QUEUED: it has not started and will start by itself (or when a hold is released): submitting the shard
  again would make a second task for it;
* RUNNING: a task is (or may be) working on it: also never submitted again;
* ENDED: Slurm will not run it again by itself: the completion marker tells whether the shard finished;
* UNKNOWN: Slurm did not answer in time. Not an end: the job may still run (a busy controller, a slurmdbd
  that lags), so waiting goes on and a resubmission asks the shard's heartbeat (its stats) instead.

GONE is vidcap's name for a job the controller answered about and no longer knows, with no accounting
record either: it ended long enough ago to be purged (MinJobAge). Held states (REQUEUE_HOLD,
SPECIAL_EXIT, RESV_DEL_HOLD, a PENDING job with a hold reason) are QUEUED: they run once released, so their
shard is theirs. A state name this table does not know (a newer Slurm) is UNKNOWN, never an end.
"""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    ENDED = "ended"
    UNKNOWN = "unknown"


UNKNOWN = "UNKNOWN"  # Slurm did not answer in time
GONE = "GONE"  # Slurm answered and no longer knows the job (nor does accounting)

#: every job state of squeue/sacct (Slurm 22.05 to 24.x, `man squeue`, JOB STATE CODES) and its phase
PHASES: dict[str, Phase] = {
    "PENDING": Phase.QUEUED,
    "REQUEUED": Phase.QUEUED,  # being requeued: pending again in a moment
    "REQUEUE_FED": Phase.QUEUED,  # requeued by its federation
    "REQUEUE_HOLD": Phase.QUEUED,  # requeued and held: runs when released
    "SPECIAL_EXIT": Phase.QUEUED,  # requeued in a held state after a special exit
    "RESV_DEL_HOLD": Phase.QUEUED,  # held because its reservation was deleted
    "CONFIGURING": Phase.RUNNING,  # allocated, nodes booting
    "RUNNING": Phase.RUNNING,
    "COMPLETING": Phase.RUNNING,  # its processes may still be writing
    "SUSPENDED": Phase.RUNNING,  # stopped mid-run, resumes later
    "STOPPED": Phase.RUNNING,  # SIGSTOPped, keeps its resources
    "RESIZING": Phase.RUNNING,
    "SIGNALING": Phase.RUNNING,
    "STAGE_OUT": Phase.RUNNING,  # burst buffer stage-out after the run
    "COMPLETED": Phase.ENDED,
    "FAILED": Phase.ENDED,
    "CANCELLED": Phase.ENDED,
    "TIMEOUT": Phase.ENDED,
    "OUT_OF_MEMORY": Phase.ENDED,
    "NODE_FAIL": Phase.ENDED,
    "BOOT_FAIL": Phase.ENDED,
    "DEADLINE": Phase.ENDED,
    "PREEMPTED": Phase.ENDED,  # a requeued one is PENDING again (squeue is asked first)
    "REVOKED": Phase.ENDED,  # a federation sibling that another cluster runs: ended here
    GONE: Phase.ENDED,
    UNKNOWN: Phase.UNKNOWN,
}


def normalize(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED'; 'COMPLETED+' -> 'COMPLETED'."""
    return state.split()[0].rstrip("+") if state.strip() else UNKNOWN


def phase(state: str) -> Phase:
    return PHASES.get(normalize(state), Phase.UNKNOWN)


def is_ended(state: str) -> bool:
    """Slurm will not run this job again by itself."""
    return phase(state) is Phase.ENDED


def is_live(state: str) -> bool:
    """Queued or running: the job owns its shard."""
    return phase(state) in (Phase.QUEUED, Phase.RUNNING)


#: the states after which Slurm will not run a job again by itself
FINAL_STATES = frozenset(name for name, p in PHASES.items() if p is Phase.ENDED)
