"""The result store: the one module that writes and reads a shard's results.

Crash safety is the whole point. A shard's results live in `RUN/results/` as

    shard-00000.log-0003.arrows     append-only log segments, one per writer session (number 3 here)
    shard-00000.upto-0003.parquet   a compaction holding every row of segments 0..3

A log segment is a sequence of records `magic | crc32 | length | Arrow IPC stream of one batch`, each
written with one `write` and made durable with `fsync` before `append` returns. A writer killed at any
instant leaves at most a torn record at the end of its segment; the reader stops at the first record that
is incomplete or fails its checksum, so what reads back is always an exact prefix of the committed batches.
A new writer session never touches an old segment: it starts the next one. Compaction writes the Parquet
file atomically and only then deletes the segments it covers, so a kill in between loses nothing and never
counts a row twice (the reader ignores segments a compaction covers). One writer per shard at a time is
enforced with an advisory lock (flock) that dies with its process.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidcap.errors import UserError
from vidcap.durable import atomic_path, fsync_dir
from vidcap.run import SHARD_NAME, RunDir

MAGIC = b"VCR1"
HEADER = struct.Struct("<4sIQ")  # magic, crc32 of payload, payload length

STATUS_OK, STATUS_ERROR, STATUS_SKIPPED = "ok", "error", "skipped"
STATUSES = (STATUS_OK, STATUS_ERROR, STATUS_SKIPPED)

#: the store's own columns, the same for every task; a task's columns come right after `key`, then these,
#: then per-row engine figures (e.g. `cost_usd`)
RESULT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("seconds", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("generated_tokens", pa.int64()),
    ]
)
RESULT_COLUMNS = RESULT_SCHEMA.names
#: unix time at which the store committed a row's batch (added by `ResultWriter.append`)
WRITTEN_AT = "written_at"
_DEFAULTS = {"error": "", "seconds": 0.0, "prompt_tokens": 0, "generated_tokens": 0}


class ShardBusy(UserError):
    """Another live process is writing this shard's results."""


def result_rows(rows: Iterable[dict[str, Any]], columns: pa.Schema | None = None) -> pa.Table:
    """Build a batch from dicts: `key`, the task's `columns` (typed by that schema), the store's columns, then
    any other column, its type inferred. A task column missing from a row is null."""
    rows = list(rows)
    task_fields = [f for f in (columns or pa.schema([])) if f.name not in RESULT_COLUMNS]
    typed = {f.name: f for f in RESULT_SCHEMA} | {f.name: f for f in task_fields}
    order = ["key"] + [f.name for f in task_fields] + RESULT_COLUMNS[1:]
    values: dict[str, list[Any]] = {name: [] for name in order}
    for row in rows:
        for name in row:
            values.setdefault(name, [])
    for row in rows:
        if row.get("status") not in STATUSES:
            raise ValueError(f"result status must be one of {STATUSES}, got {row.get('status')!r}")
        for name, column in values.items():
            column.append(row.get(name))
    fields, arrays = [], []
    for name, column in values.items():
        arr = pa.array(column, type=typed[name].type) if name in typed else pa.array(column)
        if name in _DEFAULTS:
            arr = arr.fill_null(_DEFAULTS[name])
        fields.append(pa.field(name, arr.type))
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


class _Files:
    """Names of one shard's result files."""

    SEGMENT = re.compile(r"^(shard-\d+)\.log-(\d+)\.arrows$")
    COMPACT = re.compile(r"^(shard-\d+)\.upto-(\d+)\.parquet$")

    def __init__(self, run: RunDir, index: int) -> None:
        self.dir = run.results_dir
        self.stem = SHARD_NAME.format(index)

    def segment(self, gen: int) -> Path:
        return self.dir / f"{self.stem}.log-{gen:04d}.arrows"

    def compaction(self, gen: int) -> Path:
        return self.dir / f"{self.stem}.upto-{gen:04d}.parquet"

    @property
    def lock(self) -> Path:
        return self.dir / f"{self.stem}.lock"

    def listing(self) -> tuple[list[int], list[int]]:
        """Generations of the log segments and of the compactions present, sorted."""
        segments, compactions = [], []
        if self.dir.is_dir():
            for entry in os.scandir(self.dir):
                if m := self.SEGMENT.match(entry.name):
                    if m.group(1) == self.stem:
                        segments.append(int(m.group(2)))
                elif m := self.COMPACT.match(entry.name):
                    if m.group(1) == self.stem:
                        compactions.append(int(m.group(2)))
        return sorted(segments), sorted(compactions)


