"""Which rows a gallery shows: every row of a run (merged on the fly) or of an output file, narrowed by
`--where` and `--sample`, in source order.

A run is merged with the same reducer as `vidcap merge` (so the gallery shows what the output would
hold: manifest columns plus the result that counts); rows with no result yet get status `pending`.
List columns (tags) stay lists; an output CSV holds them as comma-separated text, turned back into lists.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidcap.errors import UserError
from vidcap.gallery.plan import FramePlan, PathRules, frame_plan_of, paths_of
from vidcap.run import RunDir

PENDING = "pending"
#: label columns (one value per row, or a few) and tag columns (lists), shown as chips and filters
LABEL_COLUMNS = ("cmotion",)
TAG_COLUMNS = ("objects", "actions", "flags")


@dataclass
class GalleryRows:
    table: pa.Table  # the rows to show, source order; status filled, tag columns as list<string>
    key: str
    paths: PathRules
    plan: FramePlan
    source: str  # what the page says it shows
    total: int  # rows in the source, before --where and --sample
    matched: int  # rows that passed --where

    @property
    def tag_columns(self) -> list[str]:
        """Named tag columns, then any other list column (a task's own tags), as they appear."""
        lists = [f.name for f in self.table.schema if pa.types.is_list(f.type) and f.name not in LABEL_COLUMNS]
        return [c for c in TAG_COLUMNS if c in lists] + [c for c in lists if c not in TAG_COLUMNS]

    @property
    def label_columns(self) -> list[str]:
        return [c for c in LABEL_COLUMNS if c in self.table.column_names]


def load_rows(source: str, *, key: str | None = None, run: str | None = None, data_root: str | None = None,
              overrides: dict[str, Any] | None = None) -> GalleryRows:
    """Rows of a run folder or of an output file (CSV/Parquet), with how to find and sample their media.

    For a file, the frame plan comes from the run named by `run`, else from a run found beside the file
    (the file inside a run folder, or `OUT.run` next to `OUT.csv` as `vidcap caption` makes it), else the
    defaults; `overrides` (num_frames, resize, backend from the command line) go on top.
    """
    path = Path(source).expanduser()
    if RunDir.at(path).exists():
        rows = _from_run(RunDir.at(path), data_root)
        rows.plan = _override(rows.plan, overrides)
        return rows
    if path.is_dir():
        raise UserError(f"{path}: not a run folder (no config.json) and not an output file")
    if not path.exists():
        raise UserError(f"{path}: no such run folder or output file")
    from vidcap.manifest.io import read_table

    table = read_table(path)
    config = _config_near(path, run)
    key = key or (config["manifest"]["key"] if config else "path")
    rules = paths_of(config) if config else PathRules("path", path.absolute().parent)
    if data_root:
        rules = PathRules(rules.column, Path(data_root))
    plan = (frame_plan_of(config) if config else None) or FramePlan(
        origin="defaults: no run found for this file; see --run, --num-frames, --resize")
    plan = _override(plan, overrides)
    for needed in (key, rules.column):
        if needed not in table.column_names:
            raise UserError(f"{path}: no column {needed!r} (columns: {', '.join(table.column_names)})")
    table = _normalise(table)
    return GalleryRows(table, key, rules, plan, str(path.absolute()), table.num_rows, table.num_rows)


def _override(plan: FramePlan, overrides: dict[str, Any] | None) -> FramePlan:
    if not overrides:
        return plan
    return replace(plan, **overrides, origin=f"command line over {plan.origin}")


def _from_run(run: RunDir, data_root: str | None) -> GalleryRows:
    from vidcap.manifest.reduce_run import merge_run

    config = run.load_config()
    with tempfile.TemporaryDirectory(prefix="vidcap-gallery-merge-") as tmp:  # the run may be read-only
        merged = Path(tmp) / "merged.parquet"
        merge_run(run, merged)
        import pyarrow.parquet as pq

        table = pq.read_table(merged)
    rules = paths_of(config)
    if data_root:
        rules = PathRules(rules.column, Path(data_root))
    plan = frame_plan_of(config) or FramePlan(origin="defaults: the run's task reads no frames, or has none yet")
    table = _normalise(table)
    return GalleryRows(table, config["manifest"]["key"], rules, plan, str(run.root), table.num_rows,
                       table.num_rows)


def _config_near(path: Path, run: str | None) -> dict | None:
    if run:
        return RunDir.at(run).load_config()
    for candidate in (path.absolute().parent, path.with_name(path.name.split(".")[0] + ".run")):
        if RunDir.at(candidate).exists():
            return RunDir.at(candidate).load_config()
    return None


def _normalise(table: pa.Table) -> pa.Table:
    """Status `pending` where no result is in yet; CSV tag columns (comma-separated text) as lists."""
    if "status" not in table.column_names:
        table = table.append_column("status", pa.array(["ok"] * table.num_rows, pa.string()))
    status = pc.if_else(pc.equal(pc.fill_null(table["status"].cast(pa.string()), ""), ""), PENDING,
                        table["status"].cast(pa.string()))
    table = table.set_column(table.column_names.index("status"), "status", status)
    for name in TAG_COLUMNS:
        if name in table.column_names and pa.types.is_string(table.schema.field(name).type):
            lists = [[t.strip() for t in (v or "").split(",") if t.strip()] for v in table[name].to_pylist()]
            table = table.set_column(table.column_names.index(name), name, pa.array(lists, pa.list_(pa.string())))
    return table


def parse_where(clauses: list[str], columns: list[str]) -> list[tuple[str, str, str]]:
    """`COL=VALUE` / `COL!=VALUE` clauses as (column, op, value); an unknown column is a UserError."""
    parsed = []
    for clause in clauses:
        op = "!=" if "!=" in clause else "="
        name, sep, value = clause.partition(op)
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--where {clause!r}: expected COLUMN=VALUE or COLUMN!=VALUE")
        if name not in columns:
            raise UserError(f"--where {clause!r}: no column {name!r} (columns: {', '.join(columns)})")
        parsed.append((name, op, value))
    return parsed


def apply_where(rows: GalleryRows, clauses: list[str]) -> None:
    """Keep rows matching every clause; for a list column, `=` means "holds the value"."""
    table = rows.table
    mask = np.ones(table.num_rows, dtype=bool)
    for name, op, value in parse_where(clauses, table.column_names):
        column = table[name]
        if pa.types.is_list(column.type):
            hit = np.array([value in (v or []) for v in column.to_pylist()], dtype=bool)
        else:
            text = pc.fill_null(column.cast(pa.string()), "")
            hit = pc.equal(text, value).to_numpy(zero_copy_only=False)
        mask &= hit if op == "=" else ~hit
    rows.table = table.filter(pa.array(mask))
    rows.matched = rows.table.num_rows


def apply_sample(rows: GalleryRows, count: int, seed: int) -> None:
    """A uniform random `count` of the rows (reproducible with `seed`), kept in source order."""
    if count < 1:
        raise UserError(f"--sample must be at least 1, got {count}")
    if count >= rows.table.num_rows:
        return
    chosen = np.sort(np.random.default_rng(seed).choice(rows.table.num_rows, size=count, replace=False))
    rows.table = rows.table.take(pa.array(chosen))
