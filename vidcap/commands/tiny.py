"""`vidcap make-tiny-model`: build a tiny random-weight model for tests and the demo, offline."""

from __future__ import annotations

import argparse
import sys

from vidcap.errors import UserError
from vidcap.fixtures.tiny_models import ALL_FAMILIES  # light: torch and transformers load only when a model is built

CHAT_FAMILY = "llama-chat"  # vidcap.fixtures.tiny_text_model: a text-only chat model, for the tag task


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "make-tiny-model",
        help="build a tiny random-weight model (captions are noise) for tests and demos",
        description="Build a tiny random-weight vision-language model with its processor and a tokenizer "
                    "trained on the spot, offline. It loads like a hub checkpoint; its captions are noise.",
    )
    parser.add_argument("dir", help="folder to write the model to")
    parser.add_argument("--family", choices=(*ALL_FAMILIES, CHAT_FAMILY), default="llava",
                        help=f"model family (default: llava; {CHAT_FAMILY}: a chat LM for `vidcap tag`)")
    parser.add_argument("--width", type=int, default=64,
                        help="language model hidden size, a multiple of 32 (default: 64; 128 for tensor-parallel "
                             "tests)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default: 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.width < 32 or args.width % 32:
        raise UserError(f"--width must be a positive multiple of 32, got {args.width}")
    from transformers.utils import logging as hf_logging

    from vidcap.fixtures.tiny_models import NOISE_WARNING, make_tiny_model

    hf_logging.disable_progress_bar()
    if args.family == CHAT_FAMILY:
        from vidcap.fixtures.tiny_text_model import make_tiny_text_model

        out = make_tiny_text_model(args.dir, width=args.width, seed=args.seed)
    else:
        out = make_tiny_model(args.dir, family=args.family, width=args.width, seed=args.seed)
    banner = "!" * len(NOISE_WARNING)
    print(f"{banner}\n{NOISE_WARNING}\n{banner}", file=sys.stderr)
    print(f"tiny {args.family} model (width {args.width}) written to {out}")
    return 0
