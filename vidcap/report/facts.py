"""What a run folder says about how the run went, gathered once for every chart.

Throughput comes from the time the result store committed each batch (`written_at`); rows written
before the store recorded it fall back to the shard's stats (its attempt's start and last update),
spread evenly. Tokens and cost count every row ever written (a retried row was paid for twice); statuses,
reasons, tags and motion labels count the result that counts for each key, as `vidcap merge` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidcap.manifest.resolve import best_per_key
from vidcap.results import WRITTEN_AT, read_results
from vidcap.run import RunDir

LABEL_COLUMNS = ("cmotion",)
TAG_COLUMNS = ("objects", "actions")
FLAG_COLUMN = "flags"  # caption checks: drawn as their own chart
WRITTEN = ("key", "status", "error", WRITTEN_AT, "seconds", "prompt_tokens", "generated_tokens", "cost_usd")


@dataclass
class RunFacts:
    run: RunDir
    config: dict[str, Any]
    rows: int  # manifest rows
    written: pa.Table  # every result row ever written, plus `shard`; `written_at` may be null (older rows)
    final: pa.Table  # one row per key that has a result: the one that counts
    stats: dict[int, dict[str, Any]] = field(default_factory=dict)  # shard -> its stats file

    @property
    def pending(self) -> int:
        return self.rows - self.final.num_rows

    def status_counts(self) -> dict[str, int]:
        counts = {"ok": 0, "error": 0, "skipped": 0}
        for status, n in _value_counts(self.final["status"]).items():
            counts[str(status)] = n
        counts["pending"] = self.pending
        return counts

    def error_reasons(self) -> list[tuple[str, int]]:
        """Reasons of the rows that count as errors, most frequent first."""
        errors = self.final.filter(pc.equal(self.final["status"], "error"))
        counts = _value_counts(pc.fill_null(errors["error"], "(no reason)"))
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    def sum_written(self, column: str) -> float | None:
        if column not in self.written.column_names:
            return None
        return pc.sum(self.written[column]).as_py()

    def tag_counts(self) -> dict[str, list[tuple[str, int]]]:
        """Per tag column present: values by frequency (over the rows that count)."""
        return self._list_counts(TAG_COLUMNS + tuple(f.name for f in self.final.schema if pa.types.is_list(f.type)
                                                     and f.name not in TAG_COLUMNS and f.name != FLAG_COLUMN))

    def flag_counts(self) -> list[tuple[str, int]]:
        """Caption-check flags by frequency (vidcap.checks), [] when the run has none."""
        return self._list_counts((FLAG_COLUMN,)).get(FLAG_COLUMN, [])

    def _list_counts(self, names: tuple[str, ...]) -> dict[str, list[tuple[str, int]]]:
        found = {}
        for name in names:
            if name in self.final.column_names and name not in found:
                column = self.final[name]
                if pa.types.is_list(column.type):
                    values = pc.list_flatten(column)
                else:  # comma-separated text
                    values = pa.array([t.strip() for v in column.to_pylist()
                                       for t in (v or "").split(",") if t.strip()], pa.string())
                counts = _value_counts(values)
                if counts:
                    found[name] = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return found

    def label_counts(self) -> dict[str, list[tuple[str, int]]]:
        found = {}
        for name in LABEL_COLUMNS:
            if name in self.final.column_names:
                column = self.final[name]
                values = pc.list_flatten(column) if pa.types.is_list(column.type) else column
                counts = _value_counts(pc.drop_null(values))
                counts.pop("", None)
                if counts:
                    found[name] = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return found

    def times(self) -> tuple[np.ndarray, np.ndarray]:
        """(unix time, shard) of every row written, the stats standing in where a row has no time."""
        shards = self.written["shard"].to_numpy()
        if WRITTEN_AT in self.written.column_names:
            at = pc.fill_null(self.written[WRITTEN_AT], np.nan).to_numpy(zero_copy_only=False).astype(float)
        else:
            at = np.full(self.written.num_rows, np.nan)
        for shard in np.unique(shards[np.isnan(at)]):
            stats = self.stats.get(int(shard)) or {}
            where = np.flatnonzero((shards == shard) & np.isnan(at))
            start, end = stats.get("started_at"), stats.get("updated_at")
            if start and end:
                at[where] = np.linspace(start, end, len(where) + 1)[1:]
        keep = ~np.isnan(at)
        return at[keep], shards[keep]


def _value_counts(values: pa.Array | pa.ChunkedArray) -> dict[Any, int]:
    if len(values) == 0:
        return {}
    counted = pc.value_counts(values)
    return {v.as_py(): c.as_py() for v, c in zip(counted.field("values"), counted.field("counts"))}


def collect(run: RunDir) -> RunFacts:
    """Read the run folder: manifest size, every result row of every shard, and the stats files."""
    config = run.load_config()
    shards = int(config["shards"]["count"])
    written, final, stats = [], [], {}
    for index in range(shards):
        results = read_results(run, index)
        if results.num_rows:
            keep = [c for c in WRITTEN if c in results.column_names]
            part = results.select(keep)
            written.append(part.append_column("shard", pa.array(np.full(part.num_rows, index, np.int32))))
            best = best_per_key(results, key="key")
            final.append(best.append_column("shard", pa.array(np.full(best.num_rows, index, np.int32))))
        s = run.read_stats(index)
        if s:
            stats[index] = s
    empty = pa.table({"key": pa.array([], pa.string()), "status": pa.array([], pa.string()),
                      "error": pa.array([], pa.string()), "shard": pa.array([], pa.int32())})
    written_table = pa.concat_tables(written, promote_options="permissive") if written else empty
    final_table = pa.concat_tables(final, promote_options="permissive") if final else empty
    return RunFacts(run, config, int(sum(config["shards"]["sizes"])), written_table, final_table, stats)
