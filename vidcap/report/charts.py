"""The report's charts: one function each, drawing from RunFacts into a PNG of a fixed size.

A chart whose data the run does not have (no errors, no tokens, no tags) is not drawn; the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from vidcap.report.facts import RunFacts

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 3.6, 100  # every chart is 800 x 360 pixels
MAX_LINES = 12  # per-shard lines beyond this are grouped by worker (host) or into "other shards"
TOP = 15
COLOURS = {"ok": "#1b7f3b", "error": "#b3261e", "skipped": "#8a6d00", "pending": "#5f6368"}


@dataclass
class Chart:
    name: str
    file: str
    title: str
    width: int
    height: int


def _figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained", squeeze=False)
    return fig, list(axes[0])


def _save(fig, out: Path, name: str, title: str) -> Chart:  # noqa: ANN001
    import matplotlib.pyplot as plt

    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI)  # no bbox_inches="tight": every chart keeps its stated size
    plt.close(fig)
    return Chart(name, path.name, title, int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI))


def _time_unit(span: float) -> tuple[float, str]:
    if span > 3 * 3600:
        return 3600.0, "hours"
    if span > 3 * 60:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _groups(facts: RunFacts, shards: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """A line per shard when few; else per worker host; else the busiest shards and the rest."""
    present = np.unique(shards)
    if len(present) <= MAX_LINES:
        return np.searchsorted(present, shards), [f"shard {s}" for s in present]
    hosts = [(facts.stats.get(int(s)) or {}).get("host", "?") for s in present]
    if 1 < len(set(hosts)) <= MAX_LINES:
        names = sorted(set(hosts))
        by_shard = np.array([names.index(h) for h in hosts])
        return by_shard[np.searchsorted(present, shards)], [f"host {h}" for h in names]
    counts = np.bincount(np.searchsorted(present, shards), minlength=len(present))
    busiest = present[np.argsort(-counts, kind="stable")[: MAX_LINES - 1]]
    lookup = np.full(len(present), len(busiest))
    lookup[np.searchsorted(present, busiest)] = np.arange(len(busiest))
    group = lookup[np.searchsorted(present, shards)]
    return group, [f"shard {s}" for s in busiest] + [f"{len(present) - len(busiest)} other shards"]


def throughput(facts: RunFacts, out: Path) -> Chart | None:
    """Left: rows written so far per shard (or worker) and in all, so each slope is a throughput.
    Right: rows per second of the whole run, binned over time."""
    at, shards = facts.times()
    if len(at) == 0:
        return None
    start = float(at.min())
    span = max(float(at.max()) - start, 1.0)
    unit, unit_name = _time_unit(span)
    fig, (left, right) = _figure(2)
    group, names = _groups(facts, shards)
    order = np.argsort(at, kind="stable")
    at, group = at[order], group[order]
    for g, name in enumerate(names):
        mine = at[group == g]
        left.step((np.concatenate([[start], mine]) - start) / unit, np.arange(len(mine) + 1), where="post",
                  linewidth=1.2, label=name)
    if len(names) > 1:
        left.step((np.concatenate([[start], at]) - start) / unit, np.arange(len(at) + 1), where="post",
                  color="black", linewidth=3, alpha=0.35, label="all")
    left.set_title("rows written so far", fontsize=9)
    left.set_xlabel(f"{unit_name} since the first row")
    left.legend(fontsize=7, ncol=2 if len(names) > 6 else 1, loc="upper left")
    bins = np.linspace(0.0, span, min(60, max(6, len(at) // 20)) + 1)
    counts, _ = np.histogram(at - start, bins)
    right.bar(bins[:-1] / unit, counts / (bins[1] - bins[0]), width=(bins[1] - bins[0]) / unit, align="edge",
              color="#4063b8")
    right.set_title(f"rows per second, all shards (mean {len(at) / span:.2f})", fontsize=9)
    right.set_xlabel(f"{unit_name} since the first row")
    for ax in (left, right):
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Throughput: {len(at):,} rows written over {span / unit:.1f} {unit_name}", fontsize=10)
    return _save(fig, out, "throughput", "Throughput over time, per shard or worker")


def statuses(facts: RunFacts, out: Path) -> Chart:
    counts = facts.status_counts()
    fig, (ax,) = _figure()
    names = list(counts)
    bars = ax.bar(names, [counts[n] for n in names], color=[COLOURS.get(n, "#888") for n in names])
    ax.bar_label(bars, labels=[f"{counts[n]:,}" for n in names], padding=2)
    retries = facts.written.num_rows - facts.final.num_rows
    ax.set_title(f"Rows by status ({facts.rows:,} in the manifest; {retries:,} earlier attempts superseded)")
    ax.set_ylabel("rows")
    ax.margins(y=0.15)
    return _save(fig, out, "statuses", "Rows by status")


def _hbars(ax, items: list[tuple[str, int]], colour: str, limit: int = 60) -> None:  # noqa: ANN001
    items = items[:TOP][::-1]
    labels = [name if len(name) <= limit else name[: limit - 1] + "…" for name, _ in items]
    bars = ax.barh(range(len(items)), [n for _, n in items], color=colour, height=0.6)
    ax.set_ylim(-0.6, max(len(items), 4) - 0.4)
    ax.set_yticks(range(len(items)), labels, fontsize=8)
    ax.bar_label(bars, labels=[f"{n:,}" for _, n in items], padding=2, fontsize=7)
    ax.margins(x=0.15)


def errors(facts: RunFacts, out: Path) -> Chart | None:
    reasons = facts.error_reasons()
    if not reasons:
        return None
    fig, (ax,) = _figure()
    _hbars(ax, reasons, COLOURS["error"], limit=70)
    more = f" (top {TOP} of {len(reasons)})" if len(reasons) > TOP else ""
    ax.set_title(f"Error reasons of the {sum(n for _, n in reasons):,} failed rows{more}")
    ax.set_xlabel("rows")
    return _save(fig, out, "errors", "Error reasons")


def tokens_cost(facts: RunFacts, out: Path) -> Chart | None:
    written = facts.written
    panels: list[tuple[str, Callable]] = []
    for column, title in (("prompt_tokens", "input tokens per request"), ("generated_tokens", "output tokens per row")):
        if column in written.column_names:
            values = np.asarray(written[column].fill_null(0).to_numpy(zero_copy_only=False), dtype=float)
            if values.sum() > 0:
                panels.append((title, lambda ax, v=values: ax.hist(v[v > 0], bins=30, color="#4063b8")))
    cost = facts.sum_written("cost_usd")
    if cost:
        at = written["written_at"].to_numpy(zero_copy_only=False) if "written_at" in written.column_names else None
        spent = np.asarray(written["cost_usd"].fill_null(0.0).to_numpy(zero_copy_only=False), dtype=float)
        if at is not None and not np.all(np.isnan(at.astype(float))):
            at = at.astype(float)
            order = np.argsort(at)
            start = at[order][0]
            span = max(at[order][-1] - start, 1.0)
            unit, unit_name = _time_unit(span)

            def draw(ax, order=order, at=at, start=start, unit=unit, unit_name=unit_name):  # noqa: ANN001
                ax.plot((at[order] - start) / unit, np.cumsum(spent[order]), color="#8a3ffc")
                ax.set_xlabel(unit_name)
                ax.set_ylabel("USD")
            panels.append((f"cost so far: ${cost:.4f}", draw))
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (title, draw) in zip(axes, panels):
        draw(ax)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Tokens and cost of every request ({facts.sum_written('prompt_tokens') or 0:,} in, "
                 f"{facts.sum_written('generated_tokens') or 0:,} out)", fontsize=10)
    return _save(fig, out, "tokens_cost", "Tokens and cost")


def tags(facts: RunFacts, out: Path) -> Chart | None:
    found = facts.tag_counts()
    if not found:
        return None
    columns = list(found)[:3]
    fig, axes = _figure(len(columns))
    for ax, column in zip(axes, columns):
        _hbars(ax, found[column], "#2f7d8c", limit=28)
        ax.set_title(f"{column}: {len(found[column])} distinct", fontsize=9)
    return _save(fig, out, "tags", "Tag distributions")


def flags(facts: RunFacts, out: Path) -> Chart | None:
    found = facts.flag_counts()
    if not found:
        return None
    fig, axes = _figure(1)
    _hbars(axes[0], found, "#8c2f5a", limit=28)
    axes[0].set_title("rows per caption-check flag (`vidcap merge --drop-flagged` leaves them out)", fontsize=9)
    return _save(fig, out, "flags", "Caption check flags")


def motion(facts: RunFacts, out: Path) -> Chart | None:
    found = facts.label_counts()
    if not found:
        return None
    fig, axes = _figure(len(found))
    for ax, (column, counts) in zip(axes, found.items()):
        _hbars(ax, counts, "#b86b00", limit=28)
        ax.set_title(f"{column} labels over {sum(n for _, n in counts):,} rows", fontsize=9)
    return _save(fig, out, "motion", "Camera motion labels")


CHARTS = (throughput, statuses, errors, tokens_cost, flags, tags, motion)
