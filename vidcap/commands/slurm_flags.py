"""Command-line flags for Slurm resources (`--partition`, `--time`, ..., `--profile FILE`), turned into the
scheduler's typed `ResourceRequest`: the scheduler never sees argparse."""

from __future__ import annotations

import argparse

from vidcap.errors import UserError
from vidcap.scheduler.resources import ResourceRequest


def add_slurm_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Slurm (--executor slurm; flags override the --profile file)")
    g.add_argument("--profile", help="cluster profile (TOML), e.g. slurm/profiles/example.toml")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--time", type=int, dest="time_min", help="time limit per task, minutes")
    g.add_argument("--gpus-per-task", type=int, help="GPUs per Slurm task (each tensor-parallel rank is a task)")
    g.add_argument("--cpus-per-task", type=int)
    g.add_argument("--mem-gb", type=float)
    g.add_argument("--constraint")
    g.add_argument("--array-parallelism", type=int, help="at most this many tasks of an array at once (%%P)")
    g.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option")
    g.add_argument("--setup", action="append", default=[], metavar="LINE", help="shell line run before each task")


def resource_request(args: argparse.Namespace) -> ResourceRequest:
    """The Slurm flags given on the command line (unset ones are left to the profile or the run's last)."""
    sbatch: dict[str, str | int | bool] = {}
    for item in getattr(args, "sbatch", []) or []:
        name, sep, value = item.partition("=")
        if not name:
            raise UserError(f"--sbatch {item!r}: expected KEY=VALUE (e.g. --sbatch exclusive=true)")
        sbatch[name.lstrip("-")] = True if not sep or value.lower() == "true" else value
    changes = {name: getattr(args, name, None) for name in (
        "partition", "account", "qos", "time_min", "gpus_per_task", "cpus_per_task", "mem_gb", "constraint",
        "array_parallelism")}
    changes["sbatch"] = sbatch or None
    changes["setup"] = tuple(getattr(args, "setup", []) or []) or None
    return ResourceRequest(profile=getattr(args, "profile", None),
                           changes={k: v for k, v in changes.items() if v is not None})
