"""Command-line flags for Slurm resources; they override the cluster profile (`--profile FILE`)."""

from __future__ import annotations

import argparse

from vidcap.errors import UserError
from vidcap.scheduler.resources import SlurmResources, load_profile


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


def resources_from_args(
    args: argparse.Namespace, tp_size: int = 1, saved: SlurmResources | None = None
) -> SlurmResources:
    """Flags over the profile file, else over the resources this run was submitted with before."""
    if getattr(args, "profile", None):
        base = load_profile(args.profile)
    else:
        base = saved or SlurmResources()
    sbatch: dict[str, str | int | bool] = {}
    for item in getattr(args, "sbatch", []) or []:
        name, sep, value = item.partition("=")
        if not name:
            raise UserError(f"--sbatch {item!r}: expected KEY=VALUE (e.g. --sbatch exclusive=true)")
        sbatch[name.lstrip("-")] = True if not sep or value.lower() == "true" else value
    return base.override(
        partition=args.partition, account=args.account, qos=args.qos, time_min=args.time_min,
        gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
        constraint=args.constraint, array_parallelism=args.array_parallelism,
        tasks_per_node=tp_size if tp_size > 1 else None,
        sbatch=sbatch or None, setup=args.setup or None,
    )
