"""`vidcap tag`: draw tags (objects, actions) from a text column, such as the captions `vidcap caption` wrote.

The shared run flow (vidcap.commands.runflow) with the tag task. `--key` names the tag key, as in Open-Sora
(`--key objects`); the row key column, `--key` elsewhere, is `--row-key` here.
"""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow loads in the handlers: every `vidcap` command imports this module
    import pyarrow as pa

from vidcap.commands.runflow import (
    add_engine_arguments, add_run_arguments, default_batch_size, engine_settings_from_args, run_task,
    source_settings_from_args,
)
from vidcap.errors import UserError

ENGINE_NAMES = {"hf": "hf-text", "hf-text": "hf-text", "openai": "openai"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tag", conflict_handler="resolve",
        help="one shot: draw objects/actions tags from a text column with a chat LLM or an API, merge to --output",
        description="Ask a chat model (Hugging Face, default meta-llama/Meta-Llama-3-8B-Instruct; or an "
                    "OpenAI-compatible API) for the objects or actions in each row's text, on the local "
                    "executor or a Slurm array, and write every input column plus one list column per key.",
    )
    add_run_arguments(p, one_shot=True)
    add_engine_arguments(p, default="hf")
    # the tag command's own meaning of --key and --output (conflict_handler="resolve" replaces the shared ones)
    p.add_argument("--key", dest="tag_keys", action="append", choices=("objects", "actions"),
                   help="tags to draw: objects or actions; give it twice for both columns in one run "
                        "(default: objects)")
    p.add_argument("--row-key", dest="key", default="path", help="column naming each row uniquely (default: path)")
    p.add_argument("--output", "-o", help="OUT.csv or OUT.parquet (or use --output-prefix)")
    p.add_argument("--output-prefix", metavar="P", help="write P_objects.csv (P_objects_actions.csv for both keys), "
                                                         "as Open-Sora does")
    g = p.add_argument_group("tags")
    g.add_argument("--text-column", default="text", help="column holding each row's text (default: text)")
    g.add_argument("--prompt-file", help="your own instruction; `{text}` marks where the caption goes "
                                         "(else it is appended)")
    p.set_defaults(func=cmd_tag, max_new_tokens=128)


def cmd_tag(args: argparse.Namespace) -> int:
    from vidcap.tags.prompts import check_keys

    args.tag_keys = check_keys(args.tag_keys or ["objects"])
    if bool(args.output) == bool(args.output_prefix):
        raise UserError("give either --output OUT or --output-prefix P")
    if args.output_prefix:
        args.output = f"{args.output_prefix}_{'_'.join(args.tag_keys)}.csv"
    if args.engine not in ENGINE_NAMES:
        raise UserError(f"--engine {args.engine}: the tag task runs on hf (a chat LLM) or openai (an API)")
    return run_task(args, tag_spec, done_word="tagged")


def tag_spec(args: argparse.Namespace, manifest: pa.Table):  # -> TaskSpec
    from vidcap.engines.hf_text import DEFAULT_MODEL, HFTextSettings
    from vidcap.tags.prompts import instruction
    from vidcap.tasks.spec import TaskSpec
    from vidcap.tasks.tag import TagSettings

    if args.text_column not in manifest.column_names:
        raise UserError(f"{args.manifest}: no {args.text_column!r} column to draw tags from (columns: "
                        f"{', '.join(manifest.column_names)}); name it with --text-column")
    engine = ENGINE_NAMES[args.engine]
    if engine == "hf-text":
        if args.tp_size < 1:
            raise UserError("--tp-size must be at least 1")
        engine_settings = HFTextSettings(model=args.model or DEFAULT_MODEL, max_new_tokens=args.max_new_tokens,
                                         dtype=args.dtype, attn=args.attn, device=args.device, tp_size=args.tp_size,
                                         tp_backend=args.tp_backend)
    else:
        engine_settings = engine_settings_from_args(args)
    settings = TagSettings(keys=args.tag_keys, prompt=instruction(args.tag_keys, args.prompt_file),
                           prompt_name="file" if args.prompt_file else "built-in", text_column=args.text_column)
    batch_size = default_batch_size(args)
    return TaskSpec(task="tag", settings=settings, engine=engine, engine_settings=engine_settings,
                    source=source_settings_from_args(args, batch_size), batch_size=batch_size,
                    max_attempts=args.max_attempts)
