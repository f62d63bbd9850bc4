"""`vidcap demo`: the whole pipeline on sample videos with a tiny random model (what `make demo` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="caption sample videos end to end with a tiny random model")
    p.add_argument("--dir", default="demo", help="folder for the videos, the model and the outputs")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from vidcap.fixtures.demo import run_demo

    return run_demo(Path(args.dir))
