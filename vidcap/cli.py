"""The `vidcap` command line.

Each module in `vidcap.commands` registers its own sub-commands through `register(subparsers)`, and
imports what is heavy (torch, transformers) only inside its handler, so `vidcap --help` stays fast.
A `UserError` becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from vidcap import __version__
from vidcap.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidcap",
        description="Caption huge video datasets with vision-language models, locally or on Slurm.",
    )
    parser.add_argument("--version", action="version", version=f"vidcap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    import vidcap.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"vidcap.commands.{info.name}")
        if hasattr(module, "register"):  # others are shared helpers (runflow)
            module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"vidcap {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vidcap {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
