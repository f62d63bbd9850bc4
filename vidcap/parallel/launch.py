"""Start the N ranks of a tensor-parallel shard task on this machine and watch them (torchrun-like).

`run_shards_local(run, shards)` is what `vidcap run-shard` and the local executor call when the run's
`tp_size` is above 1. Each rank is `python -m vidcap.parallel RUN SHARD...` with torchrun's variables
(RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT = a free port) and
OMP_NUM_THREADS=1 unless set (as torchrun does; 2 threads per rank made generate 10-100x slower on a small
CPU machine). Ranks run in sessions of their own, so a Ctrl-C at the terminal reaches only this process,
which forwards SIGTERM/SIGINT to rank 0 alone: rank 0 decides when to stop and tells the others.

The launcher watches its ranks: the first one to exit non-zero (or die from a signal) ends the task:
the others are killed (with their process groups: prefetch workers, compilers), and the launcher raises a
one-line error naming the rank and its reason (each rank writes it to a file before exiting). Ranks watch
the launcher too: they exit when it is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vidcap.errors import UserError
from vidcap.parallel.env import PARENT_ENV, REASON_ENV, free_port
from vidcap.parallel.watchdog import EXIT_STALLED
from vidcap.run import RunDir
from vidcap.signals import in_slurm_job, on_signals, stop_message
from vidcap.worker import ShardOutcome

POLL_S = 0.1
#: after a rank failed, how long the others get to exit on their own (so that the cause can be told apart)
CAUSE_WAIT_S = 1.0
#: after rank 0 finished, followers get this long to leave on their own
FOLLOWERS_GRACE_S = 30.0


class TensorParallelFailed(UserError):
    """A rank failed: printed as one line by the CLI (exit 1); a rerun continues the shard."""

    exit_code = 1


def rank_environment(rank: int, world: int, port: int, reason_file: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
        PARENT_ENV: str(os.getpid()), REASON_ENV: reason_file,
    })
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def start_ranks(argv: list[str], world: int, folder: Path, module: str = "vidcap.parallel",
                follower_argv: tuple[str, ...] = ("--no-progress",)) -> list[subprocess.Popen[bytes]]:
    """Start `python -m MODULE ARGV` once per rank (rank 0 first); their reasons go to `folder`."""
    port = free_port()
    procs = []
    for rank in range(world):
        args = list(argv) + ([] if rank == 0 else list(follower_argv))
        procs.append(subprocess.Popen([sys.executable, "-m", module, *args], start_new_session=True,
                                      env=rank_environment(rank, world, port, str(folder / f"reason-{rank}"))))
    return procs


def kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL every rank that is still running, with its process group (its prefetch workers)."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def describe_exit(rank: int, world: int, code: int, folder: Path) -> tuple[int, str]:
    """(exit code the rank reported, its one-line reason) for a rank that exited with `code` (< 0: a
    signal, and no reason of its own)."""
    reason_file = folder / f"reason-{rank}"
    if reason_file.exists():
        lines = reason_file.read_text(encoding="utf-8", errors="replace").splitlines()
        if len(lines) >= 2:
            return int(lines[0]), lines[1]
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return code, f"killed by {name}"
    return code, f"exited with status {code}"


def root_cause(procs: list[subprocess.Popen[bytes]], failed: list[tuple[int, int]]) -> tuple[int, int]:
    """The failure to report: a rank that died or failed by itself rather than one that only noticed a
    peer was gone (the watchdog's status), which often exits first; the others get a moment to exit."""
    deadline = time.monotonic() + CAUSE_WAIT_S
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(POLL_S)
    failed = [(r, c) for r, c in ((r, p.poll()) for r, p in enumerate(procs)) if c not in (None, 0)] or failed
    causes = [(r, c) for r, c in failed if c != EXIT_STALLED]
    return (causes or failed)[0]


def supervise(procs: list[subprocess.Popen[bytes]], folder: Path, timeout_s: float | None = None) -> None:
    """Wait for every rank; on the first failure kill the rest and raise. SIGTERM/SIGINT go to rank 0, and
    so does USR2 inside a Slurm job (a plain sbatch job's time limit, which srun passes on to this process).
    `timeout_s` (None: no limit; the ranks' own watchdogs bound each phase) ends them all when exceeded."""
    world = len(procs)
    give_up = time.monotonic() + timeout_s if timeout_s else None
    signals = {"count": 0}

    def forward(signum: int, sender: str) -> None:
        """TERM (or a first Ctrl-C): rank 0 stops after the batch in flight; a second Ctrl-C: rank 0 stops
        now. USR2 (Slurm's time limit, passed on by srun in a plain sbatch job) goes to rank 0 as it is."""
        target = procs[0]
        if signum == signal.SIGUSR2 and not in_slurm_job():
            os.write(2, stop_message(signum, sender, "ignored (this process runs in no Slurm job)").encode())
            return
        if signum != signal.SIGUSR2:
            signals["count"] += 1
            os.write(2, stop_message(signum, sender, "telling tensor-parallel rank 0").encode())
            signum = signal.SIGTERM if signals["count"] == 1 else signal.SIGINT
        if target.poll() is None:
            os.kill(target.pid, signum)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda s, f: forward(s, "Ctrl-C")) if main else None
    try:
        with on_signals({signal.SIGTERM, signal.SIGUSR2}, forward) if main else contextlib.nullcontext():
            _watch(procs, folder, world, give_up, timeout_s)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _watch(procs: list[subprocess.Popen[bytes]], folder: Path, world: int, give_up: float | None,
           timeout_s: float | None) -> None:
    try:
        finished_at: float | None = None
        while True:
            codes = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                rank, code = root_cause(procs, failed)
                kill_all(procs)
                reported, line = describe_exit(rank, world, code, folder)
                if reported == UserError.exit_code:
                    raise UserError(line)
                raise TensorParallelFailed(f"tensor-parallel rank {rank}/{world}: {line}; the other rank(s) were "
                                           "stopped. What finished is kept: rerun to continue")
            if all(c == 0 for c in codes):
                return
            if give_up is not None and time.monotonic() > give_up:
                kill_all(procs)
                raise TensorParallelFailed(f"the {world} tensor-parallel ranks did not finish within {timeout_s:g} s")
            if codes[0] == 0:
                finished_at = finished_at or time.monotonic()
                if time.monotonic() - finished_at > FOLLOWERS_GRACE_S:
                    kill_all(procs)  # rank 0 wrote everything; a follower that does not leave is not waited for
                    return
            time.sleep(POLL_S)
    finally:
        kill_all(procs)


def run_shards_local(run: RunDir, shards: list[int], progress: bool = True) -> list[ShardOutcome]:
    """Caption `shards` one after another with tp_size ranks on this machine (the model loads once)."""
    from vidcap.tasks.spec import load_spec

    if not shards:
        return []
    world = load_spec(run).needs().ranks
    with tempfile.TemporaryDirectory(prefix="vidcap-tp-") as tmp:
        folder = Path(tmp)
        outcomes_path = folder / "outcomes.json"
        argv = [str(run.root), *map(str, shards), "--outcomes", str(outcomes_path)]
        if not progress:
            argv.append("--no-progress")
        supervise(start_ranks(argv, world, folder), folder)
        if not outcomes_path.exists():
            raise TensorParallelFailed("tensor-parallel rank 0 exited without its shard outcomes; rerun to continue")
        data = json.loads(outcomes_path.read_text())
    return [ShardOutcome(d["index"], bool(d["finished"]), d.get("stats") or {}) for d in data]
