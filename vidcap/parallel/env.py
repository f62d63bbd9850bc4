"""Where this tensor-parallel rank stands: rank, world, rendezvous address, and the time bounds it keeps.

Two sources. The local launcher (`vidcap.parallel.launch`) sets torchrun's variables (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_SIZE, MASTER_ADDR, MASTER_PORT) for each rank it starts; a Slurm task started by submitit
reads its place from submitit's `JobEnvironment` (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, the job's first
host) and gets a port derived from its own job id, so that array tasks sharing a node do not meet on one
port. `export()` writes the torchrun variables back into the environment, because DeepSpeed's CPU
shared-memory all-reduce reads LOCAL_SIZE, MASTER_ADDR and MASTER_PORT there (without LOCAL_SIZE = world size
every rank segfaulted in inference_all_reduce), and transformers' tensor-parallel loading reads LOCAL_RANK.

Time bounds come from the environment, so that `sbatch` carries them into jobs and tests can shorten them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from vidcap.errors import UserError

#: seconds one batch may take on any rank (broadcast, generate, agreement) before the task is failed
TIMEOUT_ENV = "VIDCAP_TP_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
#: seconds for start-up: rendezvous of all ranks, DeepSpeed's op build (~45-85 s the first time on a CPU
#: machine), model loading and sharding
START_TIMEOUT_ENV = "VIDCAP_TP_START_TIMEOUT"
DEFAULT_START_TIMEOUT_S = 1800.0
#: seconds a follower tolerates without a heartbeat from rank 0 (rank 0 beats from a thread, so a slow
#: frame read does not count; a frozen or vanished rank 0 does)
HEARTBEAT_TIMEOUT_ENV = "VIDCAP_TP_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT_S = 60.0
#: a fixed rendezvous port for Slurm tasks (default: derived from the job id)
PORT_ENV = "VIDCAP_TP_PORT"
#: set by the local launcher: the launching process, whose disappearance ends the ranks
PARENT_ENV = "VIDCAP_TP_PARENT_PID"
#: set by the local launcher: where a rank writes the one-line reason it failed
REASON_ENV = "VIDCAP_TP_REASON_FILE"

PORT_RANGE = (20000, 60000)


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"${name}={raw!r}: expected a number of seconds") from None
    if value <= 0:
        raise UserError(f"${name}={raw!r}: must be positive")
    return value


@dataclass(frozen=True)
class Bounds:
    """How long each phase may take before a rank gives the task up (seconds)."""

    batch: float = DEFAULT_TIMEOUT_S
    start: float = DEFAULT_START_TIMEOUT_S
    heartbeat: float = DEFAULT_HEARTBEAT_TIMEOUT_S

    @classmethod
    def from_env(cls) -> Bounds:
        return cls(batch=_seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S),
                   start=_seconds(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT_S),
                   heartbeat=_seconds(HEARTBEAT_TIMEOUT_ENV, DEFAULT_HEARTBEAT_TIMEOUT_S))

    @property
    def beat_every(self) -> float:
        """Heartbeat period: several beats fit in the tolerance, and a beat costs one store round trip."""
        return max(0.2, min(5.0, self.heartbeat / 6))


@dataclass(frozen=True)
class RankEnv:
    rank: int
    world_size: int
    local_rank: int
    local_size: int
    master_addr: str
    master_port: int

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> RankEnv:
        """torchrun's variables (set by vidcap's local launcher, torchrun or a user's srun wrapper)."""
        missing = [n for n in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if n not in os.environ]
        if missing:
            raise UserError(f"tensor-parallel rank started without {', '.join(missing)} in its environment")
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_size = int(os.environ.get("LOCAL_SIZE") or os.environ.get("LOCAL_WORLD_SIZE") or world)
        return cls(rank, world, local_rank, local_size, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))

    @classmethod
    def from_slurm(cls) -> RankEnv:
        """This Slurm task's place, from submitit's job environment; a port derived from the job id."""
        from submitit.slurm.slurm import SlurmJobEnvironment

        job = SlurmJobEnvironment()  # SLURM_* variables: submitit's tasks and plain srun tasks alike
        world = job.num_tasks
        hosts = job.hostnames
        port = int(os.environ.get(PORT_ENV) or slurm_port(os.environ.get("SLURM_JOB_ID", "0"),
                                                           os.environ.get("SLURM_RESTART_COUNT", "0")))
        return cls(job.global_rank, world, job.local_rank, max(1, world // max(1, job.num_nodes)),
                   hosts[0] if hosts else "127.0.0.1", port)

    @classmethod
    def discover(cls) -> RankEnv:
        """In a submitit Slurm job: this Slurm task's place (torchrun variables the submitting shell may have
        exported are not this job's). Elsewhere: torchrun's variables (torchrun, a hand-made launch)."""
        if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_PROCID" in os.environ:
            return cls.from_slurm()
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_PORT" in os.environ:
            return cls.from_env()
        raise UserError("not a tensor-parallel rank: neither a submitit Slurm task nor torchrun's "
                        "RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT")

    def export(self) -> None:
        """Write the torchrun variables that DeepSpeed and transformers read from the environment."""
        os.environ.update({
            "RANK": str(self.rank), "WORLD_SIZE": str(self.world_size), "LOCAL_RANK": str(self.local_rank),
            "LOCAL_SIZE": str(self.local_size), "LOCAL_WORLD_SIZE": str(self.local_size),
            "MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
        })


def slurm_port(job_id: str, restart: str = "0") -> int:
    """A rendezvous port for one Slurm task: distinct for array tasks whose job ids differ by less than the
    range, and moved on each requeue (the previous run's port may still be in TIME_WAIT)."""
    digits = "".join(c for c in job_id if c.isdigit()) or "0"
    low, high = PORT_RANGE
    return low + (int(digits) + 7919 * int(restart or 0)) % (high - low)


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (a small race with other programs remains, as with torchrun)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
