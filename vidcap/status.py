"""`vidcap status`: where a run stands, as a table, without ever waiting on a job.

Completion markers are the truth for "done"; Slurm states (squeue, then sacct) say pending / running /
failed for the others, each query under a deadline; row counts come from the result store itself, and
throughput and ETA from the shards' stats files.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import time
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidcap.run import RunDir

FRESH_S = 120.0  # stats newer than this count a shard as running (local runs have no scheduler to ask)
LOG_LINES = 5


@dataclass(slots=True)
class ShardState:
    index: int
    state: str  # done, running, pending, failed, stopped, not submitted
    rows: int
    ok: int
    error: int
    job_id: str = ""
    slurm: str = ""
    videos_per_s: float = 0.0
    spent: dict[str, float | int] = field(default_factory=dict)  # cost and tokens of every attempt's rows
    flags: dict[str, int] = field(default_factory=dict)  # rows per caption-check flag, current rows
    log_tail: list[str] = field(default_factory=list)
    busy: tuple[float, float, int] | None = None  # last attempt: started, last seen, rows processed

    @property
    def remaining(self) -> int:
        return self.rows - self.ok


def _log_files(run: RunDir, job_id: str) -> list[Path]:
    """A Slurm task's logs, newest layout first: submitit's in its array's folder (`<A>_<a>_0_log.err`,
    see vidcap.scheduler.slurm_array), or the plain sbatch template's `LOGS/<A>_<a>.out`."""
    from vidcap.scheduler.slurm_array import job_folder

    folder = job_folder(run.logs_dir, job_id)
    names = [f"{job_id}_*_log.err", f"{job_id}_*_log.out"] if "_" in job_id else ["*_log.err", "*_log.out"]
    found = [path for name in names for path in sorted(folder.glob(name))]
    return found + [path for path in (run.logs_dir / f"{job_id}.err", run.logs_dir / f"{job_id}.out") if path.is_file()]


def _log_tail(run: RunDir, job_id: str) -> list[str]:
    for path in _log_files(run, job_id):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-LOG_LINES:]
    return []


def _local_state(stats: dict | None) -> str:
    if not stats:
        return "not submitted"
    fresh = time.time() - stats.get("updated_at", 0) < FRESH_S
    alive = stats.get("host") != socket.gethostname() or _pid_alive(stats.get("pid", 0))
    return "running" if fresh and alive and not stats.get("finished") else "stopped"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    return pid > 0


@dataclass(slots=True)
class RunStatus:
    """Where every shard of a run stands. Finished shards are kept as columns (`DoneColumns`) and shards with
    nothing yet as bare indices: at 100,000 shards one ShardState per shard was most of a cold `status`.
    `shards` holds the other shards (index order), one ShardState each."""

    sizes: list[int]
    jobs: dict[int, str]
    done: "DoneColumns"
    shards: list[ShardState]
    idle: list[int]  # not submitted and no files yet (index order)

    def __len__(self) -> int:
        return len(self.sizes)

    def states(self) -> list[ShardState]:
        """One ShardState per shard, in index order (what `shard_states` returns)."""
        done = self.done
        out: list[ShardState | None] = [None] * len(self.sizes)
        for k, index in enumerate(done.index):
            started, finished = done.started[k], done.finished[k]
            out[index] = ShardState(index, "done", self.sizes[index], done.ok[k], done.error[k],
                                    self.jobs.get(index, ""), "", 0.0, done.spent.get(index, _EMPTY),
                                    done.flags.get(index, _EMPTY), _NO_LINES,
                                    (started, finished, done.processed[k])
                                    if started and finished and finished >= started else None)
        for index in self.idle:
            out[index] = _idle(index, self.sizes[index])
        for state in self.shards:
            out[state.index] = state
        return out  # type: ignore[return-value]


def _idle(index: int, rows: int) -> ShardState:
    return ShardState(index, "not submitted", rows, 0, 0, "", "", 0.0, _EMPTY, _EMPTY, _NO_LINES, None)


def shard_states(run: RunDir, timeout_s: float = 20.0) -> list[ShardState]:
    """Every shard's state, one ShardState each, in index order."""
    return run_status(run, timeout_s).states()


