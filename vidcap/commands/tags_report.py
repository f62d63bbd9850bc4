"""`vidcap tags-report`: how often each tag occurs in an output of `vidcap tag`, as a table, a chart, a CSV."""

from __future__ import annotations

import argparse

from vidcap.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tags-report",
        help="count the tags of a `vidcap tag` output: terminal table, bar chart PNG, counts CSV",
        description="Count every tag in column --key of OUT (CSV or Parquet, streamed in batches: memory stays "
                    "flat however many rows), print the top ones, and optionally draw them as a bar chart and "
                    "write all counts to a CSV.",
    )
    parser.add_argument("output", metavar="OUT", help="a file written by `vidcap tag` (or `vidcap merge`)")
    parser.add_argument("--key", default="objects", help="the tag column to count (default: objects)")
    parser.add_argument("--top", type=int, default=50, help="how many tags to show and chart (default: 50)")
    parser.add_argument("--png", metavar="CHART.png", help="draw a bar chart of the top tags to this PNG")
    parser.add_argument("--csv", metavar="COUNTS.csv", help="write every tag with its count to this CSV")
    parser.add_argument("--title", default="", help="chart title (default: what was counted)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vidcap.tags.report import count_tags, draw_chart, table_lines, write_counts_csv

    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    if args.png and not args.png.lower().endswith(".png"):
        raise UserError(f"--png {args.png}: the chart is a PNG, name it *.png")
    result = count_tags(args.output, args.key)
    print("\n".join(table_lines(result, args.top)))
    if args.csv:
        write_counts_csv(result, args.csv)
        print(f"counts of {len(result.counts)} tags written to {args.csv}")
    if args.png:
        width, height = draw_chart(result, args.png, args.top, args.title)
        print(f"chart of the top {min(args.top, len(result.counts))} written to {args.png} ({width}x{height})")
    return 0
