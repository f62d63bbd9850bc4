"""`vidcap check-captions`: flag broken captions (loops, prompt echoes, cut-offs, ...) in any caption file."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidcap.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-captions", help="flag broken captions in a CSV/Parquet file (adds a `flags` column), streaming",
        description="Run the caption checks on every caption of a CSV or Parquet file from any captioner "
                    "(vidcap, Open-Sora, ...) and write it back with a `flags` column (list in Parquet, "
                    "comma-separated in CSV; empty when the caption passed). Prints the rows per flag. "
                    "Streams in batches: memory stays flat however many rows.")
    p.add_argument("input", metavar="IN", help="CSV or Parquet file with a caption column")
    p.add_argument("--output", "-o", required=True, help="OUT.csv or OUT.parquet")
    p.add_argument("--text-column", default="text", help="the caption column (default: text)")
    p.add_argument("--media", choices=["video", "image", "unknown"], default="video",
                   help="what was captioned, for wrong_medium (default: video; unknown skips that check)")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="NAME", help="the vidcap prompt preset the captions were made with, "
                        "for prompt_echo")
    prompt.add_argument("--prompt-file", metavar="PATH", help="a file holding the prompt, for prompt_echo")
    p.add_argument("--system-file", metavar="PATH", help="a file holding the system text the model saw "
                   "(e.g. PLLaVA's system prompt), for prompt_echo")
    p.add_argument("--finish-column", metavar="COL", help="column of the engine's finish reason; 'length' "
                   "means truncated")
    p.add_argument("--tokens-column", metavar="COL", help="column of generated token counts; with "
                   "--max-new-tokens, a count at the limit means truncated")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="the generation limit the captions were made with")
    p.add_argument("--drop-flagged", nargs="?", const="all", metavar="FLAGS",
                   help="write only the rows without a flag (a clean file), or without the comma-separated FLAGS")
    p.add_argument("--workers", type=int, default=1, help="processes checking batches side by side (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from vidcap.checks import add_check_arguments

    add_check_arguments(p)
    p.set_defaults(func=cmd_check_captions)


def _read_text(path: str, what: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {what} file {path}: {exc}") from None
    if not text:
        raise UserError(f"{what} file {path} is empty")
    return text


def cmd_check_captions(args: argparse.Namespace) -> int:
    from vidcap.checks import CheckContext, settings_from_args
    from vidcap.checks.table import Columns, check_file, format_counts
    from vidcap.prompts import PRESETS

    settings = settings_from_args(args)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    if args.tokens_column and args.max_new_tokens is None:
        raise UserError("--tokens-column needs --max-new-tokens (the limit the counts are compared with)")
    prompt = ""
    if args.prompt:
        if args.prompt not in PRESETS:
            raise UserError(f"unknown prompt {args.prompt!r} (choose from {', '.join(PRESETS)}, or use --prompt-file)")
        prompt = PRESETS[args.prompt].text
    elif args.prompt_file:
        prompt = _read_text(args.prompt_file, "prompt")
    system = _read_text(args.system_file, "system") if args.system_file else ""
    context = CheckContext(prompt=prompt, system=system,
                           is_video={"video": True, "image": False}.get(args.media),
                           max_new_tokens=args.max_new_tokens)
    columns = Columns(text=args.text_column, finish_reason=args.finish_column,
                      generated_tokens=args.tokens_column)
    from vidcap.checks import parse_checks

    drop = parse_checks(args.drop_flagged, option="--drop-flagged") if args.drop_flagged else ()
    counts = check_file(args.input, args.output, settings, columns, context, progress=not args.quiet,
                        drop_flags=frozenset(drop), workers=args.workers)
    print(format_counts(counts, settings.checks))
    silent = []
    if "prompt_echo" in settings.checks and not (prompt or system):
        silent.append("prompt_echo (no --prompt/--prompt-file/--system-file)")
    if "truncated" in settings.checks and not (args.finish_column or args.tokens_column):
        silent.append("truncated (no --finish-column or --tokens-column)")
    if "wrong_medium" in settings.checks and context.is_video is None:
        silent.append("wrong_medium (--media unknown)")
    if silent:
        print(f"not checked, for want of context: {'; '.join(silent)}")
    print(f"-> {args.output}")
    return 0
