"""`vidcap doctor`: one table of what this machine has for captioning (GPUs, torch/CUDA, flash-attn,
DeepSpeed ops, Slurm)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check this machine: GPUs, torch/CUDA, flash-attn, DeepSpeed ops, Slurm")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from vidcap.doctor import WARN, format_checks, run_checks

    checks = run_checks()
    print(format_checks(checks))
    return 1 if any(c.status == WARN for c in checks) else 0
