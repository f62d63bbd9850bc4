"""What one array task asks Slurm for, from a cluster profile file and command-line flags.

A profile (TOML, see slurm/profiles/example.toml) holds what is fixed for a cluster: partition, account,
module lines. Flags override it per run. Unknown keys are refused so that a typo (`gpu_per_task`) is an
error naming the file, not a silently CPU-only job.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vidcap.errors import UserError

# sbatch options that submitit writes itself or that have their own field: setting them through `sbatch`
# would either be overwritten or disagree with what submitit believes (it reads the time limit to tell a
# timeout from a preemption).
_MANAGED_OPTIONS = {
    "array": "one array task per shard is vidcap's job",
    "output": "logs go to the run folder",
    "error": "logs go to the run folder",
    "open-mode": "submitit appends to the logs",
    "signal": "use signal_delay_s",
    "job-name": "the job name comes from the run",
    "wrap": "submitit writes the script",
    "time": "use time_min",
    "partition": "use partition",
    "account": "use account",
    "qos": "use qos",
    "nodes": "use nodes",
    "ntasks-per-node": "use tasks_per_node",
    "cpus-per-task": "use cpus_per_task",
    "gpus-per-task": "use gpus_per_task",
    "mem": "use mem_gb",
    "constraint": "use constraint",
}


@dataclass(frozen=True)
class SlurmResources:
    """Resources of one array task (one shard). Sizes are per task; None leaves Slurm's default."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    gpus_per_task: int = 0  # per Slurm task (one tensor-parallel rank each); no GPU option is written when 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    constraint: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1  # ranks per array task (the tensor-parallel size)
    array_parallelism: int | None = None  # the `%P` throttle of each array; None: no throttle
    signal_delay_s: int = 120  # USR2 this long before the time limit: must exceed one batch
    max_requeues: int = 10  # submitit's max_num_timeout: time-limit requeues before giving up
    sbatch: dict[str, str | int | bool] = field(default_factory=dict)  # any other sbatch option
    setup: tuple[str, ...] = ()  # shell lines run before the task (module load, venv activate)

    def __post_init__(self) -> None:
        for name in ("time_min", "nodes", "tasks_per_node", "signal_delay_s"):
            if getattr(self, name) < 1:
                raise UserError(f"Slurm resources: {name} must be at least 1, got {getattr(self, name)}")
        for name in ("gpus_per_task", "max_requeues"):
            if getattr(self, name) < 0:
                raise UserError(f"Slurm resources: {name} must not be negative, got {getattr(self, name)}")
        if self.array_parallelism is not None and self.array_parallelism < 1:
            raise UserError(f"Slurm resources: array_parallelism must be at least 1, got {self.array_parallelism}")
        for key, value in self.sbatch.items():
            reason = _MANAGED_OPTIONS.get(key.replace("_", "-"))
            if reason:
                raise UserError(f"Slurm resources: sbatch option {key!r} is not allowed here ({reason})")
            if value is False or not isinstance(value, (str, int)):
                raise UserError(f"Slurm resources: sbatch option {key!r} must be a string, a number or true")

    def override(self, **changes: Any) -> SlurmResources:
        """These resources with every change that is not None (flags left unset keep the profile)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if "sbatch" in changes:
            changes["sbatch"] = {**self.sbatch, **changes["sbatch"]}
        if "setup" in changes:
            changes["setup"] = tuple(changes["setup"])
        return dataclasses.replace(self, **changes)

    @property
    def effective_signal_delay_s(self) -> int:
        """`signal_delay_s`, shortened where the time limit is too short for it.

        Slurm checks time limits every 30 s, so USR2 comes between `delay` and `delay + 30` s before the
        limit; with a delay near the limit it would come as the task starts (before Python could take it:
        killed) and again after every requeue, so it never gets anywhere. Measured here with --time=1 and a
        25 s delay: USR2 5-35 s into the task. So the delay leaves at least 35 s of the limit.
        """
        return max(1, min(self.signal_delay_s, self.time_min * 60 - 35))

    def submitit_parameters(self, job_name: str) -> dict[str, Any]:
        """Parameters for `submitit.SlurmExecutor.update_parameters` (its native sbatch names)."""
        params: dict[str, Any] = {
            "job_name": job_name,
            "time": self.time_min,
            "nodes": self.nodes,
            "ntasks_per_node": self.tasks_per_node,
            "signal_delay_s": self.effective_signal_delay_s,
        }
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "cpus_per_task": self.cpus_per_task,
            "constraint": self.constraint,
            "mem": None if self.mem_gb is None else f"{round(self.mem_gb * 1024)}M",
            "gpus_per_task": self.gpus_per_task or None,
            "setup": list(self.setup) or None,
            "additional_parameters": dict(self.sbatch) or None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "partition": (str,),
    "account": (str,),
    "qos": (str,),
    "time_min": (int,),
    "gpus_per_task": (int,),
    "cpus_per_task": (int,),
    "mem_gb": (int, float),
    "constraint": (str,),
    "nodes": (int,),
    "tasks_per_node": (int,),
    "array_parallelism": (int,),
    "signal_delay_s": (int,),
    "max_requeues": (int,),
    "sbatch": (dict,),
    "setup": (list,),
}


def load_profile(path: str | Path) -> SlurmResources:
    """Read a cluster profile (TOML). Every key must be a `SlurmResources` field of the right type."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read Slurm profile {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"Slurm profile {path} is not valid TOML: {exc}") from None
    for key, value in data.items():
        types = _FIELD_TYPES.get(key)
        if types is None:
            raise UserError(f"Slurm profile {path}: unknown key {key!r} (known: {', '.join(_FIELD_TYPES)})")
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join(t.__name__ for t in types)
            raise UserError(f"Slurm profile {path}: key {key!r} must be {want}, got {value!r}")
    if not all(isinstance(line, str) for line in data.get("setup", [])):
        raise UserError(f"Slurm profile {path}: key 'setup' must be a list of shell lines (strings)")
    if "setup" in data:
        data["setup"] = tuple(data["setup"])
    try:
        return SlurmResources(**data)
    except UserError as exc:
        raise UserError(f"Slurm profile {path}: {exc}") from None


@dataclass(frozen=True)
class ResourceRequest:
    """What a user asked for this submission: a profile file and field changes (e.g. from flags)."""

    profile: str | None = None
    changes: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, ranks: int = 1, saved: SlurmResources | None = None) -> SlurmResources:
        """The changes over the profile, else over the resources this run was submitted with before; one
        Slurm task per tensor-parallel rank."""
        base = load_profile(self.profile) if self.profile else (saved or SlurmResources())
        return base.override(**self.changes, tasks_per_node=ranks if ranks > 1 else None)