def run_status(run: RunDir, timeout_s: float = 20.0) -> RunStatus:
    """Every shard's state. Built to stay quick at 100,000 shards: one listing per folder says which shards
    are done and which have results or stats at all, a finished shard costs its marker (and after the
    first time, not even that: see `_DoneCache`), and only unfinished shards with files are opened."""
    config = run.load_config()
    sizes = config["shards"]["sizes"]
    cache = _DoneCache(run)
    done = cache.columns.members()
    jobs = run.latest_jobs()
    from vidcap.scheduler.local_jobs import is_local_job, local_job_state

    slurm_ids = [j for s, j in jobs.items() if s not in done and not is_local_job(j)]
    states: dict[str, str] = {}
    if slurm_ids:
        from vidcap.scheduler.slurm import job_states

        states = job_states(slurm_ids, timeout_s=timeout_s)
    report: list[ShardState] = []
    idle: list[int] = []
    open_shards = [i for i in range(len(sizes)) if i not in done]
    with_results = run.result_shards() if open_shards else set()
    with_stats = run.stats_shards() if open_shards else set()
    for index in open_shards:
        rows = sizes[index]
        job_id = jobs.get(index, "")
        if not job_id and index not in with_results and index not in with_stats:  # the common case of a big run
            idle.append(index)
            continue
        counts = _counts(run, index) if index in with_results else {"ok": 0, "error": 0, "spent": {}}
        stats = run.read_stats(index) if index in with_stats else None
        slurm = states.get(job_id, "")
        log_tail: list[str] = []
        if is_local_job(job_id):  # a worker of a local pool: running while its stats are fresh
            state = _local_state(stats)
            if state != "running":
                state, log_tail = local_job_state(run, job_id)
                state = state or "stopped"
        elif job_id and slurm:
            from vidcap.scheduler.slurm_states import Phase, phase

            slurm_phase = phase(slurm)
            if slurm_phase is Phase.QUEUED:
                state = "pending"
            elif slurm_phase is Phase.RUNNING:
                state = "running"
            elif slurm_phase is Phase.UNKNOWN:
                state = _local_state(stats) if stats else "unknown"
            else:
                state = "failed"
        else:
            state = _local_state(stats)
        speed = stats.get("videos_per_s", 0.0) if stats and state == "running" else 0.0
        busy = _busy(stats.get("started_at"), stats.get("updated_at"),
                     (stats.get("rows_ok") or 0) + (stats.get("rows_error") or 0)) if stats else None
        entry = ShardState(index, state, rows, counts["ok"], counts["error"], job_id, slurm, speed, counts["spent"],
                           busy=busy, flags=counts.get("flags", {}))
        if state == "failed" and job_id:
            entry.log_tail = log_tail or _log_tail(run, job_id)
        report.append(entry)
    cache.save()
    return RunStatus(sizes, jobs, cache.columns, report, idle)


_NO_LINES: list[str] = []  # shared by every finished shard (never appended to: only failed shards get lines)


def _counts(run: RunDir, index: int) -> dict[str, Any]:
    """An unfinished shard's counts, from its results. The result store (pyarrow) is imported here, not at
    the top: a run whose open shards have no results yet gets its status without loading pyarrow at all."""
    from vidcap.results import read_results, result_counts

    return result_counts(read_results(run, index))


def _busy(start: float | None, end: float | None, processed: int) -> tuple[float, float, int] | None:
    return (float(start), float(end), int(processed)) if start and end and end >= start else None