def _read_segment(path: Path) -> list[pa.Table]:
    """Every committed record of a segment; stops quietly at a torn or corrupt tail."""
    tables = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + HEADER.size <= len(data):
        magic, crc, length = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        payload = data[start : start + length]
        if magic != MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
            break
        tables.append(pa.ipc.open_stream(payload).read_all())
        offset = start + length
    return tables


def read_results(run: RunDir, index: int) -> pa.Table:
    """All committed result rows of a shard, in commit order (later rows are newer).

    Consistent while a writer appends and compacts: a compaction deletes the segments and the older
    compaction a reader may have just listed, and a directory listing taken during a compaction may miss
    both the new file and the old ones. So a read is kept only when every file it listed could be read and
    a listing taken after it shows the same compactions and still every segment read (new segments hold
    newer rows only); otherwise it is read again from a fresh listing.
    """
    files = _Files(run, index)
    listing = files.listing()
    for attempt in range(READ_ATTEMPTS):
        try:
            tables = _read_listed(files, *listing)
        except FileNotFoundError:  # a compaction replaced what was listed
            tables = None
        after = files.listing()
        if tables is not None and after[1] == listing[1] and set(listing[0]) <= set(after[0]):
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return RESULT_SCHEMA.empty_table()
            return pa.concat_tables(tables, promote_options="permissive")
        listing = after
        if attempt >= 10:  # a writer compacting faster than we read: let it get ahead
            time.sleep(0.001 * attempt)
    raise OSError(f"{files.dir}: the results of shard {index} kept changing during {READ_ATTEMPTS} reads")


#: re-reads of a shard's results when a compaction ran under a read (a few at most in practice)
READ_ATTEMPTS = 100


def _read_listed(files: _Files, segments: list[int], compactions: list[int]) -> list[pa.Table]:
    """The newest compaction and the segments past it (FileNotFoundError if one is gone)."""
    tables: list[pa.Table] = []
    covered = -1
    if compactions:
        covered = compactions[-1]
        tables.append(pq.read_table(files.compaction(covered)))
    for gen in segments:
        if gen > covered:
            tables.extend(_read_segment(files.segment(gen)))
    return tables


def shards_with_results(run: RunDir) -> set[int]:
    """Indices of the shards that have result files at all (one directory listing for the whole run)."""
    return run.result_shards()


def result_counts(results: pa.Table) -> dict[str, Any]:
    """Keys ok and keys failed (the newest result of each key counts), what every row spent, and how many
    current rows carry each caption-check flag."""
    from vidcap.manifest.resolve import best_per_key

    best = best_per_key(results, key="key")
    ok = (pc.sum(pc.equal(best["status"], STATUS_OK)).as_py() or 0) if best.num_rows else 0
    return {"ok": ok, "error": best.num_rows - ok, "spent": spent_in(results) if results.num_rows else {},
            "flags": list_counts(best, "flags")}


def list_counts(table: pa.Table, column: str) -> dict[str, int]:
    """How many rows hold each value of a list column (flags, tags); {} when there is no such column."""
    if column not in table.column_names or not pa.types.is_list(table.schema.field(column).type):
        return {}
    counts = pc.value_counts(pc.list_flatten(table[column])).to_pylist()
    return {c["values"]: c["counts"] for c in counts if c["values"]}


