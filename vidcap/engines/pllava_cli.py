"""Command-line side of the PLLaVA engine: its option group, choosing the engine from the checkpoint's config
when `--engine` is not given, and the settings frozen into the run config.

Kept apart from `vidcap.commands.run` so that file only calls three functions.
"""

from __future__ import annotations

import argparse
from typing import Any

from vidcap.errors import UserError


def add_pllava_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("PLLaVA (--engine pllava, chosen by itself for a PLLaVA checkpoint)")
    g.add_argument("--pooling-shape", metavar="T-H-W",
                   help="pooled video tokens T x H x W, e.g. 4-12-12 as Open-Sora (default: the checkpoint's)")
    g.add_argument("--lora-alpha", type=float, default=4.0,
                   help="LoRA alpha; scale = alpha / rank (default 4, as Open-Sora and PLLaVA's eval)")
    g.add_argument("--frame-fit", choices=["crop", "pad"], default="crop",
                   help="crop: CLIP's centre square, as PLLaVA saw frames (default); pad: letterbox, whole frame")


def choose_engine(engine: str | None, model: str) -> str:
    """The engine asked for, else pllava for a local PLLaVA checkpoint and hf otherwise; `hf` on a PLLaVA
    checkpoint is refused (transformers would load it as plain LLaVA with a random language model)."""
    from vidcap.engines.pllava_checkpoint import is_pllava

    pllava = bool(model) and is_pllava(model)
    if engine is None:
        return "pllava" if pllava else "hf"
    if engine == "hf" and pllava:
        raise UserError(f"{model} is a PLLaVA checkpoint: use --engine pllava (or leave --engine out); the hf "
                        "engine would load it as plain LLaVA with a randomly initialised language model")
    return engine


def pllava_settings_from_args(args: argparse.Namespace) -> Any:
    """The engine's settings from the flags, with the pooling shape made explicit (from the checkpoint when
    not given) and the model folder absolute, so the frozen run config says what was used."""
    import os

    from vidcap.engines.pllava_checkpoint import parse_shape, read_config
    from vidcap.engines.pllava_settings import PllavaSettings

    if not args.model:
        raise UserError("--model is required: a local PLLaVA checkpoint folder (e.g. one downloaded from "
                        "ermu2001/pllava-13b; `vidcap make-tiny-model DIR --family pllava` makes a tiny one)")
    model = os.path.abspath(os.path.expanduser(args.model))
    shape = None
    if args.pooling_shape:
        shape = list(parse_shape(args.pooling_shape))
    elif (config := read_config(model)) and config.get("pooling_shape"):
        shape = list(parse_shape(config["pooling_shape"], f"{model}/config.json pooling_shape"))
    return PllavaSettings(model=model, max_new_tokens=args.max_new_tokens, pooling_shape=shape,
                          lora_alpha=float(args.lora_alpha), frame_fit=args.frame_fit, dtype=args.dtype,
                          attn=args.attn, device=args.device, tp_size=args.tp_size, tp_backend=args.tp_backend)