@dataclass(slots=True)
class DoneColumns:
    """What the completion markers of the finished shards say, one list per field (row k of each is one
    shard, in no particular order), plus the marker files' inode and mtime that the cache is checked against.
    Totals over them are sums of lists, not a pass over one object per shard."""

    index: list[int] = field(default_factory=list)
    inode: list[int] = field(default_factory=list)
    mtime: list[int] = field(default_factory=list)
    ok: list[int] = field(default_factory=list)
    error: list[int] = field(default_factory=list)
    processed: list[int] = field(default_factory=list)
    started: list[float | None] = field(default_factory=list)  # None: unknown
    finished: list[float | None] = field(default_factory=list)
    spent: dict[int, dict] = field(default_factory=dict)  # only the shards that spent something
    flags: dict[int, dict] = field(default_factory=dict)  # only the shards with flagged rows

    INTS = ("index", "inode", "mtime", "ok", "error", "processed")
    FLOATS = ("started", "finished")

    def members(self) -> set[int]:
        return set(self.index)

    def append(self, index: int, inode: int, mtime: int, summary: tuple) -> None:
        ok, error, started, finished, processed, spent, flags = summary
        self.index.append(index)
        self.inode.append(inode)
        self.mtime.append(mtime)
        self.ok.append(ok)
        self.error.append(error)
        self.processed.append(processed)
        self.started.append(started)
        self.finished.append(finished)
        if spent:
            self.spent[index] = spent
        if flags:
            self.flags[index] = flags

    def copy_row(self, other: "DoneColumns", k: int) -> None:
        index = other.index[k]
        self.append(index, other.inode[k], other.mtime[k],
                    (other.ok[k], other.error[k], other.started[k], other.finished[k], other.processed[k],
                     other.spent.get(index), other.flags.get(index)))

    def spans(self) -> list[tuple[float, float, int]]:
        """(started, finished, processed) of each last attempt with both times known, as ShardState.busy."""
        return [(s, f, p) for s, f, p in zip(self.started, self.finished, self.processed) if s and f and f >= s]


