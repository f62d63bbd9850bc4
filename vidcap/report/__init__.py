"""`vidcap report`: an HTML page with PNG charts (matplotlib) of how a run went.

    facts.py    what the run folder says: every result row ever written (with the time the store committed
                it), the result that counts per key, the shards' stats files
    charts.py   one function per chart, each drawing from the facts and saving a PNG of a fixed size
    page.py     index.html: summary table, the charts, error reasons, per-shard table
"""

from vidcap.report.page import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
