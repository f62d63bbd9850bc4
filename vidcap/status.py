"""`vidcap status`: where a run stands, as a table, without ever waiting on a job.

Completion markers are the truth for "done"; Slurm states (squeue, then sacct) say pending / running /
failed for the others, each query under a deadline; row counts come from the result store itself, and
throughput and ETA from the shards' stats files.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from vidcap.durable import atomic_write_text
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


def shard_states(run: RunDir, timeout_s: float = 20.0) -> list[ShardState]:
    """Every shard's state. Built to stay quick at 100,000 shards: one listing per folder says which shards
    are done and which have results or stats at all, a finished shard costs its marker (and after the
    first time, not even that: see `_DoneCache`), and only unfinished shards with files are opened."""
    config = run.load_config()
    sizes = config["shards"]["sizes"]
    cache = _DoneCache(run)
    done = cache.done
    jobs = run.latest_jobs()
    from vidcap.scheduler.local_jobs import is_local_job, local_job_state

    slurm_ids = [j for s, j in jobs.items() if s not in done and not is_local_job(j)]
    states: dict[str, str] = {}
    if slurm_ids:
        from vidcap.scheduler.slurm import job_states

        states = job_states(slurm_ids, timeout_s=timeout_s)
    report = []
    append = report.append
    summaries = cache.summaries
    open_shards = [i for i in range(len(sizes)) if i not in done]
    with_results = run.result_shards() if open_shards else set()
    with_stats = run.stats_shards() if open_shards else set()
    for index, rows in enumerate(sizes):
        job_id = jobs.get(index, "")
        if index in done:
            ok, error, started, finished, processed, spent, flags = summaries[index]
            append(ShardState(index, "done", rows, ok, error, job_id, "", 0.0, spent, flags, _NO_LINES,
                              (started, finished, processed) if started and finished and finished >= started
                              else None))
            continue
        if not job_id and index not in with_results and index not in with_stats:  # the common case of a big run
            append(ShardState(index, "not submitted", rows, 0, 0, "", "", 0.0, _EMPTY, _EMPTY, _NO_LINES, None))
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
        append(entry)
    cache.save()
    return report


_NO_LINES: list[str] = []  # shared by every finished shard (never appended to: only failed shards get lines)


def _counts(run: RunDir, index: int) -> dict[str, Any]:
    """An unfinished shard's counts, from its results. The result store (pyarrow) is imported here, not at
    the top: a run whose open shards have no results yet gets its status without loading pyarrow at all."""
    from vidcap.results import read_results, result_counts

    return result_counts(read_results(run, index))


def _busy(start: float | None, end: float | None, processed: int) -> tuple[float, float, int] | None:
    return (float(start), float(end), int(processed)) if start and end and end >= start else None


class _DoneCache:
    """What `vidcap status` read from completion markers, kept in RUN/status-cache.json (parallel lists: quick
    to decode at 100,000 shards) and trusted while a marker's file is the same (inode and modification time:
    a marker is only ever replaced by a new file, or removed, when its shard reopens). A finished shard's
    counts never change, so a second `status` on a big run reads no marker at all.

    It does not even stat the markers when the done folder itself is unchanged: every marker is created,
    replaced or removed by a rename or unlink in that folder, which sets the folder's modification time. The
    cached listing is trusted only when it was taken at least SETTLED_NS after that time, so a change made in
    the same clock tick as the listing (same mtime) cannot hide."""

    VERSION = 2
    SETTLED_NS = 2_000_000_000
    FIELDS = ("inode", "mtime", "ok", "error", "started", "finished", "processed")

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.changed = False
        # index -> (inode, mtime_ns, ok, error, started_at, finished_at, processed, spent, flags)
        self.entries: dict[int, tuple] = {}
        folder_key: list[int] = []
        columns: list[list] = []
        try:
            data = json.loads(run.status_cache_path.read_text(encoding="utf-8"))
            if data.get("version") == self.VERSION:
                folder_key, spent, flags = data["folder"], data["spent"], data["flags"]
                columns = [data[name] for name in ("index",) + self.FIELDS]
                if any(len(column) != len(columns[0]) for column in columns):
                    raise ValueError("columns of different lengths")  # never written so; rebuilt if it is
                columns.append([spent.get(str(i), _EMPTY) for i in columns[0]] if spent else repeat(_EMPTY))
                columns.append([flags.get(str(i), _EMPTY) for i in columns[0]] if flags else repeat(_EMPTY))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            columns = []
        self.listed_ns = time.time_ns()  # before the folder's stat and listing: a later change outdates both
        try:
            self.folder_mtime = os.stat(run.done_dir).st_mtime_ns
        except FileNotFoundError:
            self.folder_mtime = 0
        self.fast = bool(columns) and folder_key[0] == self.folder_mtime \
            and folder_key[1] - folder_key[0] >= self.SETTLED_NS
        if self.fast:  # the folder is as listed last time: same markers, same files
            self.summaries: dict[int, tuple] = dict(zip(columns[0], zip(*columns[3:])))
            self.done = self.summaries.keys()
            return
        if columns:
            self.entries = dict(zip(columns[0], zip(*columns[1:])))
        self.changed = True
        live: dict[int, tuple] = {}
        try:
            with os.scandir(run.done_dir) as found:
                for entry in found:
                    name = entry.name
                    if name.startswith("shard-") and name[6:].isdigit():
                        index, inode, mtime = int(name[6:]), entry.inode(), entry.stat().st_mtime_ns
                        cached = self.entries.get(index)
                        if cached is None or cached[0] != inode or cached[1] != mtime:
                            cached = (inode, mtime, *self._read(index, entry.path))
                        live[index] = cached
        except FileNotFoundError:
            pass
        self.entries = live
        self.summaries = {index: entry[2:] for index, entry in live.items()}
        self.done = self.summaries.keys()

    def _read(self, index: int, path: str) -> tuple:
        summary = _read_marker(path)
        if "ok" not in summary:  # a marker written before markers held counts
            summary = {**summary, **_counts(self.run, index)}
            stats = self.run.read_stats(index) or {}
            summary.setdefault("started_at", stats.get("started_at"))
            summary.setdefault("processed", (stats.get("rows_ok") or 0) + (stats.get("rows_error") or 0))
        started, finished = summary.get("started_at"), summary.get("finished_at")
        return (summary.get("ok", 0), summary.get("error", 0), float(started) if started else None,
                float(finished) if finished else None, int(summary.get("processed") or 0),
                summary.get("spent") or _EMPTY, summary.get("flags") or _EMPTY)

    def save(self) -> None:
        """Best effort: a run folder this user may only read still gets its status (just not faster)."""
        if not self.changed:
            return
        indices = sorted(self.entries)
        data: dict[str, Any] = {"version": self.VERSION, "folder": [self.folder_mtime, self.listed_ns],
                                "index": indices}
        columns = list(zip(*(self.entries[i] for i in indices))) or [()] * (len(self.FIELDS) + 2)
        data.update(zip(self.FIELDS, map(list, columns)))
        data["spent"] = {str(i): spent for i, spent in zip(indices, columns[7]) if spent}
        data["flags"] = {str(i): flags for i, flags in zip(indices, columns[8]) if flags}
        try:
            atomic_write_text(self.run.status_cache_path, json.dumps(data, separators=(",", ":")))
        except OSError:
            pass


def _read_marker(path: str) -> dict[str, Any]:
    """A completion marker, as RunDir.read_done reads it ({} when gone or torn), with plain os calls: the cold
    `status` of a big run reads tens of thousands of these small files, and pathlib's overhead was half of it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}
    try:
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
        return {}
    return summary if isinstance(summary, dict) else {}