class _DoneCache:
    """What `vidcap status` read from completion markers, kept in RUN/status-cache (binary columns: quick to
    load and to write at 100,000 shards) and trusted while a marker's file is the same (inode and
    modification time: a marker is only ever replaced by a new file, or removed, when its shard reopens). A
    finished shard's counts never change, so a second `status` on a big run reads no marker at all.

    It does not even stat the markers when the done folder itself is unchanged: every marker is created,
    replaced or removed by a rename or unlink in that folder, which sets the folder's modification time. The
    cached listing is trusted only when it was taken at least SETTLED_NS after that time, so a change made in
    the same clock tick as the listing (same mtime) cannot hide."""

    SETTLED_NS = 2_000_000_000

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.changed = False
        cached, folder_key = _load_cache(run.status_cache_path)
        self.listed_ns = time.time_ns()  # before the folder's stat and listing: a later change outdates both
        try:
            self.folder_mtime = os.stat(run.done_dir).st_mtime_ns
        except FileNotFoundError:
            self.folder_mtime = 0
        self.fast = cached is not None and folder_key[0] == self.folder_mtime \
            and folder_key[1] - folder_key[0] >= self.SETTLED_NS
        if self.fast:  # the folder is as listed last time: same markers, same files
            self.columns: DoneColumns = cached  # type: ignore[assignment]
            return
        self.changed = True
        where = {index: k for k, index in enumerate(cached.index)} if cached else {}
        live = DoneColumns()
        try:
            folder = os.open(run.done_dir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            self.columns = live
            return
        to_read: list[tuple[int, str]] = []
        try:  # names only, and each file opened relative to the folder: per marker, one open, fstat, read
            for name in os.listdir(folder):
                if not (name.startswith("shard-") and name[6:].isdigit()):
                    continue
                index = int(name[6:])
                k = where.get(index)
                if k is not None:
                    try:
                        info = os.stat(name, dir_fd=folder)
                    except FileNotFoundError:  # removed since the listing: the shard reopened
                        continue
                    if cached.inode[k] == info.st_ino and cached.mtime[k] == info.st_mtime_ns:  # type: ignore[union-attr]
                        live.copy_row(cached, k)  # type: ignore[arg-type]
                        continue
                to_read.append((index, name))
            for index, found in _read_markers(to_read, folder):
                if found is not None:
                    live.append(index, found[0], found[1], self._summary(index, found[2]))
        finally:
            os.close(folder)
        self.columns = live

    def _summary(self, index: int, summary: dict[str, Any]) -> tuple:
        if "ok" not in summary:  # a marker written before markers held counts (or torn: then counted anew)
            summary = {**summary, **_counts(self.run, index)}
            stats = self.run.read_stats(index) or {}
            summary.setdefault("started_at", stats.get("started_at"))
            summary.setdefault("processed", (stats.get("rows_ok") or 0) + (stats.get("rows_error") or 0))
        get = summary.get
        started, finished = get("started_at"), get("finished_at")
        return (int(get("ok", 0)), int(get("error", 0)), float(started) if started else None,
                float(finished) if finished else None, int(get("processed") or 0), get("spent") or _EMPTY,
                get("flags") or _EMPTY)

    def save(self) -> None:
        """Best effort: a run folder this user may only read still gets its status (just not faster)."""
        if self.changed:
            _save_cache(self.run.status_cache_path, self.columns, (self.folder_mtime, self.listed_ns))


#: the cache file: MAGIC, crc32 of the rest, header length | JSON header | the columns as 8-byte arrays
_CACHE = struct.Struct("<4sIQ")
_CACHE_MAGIC = b"VSC3"


def _save_cache(path: Path, columns: DoneColumns, folder_key: tuple[int, int]) -> None:
    """Written atomically (a temporary file renamed over the old one) but not fsynced: it is a cache, a torn
    file fails its checksum and is rebuilt, and a lost one only makes the next `status` read the markers."""
    header = json.dumps({"folder": list(folder_key), "count": len(columns.index),
                         "spent": {str(i): v for i, v in columns.spent.items()},
                         "flags": {str(i): v for i, v in columns.flags.items()}}, separators=(",", ":")).encode()
    nan = math.nan
    body = [header]
    body += [array("q", getattr(columns, name)).tobytes() for name in DoneColumns.INTS if name != "inode"]
    body.append(array("Q", columns.inode).tobytes())
    body += [array("d", [nan if v is None else v for v in getattr(columns, name)]).tobytes()
             for name in DoneColumns.FLOATS]
    payload = b"".join(body)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(_CACHE.pack(_CACHE_MAGIC, zlib.crc32(payload), len(header)) + payload)
        os.replace(tmp, path)
    except (OSError, OverflowError, TypeError):  # OverflowError/TypeError: a marker number no column holds
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _load_cache(path: Path) -> tuple[DoneColumns | None, tuple[int, int]]:
    """The cached columns and the folder's (mtime, listing time), or None when missing, torn or foreign."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        magic, crc, header_len = _CACHE.unpack_from(data)
        payload = memoryview(data)[_CACHE.size:]
        if magic != _CACHE_MAGIC or zlib.crc32(payload) != crc:
            return None, (0, 0)
        header = json.loads(bytes(payload[:header_len]))
        count, offset = int(header["count"]), header_len
        if len(payload) != header_len + 8 * count * (len(DoneColumns.INTS) + len(DoneColumns.FLOATS)):
            return None, (0, 0)
        found: dict[str, list] = {}
        for name in [n for n in DoneColumns.INTS if n != "inode"] + ["inode"] + list(DoneColumns.FLOATS):
            column = array("Q" if name == "inode" else "d" if name in DoneColumns.FLOATS else "q")
            column.frombytes(payload[offset:offset + 8 * count])
            found[name] = column.tolist()
            offset += 8 * count
        for name in DoneColumns.FLOATS:
            found[name] = [None if v != v else v for v in found[name]]  # NaN: unknown
        columns = DoneColumns(**found, spent={int(i): v for i, v in header["spent"].items()},
                              flags={int(i): v for i, v in header["flags"].items()})
        return columns, (int(header["folder"][0]), int(header["folder"][1]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, struct.error):
        return None, (0, 0)


def _read_markers(markers: list[tuple[int, str]], folder: int, threads: bool | None = None) -> list[tuple[int, Any]]:
    """`_read_marker` of each (index, name), in that order. A first chunk is read here; if it had to come from
    the disk (block reads counted by getrusage), the rest is read by READERS threads: a marker out of the page
    cache costs a disk read, a wait that releases the GIL, and 50,000 of those one after another made a cold
    `status` take minutes. From the page cache, threads only fight over the GIL: then one reads them all."""
    import resource

    before = resource.getrusage(resource.RUSAGE_THREAD).ru_inblock
    found = [(index, _read_marker(name, folder)) for index, name in markers[:READ_CHUNK]]
    if len(markers) <= READ_CHUNK:
        return found
    rest = markers[READ_CHUNK:]
    if threads is None:
        threads = resource.getrusage(resource.RUSAGE_THREAD).ru_inblock - before >= READ_CHUNK // 8
    if not threads:  # from the page cache: go on here
        return found + [(index, _read_marker(name, folder)) for index, name in rest]
    from concurrent.futures import ThreadPoolExecutor

    def read(chunk: list[tuple[int, str]]) -> list[tuple[int, Any]]:
        return [(index, _read_marker(name, folder)) for index, name in chunk]

    chunks = [rest[i:i + READ_CHUNK] for i in range(0, len(rest), READ_CHUNK)]
    with ThreadPoolExecutor(READERS) as pool:
        return found + [item for part in pool.map(read, chunks) for item in part]


READERS, READ_CHUNK = 8, 512  # threads reading markers, and markers per task handed to one


def _read_marker(name: str, folder: int) -> tuple[int, int, dict[str, Any]] | None:
    """A completion marker in the open folder `folder`: the inode and mtime of the file read, and its summary
    ({} when torn); None when gone. Plain os calls: the cold `status` of a big run reads tens of thousands of
    these small files, and pathlib's overhead was half of it; fstat on the open file, not a stat of a path."""
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=folder)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        data = os.read(fd, 1 << 16)
        while len(data) % (1 << 16) == 0 and data:  # a marker is a few hundred bytes; a longer one still reads
            more = os.read(fd, 1 << 16)
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    try:
        summary = _DECODE(data.decode("utf-8").lstrip())[0]
    except ValueError:  # a torn or foreign file (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        summary = {}
    return info.st_ino, info.st_mtime_ns, summary if isinstance(summary, dict) else {}


