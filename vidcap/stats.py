"""Figures of a shard attempt: counters that add up (datatrove's `stat_update`), written to RUN/stats/.

Counters are created by their first `count`, so a task or an engine can count what it likes and
`vidcap status` sums whatever is there, without a list of names kept in two places.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Iterator

from vidcap.results import STATUS_OK, STATUS_SKIPPED
from vidcap.run import RunDir

STATS_EVERY_S = 10.0


class Counters:
    """Figures that add up (datatrove's stat_update): a counter is created by its first `count`."""

    def __init__(self, **start: Any) -> None:
        self.data: dict[str, Any] = dict(start)

    def count(self, name: str, value: float = 1) -> None:
        self.data[name] = (self.data.get(name) or 0) + value

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.count(name, time.perf_counter() - started)


#: per-row figures of the engine (Result.extra) summed into the shard stats
SUMMED_EXTRAS = ("cost_usd",)


class ShardStats(Counters):
    """Figures of one shard attempt, written to RUN/stats/ while it runs (every STATS_EVERY_S) and at the end."""

    def __init__(self, run: RunDir, index: int, total: int, done_before: int, given_up: int, todo: int) -> None:
        self.run, self.index = run, index
        self.started = time.time()
        super().__init__(
            shard=index, host=socket.gethostname(), pid=os.getpid(), started_at=self.started, rows_total=total,
            rows_ok_before=done_before, rows_given_up=given_up, rows_todo=todo, rows_ok=0, rows_error=0,
            prompt_tokens=0, generated_tokens=0, read_wait_s=0.0, model_s=0.0, batches=0, finished=False,
            stopped=False,
            cost_usd=None,  # this attempt's rows; `vidcap status` adds up every attempt's from the results
        )
        self._written = 0.0

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.count("batches")
        for row in rows:
            self.count({STATUS_OK: "rows_ok", STATUS_SKIPPED: "rows_skipped"}.get(row["status"], "rows_error"))
            self.count("prompt_tokens", row.get("prompt_tokens") or 0)
            self.count("generated_tokens", row.get("generated_tokens") or 0)
            for name in SUMMED_EXTRAS:
                if row.get(name) is not None:
                    self.count(name, row[name])

    def write(self, figures: dict[str, Any] | None = None, force: bool = False, **final: Any) -> dict[str, Any]:
        now = time.time()
        if not force and now - self._written < STATS_EVERY_S:
            return self.data
        d = self.data
        d.update(final)
        d["updated_at"] = now
        d["seconds"] = now - self.started
        processed = d["rows_ok"] + d["rows_error"]
        d["videos_per_s"] = processed / d["seconds"] if d["seconds"] > 0 else 0.0
        d.update(figures or {})
        self.run.write_stats(self.index, d)
        self._written = now
        return d
