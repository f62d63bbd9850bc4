"""`vidcap submit`, `vidcap caption`, `vidcap run-shard`: from a manifest to captions.

The run flow itself (split, freeze, submit, wait, merge) is shared by every task: vidcap.commands.runflow.
"""

from __future__ import annotations

import argparse
import sys

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow loads in the handlers: every `vidcap` command imports this module
    import pyarrow as pa

from vidcap.commands.runflow import (
    add_engine_arguments, add_media_arguments, add_run_arguments, default_batch_size, engine_settings_from_args,
    run_task, source_settings_from_args, submit_task,
)
from vidcap.errors import UserError
from vidcap.run import RunDir

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="split (if new), freeze the captioning job, and run every unfinished shard")
    add_caption_arguments(p, one_shot=False)
    p.add_argument("--prepare-only", action="store_true",
                   help="split and freeze the job, submit nothing (for plain sbatch: slurm/caption_array.sbatch)")
    p.set_defaults(func=lambda args: submit_task(args, caption_spec))

    p = sub.add_parser("caption", help="one shot: submit, wait, merge to --output, print what is left")
    add_caption_arguments(p, one_shot=True)
    p.set_defaults(func=lambda args: run_task(args, caption_spec, done_word="captioned"))

    p = sub.add_parser("run-shard", help="run one shard of a run, whatever its task (what each array task runs)")
    p.add_argument("run", help="run folder")
    p.add_argument("index", type=int, help="shard index (e.g. $SLURM_ARRAY_TASK_ID)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run_shard)


def add_caption_arguments(p: argparse.ArgumentParser, one_shot: bool) -> None:
    add_run_arguments(p, one_shot=one_shot)
    add_engine_arguments(p, default=None)  # chosen from --model's config when not given (caption_spec)
    g = p.add_argument_group("prompt")
    g.add_argument("--prompt", default=None, help="preset name (video, image, image-3ex, ...)")
    g.add_argument("--prompt-file", default=None, help="file holding the prompt text")
    add_media_arguments(p)
    from vidcap.checks import add_check_arguments

    add_check_arguments(p)
    p.add_argument("--on-flag", choices=["keep", "retry"], default="keep",
                   help="what a caption check's flag does: keep (row ok, flags in the `flags` column; default) or "
                        "retry (row is an error 'flagged: loop', retried by `vidcap resume` up to --max-attempts)")


def data_is_video(args: argparse.Namespace, manifest_table: pa.Table) -> bool:
    """A run captions videos unless the first readable files are all images, by their content."""
    import pyarrow as pa

    from vidcap.sources.frames import resolve_paths, sample_is_video

    column = manifest_table.column(args.path_column).slice(0, 200).cast(pa.string()).to_pylist()
    return sample_is_video(resolve_paths([p for p in column if p], args.data_root, args.manifest))


def caption_spec(args: argparse.Namespace, manifest: pa.Table):  # -> TaskSpec
    from vidcap.prompts import resolve_prompt
    from vidcap.tasks.caption import CaptionSettings
    from vidcap.tasks.spec import TaskSpec

    from vidcap.engines.pllava_cli import choose_engine

    args.engine = choose_engine(args.engine, args.model)
    if args.path_column not in manifest.column_names:
        raise UserError(f"{args.manifest}: no {args.path_column!r} column: vidcap reads each video from the "
                        f"{args.path_column!r} column")
    is_video = data_is_video(args, manifest)
    prompt = resolve_prompt(args.prompt, args.prompt_file, is_video=is_video)
    if args.num_frames < 1:
        raise UserError("--num-frames must be at least 1")
    batch_size = default_batch_size(args)
    from vidcap.checks import settings_from_args

    settings = CaptionSettings(prompt_name=prompt.name, prompt=prompt.text, num_frames=args.num_frames,
                               resize=args.resize or None, is_video=is_video, checks=settings_from_args(args),
                               on_flag=args.on_flag)
    return TaskSpec(task="caption", settings=settings, engine=args.engine,
                    engine_settings=engine_settings_from_args(args),
                    source=source_settings_from_args(args, batch_size),
                    batch_size=batch_size, max_attempts=args.max_attempts)


def cmd_run_shard(args: argparse.Namespace) -> int:
    from vidcap.scheduler.placement import run_here

    run = RunDir.at(args.run)
    if not 0 <= args.index < run.num_shards:
        raise UserError(f"{run.root}: no shard {args.index} (shards are 0..{run.num_shards - 1})")
    outcome = run_here(run, [args.index], progress=not args.no_progress)[0]
    s = outcome.stats
    state = "done" if outcome.finished else "stopped early (a rerun continues)"
    print(f"shard {args.index}: {state}: {s.get('rows_ok', 0)} ok, {s.get('rows_error', 0)} error, "
          f"{s.get('videos_per_s', 0):.2f} rows/s", file=sys.stderr)
    return 0 if outcome.finished else 143
