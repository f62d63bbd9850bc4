"""Count the tags of an output file and show the top ones: a terminal table, a bar chart PNG, a counts CSV.

Counting streams the file in record batches (Parquet row groups, CSV blocks) and keeps only one count per
distinct tag, so memory does not grow with the number of rows: 10M rows take what 100k rows take, plus the
tag vocabulary. Parquet tag columns are list<string>; CSV ones are comma-separated text, as `vidcap merge`
writes them. Rows without an answer (a `status` other than ok where the file has that column, else a null tag column:
errors, skipped rows, rows not yet done) are counted apart and their tags, if any, are not counted.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from vidcap.errors import UserError
from vidcap.manifest.io import file_columns, iter_batches

#: chart geometry: fixed width, one bar row per tag, so the PNG's size is known from the number of tags
CHART_WIDTH_PX = 1200
CHART_DPI = 100
BAR_ROW_PX = 24
CHART_MARGIN_PX = 110  # title, axis and padding above and below the bars
LABEL_CHARS = 48  # longer tags are shortened with an ellipsis in the chart (the table and CSV keep them whole)


@dataclass
class TagCounts:
    """Counts over one file: per tag, and how many rows had tags, an empty list, or nothing (null)."""

    key: str
    counts: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    rows_tagged: int = 0
    rows_empty: int = 0
    rows_null: int = 0

    def top(self, n: int) -> list[tuple[str, int]]:
        """The `n` most frequent tags, ties broken by name so the order is stable."""
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))[:n]

    @property
    def total_tags(self) -> int:
        return sum(self.counts.values())


def count_tags(path: str | os.PathLike[str], key: str, batch_rows: int = 1 << 16) -> TagCounts:
    """Stream `path` and count the tags in column `key`."""
    names = file_columns(path)
    if key not in names:
        raise UserError(f"{path}: no column {key!r} (columns: {', '.join(names) or 'none'}); "
                        f"was it written by `vidcap tag --key {key}`?")
    result = TagCounts(key=key)
    columns = [key, "status"] if "status" in names and key != "status" else [key]
    for batch in iter_batches(path, columns=columns, batch_rows=batch_rows):
        column = batch.column(batch.schema.get_field_index(key))
        if len(columns) == 2:
            answered = pc.fill_null(pc.equal(batch.column(batch.schema.get_field_index("status")), "ok"), False)
            unanswered = len(column) - int(pc.sum(answered).as_py() or 0)
            result.rows += unanswered
            result.rows_null += unanswered
            column = pc.filter(column, answered)
        _add(result, column, path)
    return result


def _add(result: TagCounts, column: pa.Array, path: str | os.PathLike[str]) -> None:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        stripped = pc.utf8_trim_whitespace(column)
        lists = pc.split_pattern(stripped, ",")
        empty = pc.equal(stripped, "")
    elif pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        lists = column
        empty = pc.equal(pc.list_value_length(column), 0)
    elif pa.types.is_null(column.type):
        result.rows += len(column)
        result.rows_null += len(column)
        return
    else:
        raise UserError(f"{path}: column {result.key!r} holds {column.type}, not tags (a list of strings or "
                        "comma-separated text)")
    nulls = column.null_count
    empties = int(pc.sum(empty).as_py() or 0)
    result.rows += len(column)
    result.rows_null += nulls
    result.rows_empty += empties
    result.rows_tagged += len(column) - nulls - empties
    tags = pc.utf8_trim_whitespace(pc.cast(pc.list_flatten(lists), pa.string()))
    tags = pc.filter(tags, pc.not_equal(tags, ""))
    if len(tags):
        counted = pc.value_counts(tags)
        result.counts.update(dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())))


# -- outputs ---------------------------------------------------------------------------------------
def table_lines(result: TagCounts, top: int) -> list[str]:
    """The terminal table: rank, tag, count, share of rows that have the tag."""
    rows = result.top(top)
    lines = [f"{result.key}: {len(result.counts)} distinct tags, {result.total_tags} in all, over {result.rows} rows "
             f"({result.rows_tagged} tagged, {result.rows_empty} with none, {result.rows_null} without an answer)"]
    if not rows:
        return lines + ["no tags to show"]
    width = min(max(len(tag) for tag, _ in rows), 60)
    digits = max(len(f"{count:,}") for _, count in rows)
    lines.append(f"{'#':>4}  {'tag':<{width}}  {'count':>{digits}}  rows %")
    for rank, (tag, count) in enumerate(rows, 1):
        share = 100.0 * count / result.rows if result.rows else 0.0
        lines.append(f"{rank:>4}  {_shorten(tag, width):<{width}}  {count:>{digits},}  {share:6.2f}")
    if len(result.counts) > top:
        lines.append(f"      ... {len(result.counts) - top} more (--top N to show more, --csv to write them all)")
    return lines


def write_counts_csv(result: TagCounts, path: str | os.PathLike[str]) -> None:
    """Every tag with its count and share of rows, most frequent first; written whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["tag", "count", "rows_percent"])
            for tag, count in result.top(len(result.counts)):
                writer.writerow([tag, count, f"{100.0 * count / result.rows:.4f}" if result.rows else "0"])
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"--csv {path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def chart_size(bars: int) -> tuple[int, int]:
    """The PNG's (width, height) in pixels for a chart of `bars` tags."""
    return CHART_WIDTH_PX, CHART_MARGIN_PX + BAR_ROW_PX * max(bars, 1)


def draw_chart(result: TagCounts, path: str | os.PathLike[str], top: int, title: str = "") -> tuple[int, int]:
    """A horizontal bar chart of the top tags, most frequent at the top, each bar labelled with its count.

    The figure has a fixed size (`chart_size`); the tag labels' room on the left is measured from the
    rendered text, so no label is cut off however long (up to LABEL_CHARS). Returns the PNG's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.top(top)
    width_px, height_px = chart_size(len(rows))
    fig = plt.figure(figsize=(width_px / CHART_DPI, height_px / CHART_DPI), dpi=CHART_DPI)
    try:
        ax = fig.add_subplot()
        labels = [_shorten(tag, LABEL_CHARS) for tag, _ in rows][::-1]
        counts = [count for _, count in rows][::-1]
        bars = ax.barh(range(len(rows)), counts, color="#4c72b0", height=0.75)
        ax.set_yticks(range(len(rows)), labels)
        ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3, fontsize=9)
        ax.set_ylim(-0.6, max(len(rows), 1) - 0.4)
        ax.set_xlim(0, (max(counts) if counts else 1) * 1.12)  # room for the count after the longest bar
        ax.set_xlabel("rows")
        ax.spines[["top", "right"]].set_visible(False)
        ax.set_title(title or f"top {len(rows)} {result.key} of {result.rows:,} rows ({len(result.counts):,} distinct)")
        _fit_labels(fig, ax, width_px, height_px)
        _save(fig, path)
    finally:
        plt.close(fig)
    return width_px, height_px


def _fit_labels(fig, ax, width_px: int, height_px: int) -> None:  # noqa: ANN001 - matplotlib objects
    """Leave exactly the room the widest tick label needs on the left, and the title's on top."""
    renderer = fig.canvas.get_renderer()
    widest = max((t.get_window_extent(renderer).width for t in ax.get_yticklabels()), default=0.0)
    left = min(0.6, (widest + 24) / width_px)
    fig.subplots_adjust(left=left, right=0.97, top=1 - 50 / height_px, bottom=60 / height_px)


def _save(fig, path: str | os.PathLike[str]) -> None:  # noqa: ANN001
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=CHART_DPI, format="png")
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"--png {path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"

