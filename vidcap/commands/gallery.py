"""`vidcap gallery` and `vidcap report`: static pages to look at a run's results, offline."""

from __future__ import annotations

import argparse

from vidcap.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gallery", help="static review page (frames the model saw, captions, errors, tags) in a folder")
    p.add_argument("source", metavar="RUN_OR_OUTPUT", help="run folder, or an output CSV/Parquet file")
    p.add_argument("--out", required=True, help="folder to write (index.html opens from disk, no server)")
    p.add_argument("--sample", type=int, help="show a random sample of this many rows (after --where)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    p.add_argument("--where", action="append", default=[], metavar="COL=VALUE",
                   help="keep rows where COL=VALUE (or COL!=VALUE; a list column: holds VALUE); repeat to AND")
    p.add_argument("--key", help="key column of an output file (default: the run's key, else path)")
    p.add_argument("--run", help="run whose frame settings apply to an output file (default: found beside it)")
    p.add_argument("--data-root", help="folder that relative paths start from (default: as the run resolves them)")
    p.add_argument("--num-frames", type=int, help="override the frames per video (default: the run's)")
    p.add_argument("--resize", type=int, help="override the short side in pixels, 0 for none (default: the run's)")
    p.add_argument("--backend", choices=["pyav", "decord"], help="override the video reader (default: the run's)")
    p.add_argument("--readers", type=int, help="frame-reading processes (default: CPUs, at most 8; 0: inline)")
    p.add_argument("--chunk-rows", type=int, default=500, help="rows per data chunk the page loads (default 500)")
    p.add_argument("--page-size", type=int, default=48, help="cards per page at first (default 48)")
    p.add_argument("--thumb-height", type=int, default=112, help="thumbnail height in pixels (default 112)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser("report", help="HTML report with charts: throughput, statuses, errors, tokens, cost, tags")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", required=True, help="folder to write (index.html and PNG charts)")
    p.set_defaults(func=cmd_report)


def _overrides(args: argparse.Namespace) -> dict:
    """Frame settings given on the command line, over the ones the source's run froze."""
    if args.num_frames is not None and args.num_frames < 1:
        raise UserError(f"--num-frames must be at least 1, got {args.num_frames}")
    if args.resize is not None and args.resize < 0:
        raise UserError(f"--resize must be 0 or a positive short side, got {args.resize}")
    given = {"num_frames": args.num_frames, "resize": args.resize, "backend": args.backend}
    return {k: (v or None if k == "resize" else v) for k, v in given.items() if v is not None}


def cmd_gallery(args: argparse.Namespace) -> int:
    from vidcap.gallery import build_gallery

    if args.readers is not None and args.readers < 0:
        raise UserError(f"--readers must be 0 or more, got {args.readers}")
    result = build_gallery(
        args.source, args.out, where=args.where, sample=args.sample, seed=args.seed, key=args.key, run=args.run,
        data_root=args.data_root, overrides=_overrides(args), readers=args.readers, chunk_rows=args.chunk_rows,
        page_size=args.page_size, thumb_height=args.thumb_height, progress=not args.no_progress)
    print(f"{result.rows} rows ({result.videos} videos read, {result.unreadable} unreadable, "
          f"{result.thumbnails} thumbnails, {result.chunks} chunks) in {result.seconds:.1f} s -> "
          f"{result.out}/index.html")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vidcap.report import build_report
    from vidcap.run import RunDir

    result = build_report(RunDir.at(args.run), args.out)
    print(f"{len(result.charts)} charts -> {result.out}/index.html")
    return 0