def done_summary(run: RunDir, index: int, rows: int, stats: dict[str, Any]) -> dict[str, Any]:
    """What a shard's completion marker holds: its counts and spending, and when its last attempt ran, so
    that `vidcap status` reads one small file per finished shard instead of its results and stats."""
    return {"rows": rows, "finished_at": time.time(), "started_at": stats.get("started_at"),
            "processed": (stats.get("rows_ok") or 0) + (stats.get("rows_error") or 0),
            **result_counts(read_results(run, index))}


def live_writers(run: RunDir) -> list[str]:
    """Who holds a shard's writer lock now ("shard 3: pid 42 on node7"), for every shard of the run."""
    busy = []
    if not run.results_dir.is_dir():
        return busy
    for lock in sorted(run.results_dir.glob("shard-*.lock")):
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            busy.append(f"{lock.name.split('.')[0]}: {holder}")
        finally:
            os.close(fd)
    return busy


class ResultWriter:
    """Appends batches of result rows to one shard, durably. Use as a context manager."""

    def __init__(self, run: RunDir, index: int) -> None:
        self.run = run
        self.index = index
        self.files = _Files(run, index)
        self.files.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._lock_fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(self._lock_fd)
            raise ShardBusy(f"shard {index} of {run.root} is being written by another process ({holder})") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        for stale in self.files.dir.glob(f".{self.files.stem}.*.tmp"):  # a compaction a kill interrupted
            stale.unlink(missing_ok=True)
        segments, compactions = self.files.listing()
        self.gen = max(segments + compactions, default=-1) + 1
        self._path = self.files.segment(self.gen)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        fsync_dir(self.files.dir)
        self.batches = 0

    def append(self, table: pa.Table) -> None:
        """Commit one batch: when this returns, the rows survive a kill of this process or of the node."""
        if table.num_rows == 0:
            return
        if WRITTEN_AT not in table.column_names:  # when each row was committed: throughput over time
            table = table.append_column(WRITTEN_AT, pa.array([time.time()] * table.num_rows, pa.float64()))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as stream:
            stream.write_table(table)
        payload = sink.getvalue().to_pybytes()
        record = HEADER.pack(MAGIC, zlib.crc32(payload), len(payload)) + payload
        written = os.write(self._fd, record)
        if written != len(record):  # a short write to a regular file means the disk is full
            raise OSError(f"short write to {self._path} ({written} of {len(record)} bytes)")
        os.fsync(self._fd)
        self.batches += 1

    def compact(self) -> None:
        """Fold every segment into one Parquet file (fewer, faster files once a shard is finished)."""
        os.fsync(self._fd)
        table = read_results(self.run, self.index)
        segments, compactions = self.files.listing()
        upto = max(segments + compactions)
        with atomic_path(self.files.compaction(upto)) as tmp:
            pq.write_table(table, tmp)
        for gen in segments:
            if gen <= upto:
                self.files.segment(gen).unlink(missing_ok=True)
        for gen in compactions:
            if gen < upto:
                self.files.compaction(gen).unlink(missing_ok=True)
        fsync_dir(self.files.dir)
        # keep appending after a compaction: into a new segment past it
        os.close(self._fd)
        self.gen = upto + 1
        self._path = self.files.segment(self.gen)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)

    def close(self) -> None:
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        if self._path.stat().st_size == 0:
            self._path.unlink(missing_ok=True)
        os.close(self._lock_fd)

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: what every attempt at a shard has spent, summed over all its result rows (superseded ones too)
SPENT_COLUMNS = ("cost_usd", "prompt_tokens", "generated_tokens")


def spent_in(results: pa.Table) -> dict[str, float | int]:
    """Cost and tokens recorded in result rows. The store keeps every row ever written (an error row that a
    later attempt replaced, a refusal that was billed), so this is what earlier attempts spent; requests
    cut off by a kill before their batch was written are the only spending it cannot see."""
    spent: dict[str, float | int] = {}
    for name in SPENT_COLUMNS:
        if name in results.column_names:
            total = pc.sum(results[name]).as_py()
            if total is not None:
                spent[name] = total
    return spent