_DECODE = json.JSONDecoder().raw_decode  # json.loads minus its per-call checks (encoding detection, wrapper)
_EMPTY: dict = {}  # the spent / flags of a shard with none, shared (only ever read)


def overall_rate(report: list[ShardState]) -> float:
    """Videos per second over the run so far: rows processed by the shards' last attempts, divided by the
    time during which at least one of them ran (the union of their intervals). Dividing by their summed
    seconds instead gave the speed of one worker: N shards in parallel looked N times slower."""
    return _rate([s.busy for s in report if s.busy])


def _rate(spans: list[tuple[float, float, int]]) -> float:
    spans.sort()
    if not spans:
        return 0.0
    processed = sum(p for _, _, p in spans)
    covered, end = 0.0, float("-inf")
    for start, stop, _ in spans:
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return processed / covered if covered > 0 else 0.0


def format_status(run: RunDir, report: RunStatus | list[ShardState], show_all: bool = False) -> str:
    if isinstance(report, RunStatus) and show_all:  # every shard is listed: one ShardState each after all
        report = report.states()
    if not isinstance(report, RunStatus):
        sizes = [s.rows for s in report]
        report = RunStatus(sizes, {}, DoneColumns(), list(report), [])
    config = run.load_config()
    from vidcap.tasks.spec import describe_run

    engine = config.get("engine", {}).get("settings", {}) | {"engine": config.get("engine", {}).get("name")}
    done, shards = report.done, report.shards
    counts: dict[str, int] = {"done": len(done.index), "not submitted": len(report.idle)}
    rows = sum(report.sizes)
    ok, error = sum(done.ok), sum(done.error)
    to_run = sum(report.sizes[i] for i in report.idle)
    running_rate = 0.0
    tokens_in = tokens_out = 0
    spent: list[tuple[int, dict]] = sorted(done.spent.items())  # summed in shard order, as always
    flagged: list[tuple[int, dict]] = sorted(done.flags.items())
    for s in shards:  # one pass: at 100,000 shards each extra pass over the report costs a visible moment
        counts[s.state] = counts.get(s.state, 0) + 1
        ok += s.ok
        error += s.error
        running_rate += s.videos_per_s
        if s.state != "done":
            to_run += s.rows - s.ok
        if s.spent:
            spent.append((s.index, s.spent))
        if s.flags:
            flagged.append((s.index, s.flags))
    cost: list[float] = []
    for _, used in sorted(spent, key=lambda x: x[0]) if shards else spent:
        if "cost_usd" in used:
            cost.append(used["cost_usd"])
        tokens_in += used.get("prompt_tokens", 0)
        tokens_out += used.get("generated_tokens", 0)
    flags: dict[str, int] = {}
    for _, found in sorted(flagged, key=lambda x: x[0]) if shards else flagged:
        for name, n in found.items():
            flags[name] = flags.get(name, 0) + n
    rate = running_rate or _rate([s.busy for s in shards if s.busy] + done.spans())
    remaining = rows - ok
    eta = _duration(to_run / rate) if rate > 0 and to_run else ("-" if not to_run else "unknown")
    lines = [
        f"run       {run.root}",
        f"manifest  {config['manifest']['path']} ({rows} rows, {len(report)} shards)",
        f"task      {describe_run(config)}",
        "",
        "shards    " + "  ".join(f"{name} {counts.get(name, 0)}" for name in
                                 ("done", "running", "pending", "failed", "stopped", "not submitted", "unknown")
                                 if counts.get(name) or name in ("done", "running", "pending", "failed")),
        f"rows      ok {ok}  error {error}  remaining {remaining}  ({100.0 * ok / max(rows, 1):.1f}% done)",
        f"speed     {rate:.2f} videos/s{' (running shards)' if running_rate else ' (so far)'}  ETA {eta}",
    ]
    if cost:
        per_ok = f", ${sum(cost) / ok:.5f} per captioned video" if ok else ""
        unknown = unanswered_requests(run)
        counted = ("every attempt counted" if not unknown else
                   f"every attempt counted but {unknown} request{'s' if unknown > 1 else ''} sent with no answer "
                   f"recorded (in flight now, or lost with a killed task: possibly billed)")
        lines.append(f"cost      ${sum(cost):.4f} estimated so far{per_ok}; {counted} "
                     f"({tokens_in} input + {tokens_out} output tokens; prices: --prices-file)")
    elif engine.get("engine") == "openai" and tokens_in:
        lines.append(f"cost      unknown: no price for {engine.get('model')!r} (--prices-file); "
                     f"{tokens_in} input + {tokens_out} output tokens so far")
    if flags:
        lines.append("flags     " + "  ".join(f"{name} {n}" for name, n in sorted(flags.items(), key=lambda x: -x[1]))
                     + "  (caption checks, rows now; `vidcap merge --drop-flagged` leaves them out)")
    shown = report.shards if show_all else _not_done(report, 50)  # with --all, `shards` holds every shard
    if shown:
        lines += ["", f"{'shard':>6}  {'state':<13} {'job':<14} {'slurm':<11} {'rows':>6} {'ok':>6} {'error':>6} "
                      f"{'todo':>6} {'videos/s':>8}"]
        for s in shown:
            lines.append(f"{s.index:>6}  {s.state:<13} {s.job_id or '-':<14} {s.slurm or '-':<11} {s.rows:>6} "
                         f"{s.ok:>6} {s.error:>6} {s.remaining:>6} {s.videos_per_s:>8.2f}")
        more = len(report) - len(done.index) - sum(s.state == "done" for s in shards) - len(shown)
        if more > 0:
            lines.append(f"   … {more} more (--all shows every shard)")
    for s in shards:
        if s.state == "failed":
            lines.append(f"\nshard {s.index} (job {s.job_id}, {s.slurm or 'local worker'}): last lines of its log")
            lines += [f"    {line}" for line in s.log_tail] or ["    (no log)"]
    return "\n".join(lines)


def _not_done(report: RunStatus, limit: int) -> list[ShardState]:
    """The first `limit` shards not done, in index order: the described ones merged with the idle ones, an
    idle one made into a ShardState only when it is shown."""
    shown: list[ShardState] = []
    idle, k = report.idle, 0
    for s in report.shards:
        while k < len(idle) and idle[k] < s.index and len(shown) < limit:
            shown.append(_idle(idle[k], report.sizes[idle[k]]))
            k += 1
        if len(shown) >= limit:
            return shown
        if s.state != "done":
            shown.append(s)
    while k < len(idle) and len(shown) < limit:
        shown.append(_idle(idle[k], report.sizes[idle[k]]))
        k += 1
    return shown


def unanswered_requests(run: RunDir) -> int:
    """Requests an API engine wrote down as sent and never as ended: a task killed while they were in flight.
    The provider may have billed them; no result row holds their cost (vidcap.attempts)."""
    from vidcap.attempts import read_journal

    try:
        paths = sorted(run.attempts_dir.glob("*.jsonl"))
    except OSError:
        return 0
    return sum(len(read_journal(path)[1]) for path in paths)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