_DECODE = json.JSONDecoder().raw_decode  # json.loads minus its per-call checks (encoding detection, wrapper)
_EMPTY: dict = {}  # the spent / flags of a shard with none, shared (only ever read)


def overall_rate(report: list[ShardState]) -> float:
    """Videos per second over the run so far: rows processed by the shards' last attempts, divided by the
    time during which at least one of them ran (the union of their intervals). Dividing by their summed
    seconds instead gave the speed of one worker: N shards in parallel looked N times slower."""
    spans = sorted(s.busy for s in report if s.busy)
    if not spans:
        return 0.0
    processed = sum(p for _, _, p in spans)
    covered, end = 0.0, float("-inf")
    for start, stop, _ in spans:
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return processed / covered if covered > 0 else 0.0


def format_status(run: RunDir, report: list[ShardState], show_all: bool = False) -> str:
    config = run.load_config()
    from vidcap.tasks.spec import describe_run

    engine = config.get("engine", {}).get("settings", {}) | {"engine": config.get("engine", {}).get("name")}
    counts: dict[str, int] = {}
    rows = ok = error = to_run = 0
    running_rate = 0.0
    tokens_in = tokens_out = 0
    cost: list[float] = []
    flags: dict[str, int] = {}
    for s in report:  # one pass: at 100,000 shards each extra pass over the report costs a visible moment
        counts[s.state] = counts.get(s.state, 0) + 1
        rows += s.rows
        ok += s.ok
        error += s.error
        running_rate += s.videos_per_s
        if s.state != "done":
            to_run += s.rows - s.ok
        if s.spent:
            if "cost_usd" in s.spent:
                cost.append(s.spent["cost_usd"])
            tokens_in += s.spent.get("prompt_tokens", 0)
            tokens_out += s.spent.get("generated_tokens", 0)
        for name, n in s.flags.items():
            flags[name] = flags.get(name, 0) + n
    rate = running_rate or overall_rate(report)
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
    shown = [s for s in report if show_all or s.state != "done"]
    if shown:
        lines += ["", f"{'shard':>6}  {'state':<13} {'job':<14} {'slurm':<11} {'rows':>6} {'ok':>6} {'error':>6} "
                      f"{'todo':>6} {'videos/s':>8}"]
        for s in shown[:50] if not show_all else shown:
            lines.append(f"{s.index:>6}  {s.state:<13} {s.job_id or '-':<14} {s.slurm or '-':<11} {s.rows:>6} "
                         f"{s.ok:>6} {s.error:>6} {s.remaining:>6} {s.videos_per_s:>8.2f}")
        if len(shown) > 50 and not show_all:
            lines.append(f"   … {len(shown) - 50} more (--all shows every shard)")
    for s in report:
        if s.state == "failed":
            lines.append(f"\nshard {s.index} (job {s.job_id}, {s.slurm or 'local worker'}): last lines of its log")
            lines += [f"    {line}" for line in s.log_tail] or ["    (no log)"]
    return "\n".join(lines)


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
