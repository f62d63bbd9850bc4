"""`vidcap motion MANIFEST --output OUT`: camera-motion labels (Open-Sora's `cmotion`) on the shared run
machinery; `vidcap motion-relabel OUT --threshold T`: re-threshold them from the stored numbers."""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyarrow loads in the handlers: every `vidcap` command imports this module
    import pyarrow as pa

from vidcap.commands.runflow import add_run_arguments, run_task, source_settings_from_args
from vidcap.errors import UserError

DEFAULT_BATCH = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "motion", help="label each video's camera motion (pan, tilt, zoom, static, unclassified) on CPUs",
        description="Track points from each video's first frame to its last through the frames between and "
                    "label the camera motion as Open-Sora does (cmotion: pan_left/right, tilt_up/down, "
                    "zoom_in/out, joined with '+', or static / unclassified), with the measured numbers "
                    "(cmotion_dx, cmotion_dy, cmotion_zoom, cmotion_points, cmotion_confidence). Same runs, "
                    "shards, status, resume and merge as captions; Slurm arrays need CPUs only.")
    add_run_arguments(p, one_shot=True)
    g = p.add_argument_group("motion")
    g.add_argument("--threshold", type=float, default=0.25, metavar="T",
                   help="fraction of the short side the scene must move first -> last to count (default 0.25)")
    g.add_argument("--steps", type=int, default=12, help="frame pairs tracked from the first frame to the last")
    g.add_argument("--short-side", type=int, default=240, help="frames are tracked at this short side (pixels)")
    g = p.add_argument_group("frames")
    g.add_argument("--backend", choices=["pyav", "decord"], default="pyav", help="video decoder")
    g.add_argument("--path-column", default="path", help="column naming each row's video file")
    g.add_argument("--readers", type=int, default=1, help="frame-reading processes (0: read in the worker)")
    g.add_argument("--ahead", type=int, default=16, help="videos read ahead of the tracker at most")
    p.set_defaults(func=lambda args: run_task(args, motion_spec, done_word="labelled"), engine="motion")

    p = sub.add_parser(
        "motion-relabel", help="recompute cmotion labels of a motion output at another threshold, without rerunning",
        description="Rewrite the cmotion column of a motion output (CSV or Parquet) from its numbers "
                    "(cmotion_dx, cmotion_dy, cmotion_zoom) at a new threshold; every other column is kept. "
                    "Formula: pan when |dx| > T, tilt when |dy| > T, zoom_in when (zoom - 1) / 2 > T, zoom_out "
                    "when (1 / zoom - 1) / 2 > T; see vidcap.motion.labels.")
    p.add_argument("output", help="the motion output file (.csv or .parquet) to relabel")
    p.add_argument("--threshold", type=float, required=True, metavar="T",
                   help="fraction of the short side the scene must move first -> last (Open-Sora's default 0.25)")
    p.add_argument("--to", default=None, metavar="FILE",
                   help="write the relabelled file here instead of replacing OUTPUT")
    p.set_defaults(func=relabel_handler)


def motion_spec(args: argparse.Namespace, manifest: pa.Table):  # -> TaskSpec
    from vidcap.engines.motion import MotionEngineSettings
    from vidcap.tasks.motion import MotionTaskSettings
    from vidcap.tasks.spec import TaskSpec

    if args.path_column not in manifest.column_names:
        raise UserError(f"{args.manifest}: no {args.path_column!r} column: the motion task reads each video from it")
    batch_size = DEFAULT_BATCH if args.batch_size is None else args.batch_size
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    settings = MotionTaskSettings(steps=args.steps, short_side=args.short_side, threshold=args.threshold)
    return TaskSpec(task="motion", settings=settings, engine="motion", engine_settings=MotionEngineSettings(),
                    source=source_settings_from_args(args, batch_size), batch_size=batch_size,
                    max_attempts=args.max_attempts)


def relabel_handler(args: argparse.Namespace) -> int:
    from vidcap.motion.relabel import relabel_file

    if not args.threshold > 0:
        raise UserError(f"--threshold must be a positive fraction of the short side, got {args.threshold}")
    counts = relabel_file(args.output, args.threshold, args.to)
    total = sum(counts.values())
    print(f"relabelled {args.to or args.output} at threshold {args.threshold:g}: {total} labelled rows")
    for label, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {label:<32} {count:>9}")
    return 0
