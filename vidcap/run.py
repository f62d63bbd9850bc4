"""The run folder: one folder per captioning run, and the only place that knows its layout.

    RUN/config.json             frozen config: manifest (path, fingerprint, key, columns, rows), shards, task, source, engine
    RUN/shards/shard-00000.parquet   the manifest rows of each shard, every column plus `_row` (manifest order)
    RUN/results/shard-00000.*   the result store of each shard (vidcap.results names its files: log
                                segments `.log-0003.arrows`, compactions `.upto-0003.parquet`, `.lock`)
    RUN/done/shard-00000        completion marker (JSON summary: rows, ok, error, spending, when); the truth
                                for "this shard is finished"
    RUN/stats/shard-00000.json  figures of the shard's last attempt (rows, seconds, tokens, ...)
    RUN/logs/                   scheduler logs (submitit stdout/stderr per task)
    RUN/jobs.jsonl              one line per submitted job: job id, shards, time
    RUN/status-cache.bin        what `vidcap status` read from the completion markers (a cache: safe to delete)
    RUN/previous/DATE/          what `split --force` moved aside

Writes of small files go through `vidcap.durable.atomic_write_text` so a kill never leaves a half-written
file that a rerun would trust.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidcap.durable import atomic_write_text, fsync_dir  # noqa: F401 - fsync_dir: for the store
from vidcap.errors import UserError

SHARD_NAME = "shard-{:05d}"
ROW_COLUMN = "_row"  # manifest row number, kept in the shards to restore manifest order


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> "RunDir":
        return cls(Path(path).expanduser().absolute())

    # -- layout -------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def done_dir(self) -> Path:
        return self.root / "done"

    @property
    def stats_dir(self) -> Path:
        return self.root / "stats"

    @property
    def attempts_dir(self) -> Path:
        """API engines' attempts journals (vidcap.attempts), one per shard."""
        return self.root / "attempts"

    def attempts_path(self, index: int) -> Path:
        return self.attempts_dir / (SHARD_NAME.format(index) + ".jsonl")

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def jobs_path(self) -> Path:
        return self.root / "jobs.jsonl"

    @property
    def previous_dir(self) -> Path:
        return self.root / "previous"

    @property
    def status_cache_path(self) -> Path:
        return self.root / "status-cache.bin"

    def shard_path(self, index: int) -> Path:
        return self.shards_dir / (SHARD_NAME.format(index) + ".parquet")

    def done_path(self, index: int) -> Path:
        return self.done_dir / SHARD_NAME.format(index)

    def stats_path(self, index: int) -> Path:
        return self.stats_dir / (SHARD_NAME.format(index) + ".json")

    # -- config -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file()

    def load_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise UserError(f"{self.root}: not a vidcap run folder (no config.json); create it with `vidcap split`")
        try:
            return json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{self.config_path}: unreadable run config ({exc})") from None

    def save_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")

    @property
    def num_shards(self) -> int:
        return int(self.load_config()["shards"]["count"])

    # -- completion ---------------------------------------------------------------------------------
    def is_done(self, index: int) -> bool:
        return self.done_path(index).is_file()

    def mark_done(self, index: int, summary: dict[str, Any]) -> None:
        atomic_write_text(self.done_path(index), json.dumps(summary, sort_keys=True) + "\n")

    def clear_done(self, index: int) -> None:
        try:
            self.done_path(index).unlink()
        except FileNotFoundError:
            pass

    def done_shards(self) -> set[int]:
        """Indices of every shard with a completion marker: one directory listing, not one stat per shard."""
        return _indices(self.done_dir, "")

    def read_done(self, index: int) -> dict[str, Any] | None:
        """A completion marker's summary (None when the shard is not done)."""
        try:
            return json.loads(self.done_path(index).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def unfinished_shards(self) -> list[int]:
        done = self.done_shards()
        return [i for i in range(self.num_shards) if i not in done]

    # -- submitted jobs -----------------------------------------------------------------------------
    def record_jobs(self, shard_jobs: dict[int, str], executor: str) -> None:
        """Append which job runs which shard (the newest line for a shard wins)."""
        now = time.time()
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.jobs_path, "a", encoding="utf-8") as f:
            for shard, job_id in sorted(shard_jobs.items()):
                f.write(json.dumps({"shard": shard, "job_id": job_id, "executor": executor, "at": now}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def latest_jobs(self) -> dict[int, str]:
        """Shard -> id of the newest job submitted for it (a torn last line is skipped)."""
        jobs: dict[int, str] = {}
        try:
            lines = self.jobs_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return jobs
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            jobs[int(record["shard"])] = str(record["job_id"])
        return jobs

    def write_stats(self, index: int, stats: dict[str, Any]) -> None:
        atomic_write_text(self.stats_path(index), json.dumps(stats, indent=2, sort_keys=True) + "\n")

    def stats_shards(self) -> set[int]:
        return _indices(self.stats_dir, ".json")

    def result_shards(self) -> set[int]:
        """Indices of the shards with result files at all (log segments or compactions): one listing, and no
        pyarrow, so `vidcap status` can skip the result store for shards that have none."""
        try:
            names = _joined(os.listdir(self.results_dir))  # names only, matched all at once (100,000 files)
        except FileNotFoundError:
            return set()
        return set(map(int, _RESULT_FILE.findall(names)))

    def read_stats(self, index: int) -> dict[str, Any] | None:
        try:
            return json.loads(self.stats_path(index).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None


def _indices(folder: Path, suffix: str) -> set[int]:
    """Shard indices of the files `shard-NNNNN<suffix>` in `folder` (temporary files are not counted)."""
    try:
        names = _joined(os.listdir(folder))  # names only, matched all at once: 100,000 files in a moment
    except FileNotFoundError:
        return set()
    prefix = re.escape(SHARD_NAME.split("{")[0])
    return set(map(int, re.findall(rf"\0{prefix}([0-9]+){re.escape(suffix)}(?=\0)", names)))


def _joined(names: list[str]) -> str:
    """Names between NULs (the one character no file name holds), for one regex pass over a whole folder."""
    return "\0" + "\0".join(names) + "\0"


#: a result file's name (a log segment or a compaction; vidcap.results._Files), its shard index captured
_RESULT_FILE = re.compile(r"\0shard-([0-9]+)\.(?:[^\0]*\.)?(?:upto|log)-[^\0]*\.(?:arrows|parquet)(?=\0)")
