"""`vidcap status`: where a run stands, as a table, without ever waiting on a job.

Completion markers are the truth for "done"; Slurm states (squeue, then sacct) say pending / running /
failed for the others, each query under a deadline; row counts come from the result store itself, and
throughput and ETA from the shards' stats files.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc

from vidcap.manifest.resolve import best_per_key
from vidcap.results import read_results, spent_in
from vidcap.run import RunDir

FRESH_S = 120.0  # stats newer than this count a shard as running (local runs have no scheduler to ask)
LOG_LINES = 5


@dataclass
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
    log_tail: list[str] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return self.rows - self.ok


def _result_counts(run: RunDir, index: int) -> tuple[int, int, dict[str, float | int]]:
    """(ok keys, failed keys, spending) from the result store: every row ever written counts as spent."""
    results = read_results(run, index)
    best = best_per_key(results, key="key")
    if best.num_rows == 0:
        return 0, 0, {}
    ok = pc.sum(pc.equal(best["status"], "ok")).as_py() or 0
    return ok, best.num_rows - ok, spent_in(results)


def _log_tail(run: RunDir, job_id: str) -> list[str]:
    folder = run.logs_dir / job_id
    for pattern in ("*_log.err", "*_log.out", "*.err", "*.out"):
        for path in sorted(folder.glob(pattern)):
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
    config = run.load_config()
    sizes = config["shards"]["sizes"]
    jobs = run.latest_jobs()
    slurm_ids = [j for s, j in jobs.items() if not run.is_done(s)]
    states: dict[str, str] = {}
    if slurm_ids:
        from vidcap.scheduler.slurm import job_states

        states = job_states(slurm_ids, timeout_s=timeout_s)
    report = []
    for index, rows in enumerate(sizes):
        ok, error, spent = _result_counts(run, index)
        stats = run.read_stats(index)
        job_id = jobs.get(index, "")
        slurm = states.get(job_id, "")
        if run.is_done(index):
            state = "done"
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
        entry = ShardState(index, state, rows, ok, error, job_id, slurm, speed, spent)
        if state == "failed" and job_id:
            entry.log_tail = _log_tail(run, job_id)
        report.append(entry)
    return report


def overall_rate(run: RunDir, shards: int) -> float:
    """Videos per second over the run so far (first start to last update of every shard's stats)."""
    stats = [s for s in (run.read_stats(i) for i in range(shards)) if s]
    if not stats:
        return 0.0
    processed = sum(s.get("rows_ok", 0) + s.get("rows_error", 0) for s in stats)
    busy = sum(s.get("seconds", 0.0) for s in stats)
    return processed / busy if busy > 0 else 0.0


def format_status(run: RunDir, report: list[ShardState], show_all: bool = False) -> str:
    config = run.load_config()
    from vidcap.tasks.spec import describe_run

    engine = config.get("engine", {}).get("settings", {}) | {"engine": config.get("engine", {}).get("name")}
    counts: dict[str, int] = {}
    for s in report:
        counts[s.state] = counts.get(s.state, 0) + 1
    rows = sum(s.rows for s in report)
    ok = sum(s.ok for s in report)
    error = sum(s.error for s in report)
    running_rate = sum(s.videos_per_s for s in report)
    rate = running_rate or overall_rate(run, len(report))
    remaining = rows - ok
    to_run = sum(s.remaining for s in report if s.state != "done")
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
    cost = [s.spent["cost_usd"] for s in report if "cost_usd" in s.spent]
    tokens_in = sum(s.spent.get("prompt_tokens", 0) for s in report)
    tokens_out = sum(s.spent.get("generated_tokens", 0) for s in report)
    if cost:
        per_ok = f", ${sum(cost) / ok:.5f} per captioned video" if ok else ""
        lines.append(f"cost      ${sum(cost):.4f} estimated so far{per_ok}; every attempt counted "
                     f"({tokens_in} input + {tokens_out} output tokens; prices: --prices-file)")
    elif engine.get("engine") == "openai" and tokens_in:
        lines.append(f"cost      unknown: no price for {engine.get('model')!r} (--prices-file); "
                     f"{tokens_in} input + {tokens_out} output tokens so far")
    shown = [s for s in report if show_all or s.state != "done"]
    if shown:
        lines += ["", f"{'shard':>6}  {'state':<13} {'job':<12} {'slurm':<11} {'rows':>6} {'ok':>6} {'error':>6} "
                      f"{'todo':>6} {'videos/s':>8}"]
        for s in shown[:50] if not show_all else shown:
            lines.append(f"{s.index:>6}  {s.state:<13} {s.job_id or '-':<12} {s.slurm or '-':<11} {s.rows:>6} "
                         f"{s.ok:>6} {s.error:>6} {s.remaining:>6} {s.videos_per_s:>8.2f}")
        if len(shown) > 50 and not show_all:
            lines.append(f"   … {len(shown) - 50} more (--all shows every shard)")
    for s in report:
        if s.state == "failed":
            lines.append(f"\nshard {s.index} (job {s.job_id}, {s.slurm}): last lines of its log")
            lines += [f"    {line}" for line in s.log_tail] or ["    (no log)"]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
