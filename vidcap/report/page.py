"""index.html of a report: a summary table, the charts, the error reasons and a per-shard table.

Plain static HTML with inline style and no script: it opens from disk, offline.
"""

from __future__ import annotations

import html
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from vidcap.errors import UserError
from vidcap.report.charts import CHARTS, Chart
from vidcap.report.facts import RunFacts, collect
from vidcap.run import RunDir

MARKER = "report.json"
STYLE = """
body { font: 14px/1.4 system-ui, "DejaVu Sans", sans-serif; margin: 16px 24px; color: #1f2328; max-width: 1100px; }
h1 { font-size: 20px; margin-bottom: 4px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0; } td, th { border-bottom: 1px solid #d7d9dd; padding: 3px 10px;
text-align: left; vertical-align: top; } th { background: #f6f8fa; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 16px 0; } figcaption { color: #57606a; font-size: 13px; } .note { color: #57606a; }
"""


@dataclass
class ReportResult:
    out: str
    charts: list[Chart] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # charts the run has no data for


def build_report(run: RunDir, out: str | os.PathLike[str]) -> ReportResult:
    """Write `out/index.html` and its PNG charts for `run` (built aside, then swapped in)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError("vidcap report needs matplotlib (pip install 'vidcap[charts]')") from None
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise UserError(f"{out}: exists and is not a vidcap report; choose an empty or new --out folder")
    facts = collect(run)
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        result = ReportResult(str(out))
        for draw in CHARTS:
            chart = draw(facts, tmp)
            if chart is None:
                result.skipped.append(draw.__name__)
            else:
                result.charts.append(chart)
        (tmp / "index.html").write_text(_page(facts, result), encoding="utf-8")
        (tmp / MARKER).write_text(f'{{"charts": {len(result.charts)}}}\n', encoding="utf-8")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


SKIPPED_WHY = {"throughput": "no rows written yet", "errors": "no failed rows", "tokens_cost":
               "no tokens or cost recorded (this engine reports none)", "tags": "no tag columns", "flags": "no caption flagged",
               "motion": "no cmotion labels"}


def _page(facts: RunFacts, result: ReportResult) -> str:
    e = html.escape
    config = facts.config
    from vidcap.tasks.spec import describe_run

    counts = facts.status_counts()
    at, _ = facts.times()
    span = float(at.max() - at.min()) if len(at) > 1 else 0.0
    cost = facts.sum_written("cost_usd")
    summary = [
        ("run", str(facts.run.root)),
        ("manifest", f"{config['manifest']['path']} ({facts.rows:,} rows, {config['shards']['count']} shards)"),
        ("task", describe_run(config)),
        ("rows", "  ".join(f"{k} {v:,}" for k, v in counts.items())),
        ("rows written", f"{facts.written.num_rows:,} (every attempt)"),
        ("throughput", f"{len(at) / span:.2f} rows/s over {span:.1f} s" if span > 0 else "-"),
        ("tokens", f"{facts.sum_written('prompt_tokens') or 0:,} in, "
                   f"{facts.sum_written('generated_tokens') or 0:,} out"),
        ("cost", f"${cost:.4f} (every attempt)" if cost else "none recorded"),
    ]
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>vidcap report: {e(facts.run.root.name)}"
             f"</title><link rel=icon href='data:,'><style>{STYLE}</style></head><body>",
             f"<h1>vidcap report: {e(facts.run.root.name)}</h1>",
             f"<p class=note>built {e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</p>", "<table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in summary]
    parts.append("</table>")
    for chart in result.charts:
        parts.append(f"<figure><img src='{e(chart.file)}' width={chart.width} height={chart.height} "
                     f"alt='{e(chart.title)}'><figcaption>{e(chart.title)}</figcaption></figure>")
    if result.skipped:
        parts.append("<p class=note>not drawn: " + "; ".join(
            e(f"{name} ({SKIPPED_WHY.get(name, 'no data')})") for name in result.skipped) + "</p>")
    reasons = facts.error_reasons()
    if reasons:
        parts.append("<h2>Error reasons</h2><table><tr><th>rows</th><th>reason</th></tr>")
        parts += [f"<tr><td class=n>{n:,}</td><td>{e(reason)}</td></tr>" for reason, n in reasons[:100]]
        parts.append("</table>")
    parts.append("<h2>Shards</h2><table><tr><th>shard</th><th>rows</th><th>ok</th><th>error</th>"
                 "<th>rows/s (last attempt)</th><th>host</th></tr>")
    sizes = config["shards"]["sizes"]
    final_shards = facts.final["shard"].to_numpy() if facts.final.num_rows else None
    status = facts.final["status"].to_numpy(zero_copy_only=False) if facts.final.num_rows else None
    for index, size in enumerate(sizes[:500]):
        ok = error = 0
        if final_shards is not None:
            mine = final_shards == index
            ok, error = int((status[mine] == "ok").sum()), int((status[mine] == "error").sum())
        stats = facts.stats.get(index) or {}
        parts.append(f"<tr><td class=n>{index}</td><td class=n>{size:,}</td><td class=n>{ok:,}</td>"
                     f"<td class=n>{error:,}</td><td class=n>{stats.get('videos_per_s', 0):.2f}</td>"
                     f"<td>{e(str(stats.get('host', '-')))}</td></tr>")
    parts.append("</table>")
    if len(sizes) > 500:
        parts.append(f"<p class=note>… {len(sizes) - 500} more shards (`vidcap status --all` lists them)</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
