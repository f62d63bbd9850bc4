"""`vidcap split`, `vidcap merge`, `vidcap remaining`: manifests in, shards and reduced tables out."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidcap.errors import UserError
from vidcap.run import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="cut a manifest into shards inside a run folder")
    p.add_argument("manifest", help="CSV or Parquet manifest with a `path` column")
    p.add_argument("--run", required=True, help="run folder to create (or check)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--shards", type=int, help="number of shards")
    size.add_argument("--rows-per-shard", type=int, help="rows per shard (the last ones may have one less)")
    add_key_options(p)
    p.add_argument("--force", action="store_true", help="split again even if the run was split differently "
                   "(the old split and its results are moved to RUN/previous/)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("merge", help="merge results: a run folder, or Open-Sora part files")
    p.add_argument("inputs", nargs="+", metavar="RUN|PART", help="a run folder, or CSV/Parquet part files")
    p.add_argument("--output", "-o", required=True, help="OUT.csv or OUT.parquet")
    p.add_argument("--key", default="path", help="key column of part files (default: path)")
    p.add_argument("--caption-column", default="text", help="name of the caption column (run form)")
    p.add_argument("--drop-flagged", nargs="?", const="all", metavar="FLAGS",
                   help="leave out rows whose caption checks raised a flag (run form): any flag, or only the "
                        "comma-separated FLAGS (e.g. loop,empty)")
    p.add_argument("--remaining", nargs=2, metavar=("MANIFEST", "OUT"),
                   help="part form: also write MANIFEST's rows not done in the merge to OUT (one pass: the same "
                        "as `vidcap remaining MANIFEST --done MERGED -o OUT`, without reading MERGED back)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("remaining", help="rows not yet captioned: of a run, or of MANIFEST given --done")
    p.add_argument("source", metavar="RUN|MANIFEST")
    p.add_argument("--done", nargs="+", help="merged/part files whose ok rows count as done (manifest form)")
    p.add_argument("--output", "-o", required=True, help="OUT.csv or OUT.parquet")
    p.add_argument("--key", default="path", help="key column (manifest form; default: path)")
    p.add_argument("--max-attempts", type=int, help="leave out rows that already failed this many times")
    p.set_defaults(func=cmd_remaining)


def add_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", default="path", help="column that names each row uniquely (default: path)")
    p.add_argument("--dedup", choices=["first"], help="keep the first of duplicate keys instead of refusing")


def is_run(path: str) -> bool:
    return RunDir.at(path).exists()


def cmd_split(args: argparse.Namespace) -> int:
    from vidcap.manifest.split import split

    result = split(args.manifest, RunDir.at(args.run), shards=args.shards, rows_per_shard=args.rows_per_shard,
                   key=args.key, dedup=args.dedup, force=args.force)
    sizes = result.shard_sizes
    verb = "already split into" if result.reused else "split into"
    print(f"{args.run}: {result.rows} rows {verb} {len(sizes)} shards of {min(sizes)}-{max(sizes)} rows")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    if len(args.inputs) == 1 and is_run(args.inputs[0]):
        from vidcap.manifest.reduce_run import merge_run

        drop = ()
        if args.drop_flagged:
            from vidcap.checks import parse_checks

            drop = parse_checks(args.drop_flagged, option="--drop-flagged")
        if args.remaining:
            raise UserError("--remaining is for part files; for a run folder: vidcap remaining RUN -o OUT")
        counts = merge_run(RunDir.at(args.inputs[0]), args.output, caption_column=args.caption_column,
                           drop_flags=drop)
        dropped = f"; {counts.dropped} flagged rows left out" if drop else ""
        print(f"{args.output}: {counts.written} rows: {counts.ok} ok, {counts.error} error, "
              f"{counts.skipped} skipped, {counts.pending} not yet run{dropped}")
        return 0
    if args.drop_flagged:
        raise UserError("--drop-flagged needs a run folder; for other files: vidcap check-captions IN --output OUT "
                        "--drop-flagged")
    for path in args.inputs:
        if Path(path).is_dir():
            raise UserError(f"{path}: a folder but not a run folder (no config.json)")
    from vidcap.manifest.reduce_parts import merge_and_remaining, merge_parts

    if args.remaining:
        manifest, rest_output = args.remaining
        counts, rest = merge_and_remaining(args.inputs, args.output, manifest, rest_output, key=args.key)
    else:
        counts = merge_parts(args.inputs, args.output, key=args.key)
    print(f"{args.output}: {counts.written} rows from {len(args.inputs)} parts")
    if args.remaining:
        print(f"{rest_output}: {rest.written} of {rest.rows} rows remaining")
    return 0


def cmd_remaining(args: argparse.Namespace) -> int:
    if is_run(args.source):
        if args.done:
            raise UserError(f"{args.source} is a run folder: --done is for the MANIFEST form")
        from vidcap.manifest.reduce_run import remaining_run

        counts = remaining_run(RunDir.at(args.source), args.output, max_attempts=args.max_attempts)
        gave_up = (f"; {counts.given_up} rows left out after failing {args.max_attempts} times"
                   if args.max_attempts is not None else "")
        print(f"{args.output}: {counts.written} of {counts.rows} rows remaining "
              f"({counts.error} failed, {counts.pending} not yet run){gave_up}")
        return 0
    if not args.done:
        if Path(args.source).is_dir():
            raise UserError(f"{args.source}: a folder but not a run folder (no config.json)")
        raise UserError(f"{args.source} is a manifest: name what is done with --done DONE")
    if args.max_attempts is not None:
        raise UserError("--max-attempts needs a run folder (it counts the run's failed attempts)")
    from vidcap.manifest.reduce_parts import remaining_from_done

    counts = remaining_from_done(args.source, args.done, args.output, key=args.key)
    print(f"{args.output}: {counts.written} of {counts.rows} rows remaining")
    return 0
