"""`vidcap motion-relabel OUT --threshold T`: re-threshold camera-motion labels from the stored numbers."""

from __future__ import annotations

import argparse

from vidcap.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "motion-relabel", help="recompute cmotion labels of a motion output at another threshold, without rerunning",
        description="Rewrite the cmotion column of a motion output (CSV or Parquet) from its numbers "
                    "(cmotion_dx, cmotion_dy, cmotion_zoom) at a new threshold; every other column is kept. "
                    "Formula: pan when |dx| > T, tilt when |dy| > T, zoom_in when (zoom - 1) / 2 > T, zoom_out "
                    "when (1 / zoom - 1) / 2 > T; see vidcap.motion.labels.")
    parser.add_argument("output", help="the motion output file (.csv or .parquet) to relabel")
    parser.add_argument("--threshold", type=float, required=True, metavar="T",
                        help="fraction of the short side the scene must move first -> last (Open-Sora's default 0.25)")
    parser.add_argument("--to", default=None, metavar="FILE",
                        help="write the relabelled file here instead of replacing OUTPUT")
    parser.set_defaults(func=relabel_handler)


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
