"""The local worker pool (`--workers N`): data parallel on one machine, as an array does it on a cluster.

An 8-GPU node with no Slurm (or an `salloc --gpus 8` shell) would otherwise run one shard task at a time and
leave most GPUs idle. The pool starts N worker processes (`vidcap.scheduler.pool_worker`), each with its own
slice of tp-size devices of CUDA_VISIBLE_DEVICES, and hands out the unfinished shards one at a time as workers
ask for them: a fast worker takes more, and each worker loads its model once for all of its shards.

Claims are safe because one process, this one, hands every shard out once, in order, and only after seeing
that its shard lock (vidcap.results) is free and its completion marker absent: a shard that another process
(a Slurm task, another pool) is writing is skipped, never run twice. Each claim is recorded in
RUN/jobs.jsonl as job `local-PID-wK` (this pool's pid, worker K), so `vidcap status` shows the workers as it
shows array tasks: running while the worker's stats are fresh, failed with the last lines of its log
(RUN/logs/local-PID-wK/worker.err) when it died.

Stopping. Workers run in sessions of their own, so a Ctrl-C at the terminal reaches only the pool, which
stops handing out shards and sends SIGTERM to every worker: each stops after its batch in flight. A second
Ctrl-C sends SIGINT (stop now). A worker that dies (kill -9, out of memory, a bug) is reported with its
reason; its shard stays unfinished for `vidcap resume`, and the other workers go on.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidcap.errors import UserError
from vidcap.run import RunDir
from vidcap.scheduler.local_jobs import DIED_NAME, JOB_PREFIX, LOG_NAME, is_local_job, local_job_state  # noqa: F401
from vidcap.scheduler.pool_worker import COMMAND, POOL_ENV, WORKER_ENV
from vidcap.worker import ShardOutcome

POLL_S = 0.2
PROGRESS_EVERY_S = 1.0


class WorkersFailed(UserError):
    """Every worker died before finishing: printed as one line (exit 1); a rerun continues."""

    exit_code = 1


# -- devices ------------------------------------------------------------------------------------------

def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (Slurm sets it in an allocation);
    without it, those nvidia-smi lists; none on a machine without NVIDIA GPUs."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


@dataclass(frozen=True)
class WorkerPlan:
    """Worker K's devices: a CUDA_VISIBLE_DEVICES value (None: leave the environment as it is, CPU)."""

    index: int
    devices: tuple[str, ...] = ()

    @property
    def cuda_visible_devices(self) -> str | None:
        return ",".join(self.devices) if self.devices else None


def plan_workers(workers: int | None, tp_size: int, gpus: list[str], on_cpu: bool = False) -> list[WorkerPlan]:
    """N workers, each with a slice of `tp_size` GPUs. Default N: GPUs // tp_size, or 1 without GPUs (or when
    the run is pinned to the CPU). More workers than the GPUs allow is refused."""
    if tp_size < 1:
        raise UserError(f"--tp-size must be at least 1, got {tp_size}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if on_cpu or not gpus:
        return [WorkerPlan(k) for k in range(workers or 1)]
    if len(gpus) < tp_size:
        raise UserError(f"--tp-size {tp_size} needs {tp_size} GPUs; {len(gpus)} visible "
                        f"(CUDA_VISIBLE_DEVICES={','.join(gpus)})")
    n = workers or len(gpus) // tp_size
    if n * tp_size > len(gpus):
        raise UserError(f"--workers {n} x --tp-size {tp_size} needs {n * tp_size} GPUs; {len(gpus)} visible "
                        f"({','.join(gpus)}): use --workers {len(gpus) // tp_size} or fewer")
    return [WorkerPlan(k, tuple(gpus[k * tp_size:(k + 1) * tp_size])) for k in range(n)]


# -- claims -------------------------------------------------------------------------------------------

def shard_is_free(run: RunDir, index: int) -> tuple[bool, str]:
    """(free, holder): whether no live process holds the shard's lock right now (the lock is released at
    once; the worker takes it again when it opens the shard's results)."""
    from vidcap.results import _Files  # the store names its own lock file

    path = _Files(run, index).lock
    if not path.exists():
        return True, ""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        return False, holder
    finally:
        os.close(fd)  # closing drops the lock, if taken
    return True, ""


@dataclass
class _Worker:
    plan: WorkerPlan
    job_id: str
    proc: subprocess.Popen[bytes]
    log: Path
    shards: list[int] = field(default_factory=list)  # handed to it, in order
    current: int | None = None  # the shard it is on (None: loading, or asked for the next)
    started_rows: int = 0  # result rows of `current` when it was handed out
    rows: int = 0  # result rows written by this worker so far (progress)
    exit_reason: str = ""
    bar: Any = None

    @property
    def name(self) -> str:
        return f"w{self.plan.index}"


class Pool:
    """Hands out shards to worker processes and watches them; see the module docstring."""

    def __init__(self, run: RunDir, shards: list[int], plans: list[WorkerPlan], progress: bool = True) -> None:
        self.run = run
        self.queue = list(shards)
        self.plans = plans
        self.progress = progress
        self.stopping = False
        self.signals = 0
        self.workers: dict[str, _Worker] = {}
        self.skipped: dict[int, str] = {}
        self.notes: list[str] = []
        self._tmp = Path(tempfile.mkdtemp(prefix="vidcap-pool-"))
        self.address = str(self._tmp / "pool.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.address)
        self._server.listen(64)
        self._server.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._server, selectors.EVENT_READ, None)
        self._buffers: dict[socket.socket, bytes] = {}
        self._overall: Any = None
        self._rows_at: dict[int, int] = {}

    # -- processes --------------------------------------------------------------------------------
    def _start(self, plan: WorkerPlan) -> _Worker:
        job_id = f"{JOB_PREFIX}{os.getpid()}-w{plan.index}"
        folder = self.run.logs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env[POOL_ENV] = self.address
        env[WORKER_ENV] = job_id
        if plan.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = plan.cuda_visible_devices
        # the cores shared out between the workers (1 thread each made CPU generate fastest here)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(self.plans))))
        log = folder / LOG_NAME
        with open(log, "ab") as err:
            proc = subprocess.Popen([sys.executable, "-c", COMMAND, str(self.run.root)],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                                    start_new_session=True)
        return _Worker(plan, job_id, proc, log)

    def _signal_all(self, signum: int) -> None:
        for w in self.workers.values():
            if w.proc.poll() is None:
                try:
                    os.kill(w.proc.pid, signum)
                except ProcessLookupError:
                    pass

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1
        self.stopping = True
        name = signal.Signals(signum).name
        if self.signals == 1:
            os.write(2, f"\nvidcap: {name}: every worker stops after its batch in flight\n".encode())
            self._signal_all(signal.SIGTERM)
        else:
            os.write(2, f"\nvidcap: {name} again: stopping every worker now\n".encode())
            self._signal_all(signal.SIGINT)

    # -- claims -----------------------------------------------------------------------------------
    def _next_shard(self) -> int | None:
        while self.queue and not self.stopping:
            index = self.queue.pop(0)
            if self.run.is_done(index):
                continue
            free, holder = shard_is_free(self.run, index)
            if not free:
                self.skipped[index] = holder
                self._note(f"shard {index} is being written by another process ({holder}): skipped")
                continue
            return index
        return None

    def _claim(self, job_id: str) -> int | None:
        worker = self.workers.get(job_id)
        if worker is None:  # not one of ours (a stale process of an older pool): give it nothing
            return None
        if worker.current is not None:  # asking again: the last shard is over; its rows count as done
            worker.rows += self._result_rows(worker.current) - worker.started_rows
        shard = self._next_shard()
        worker.current = shard
        if shard is not None:
            worker.shards.append(shard)
            worker.started_rows = self._result_rows(shard)
            self.run.record_jobs({shard: job_id}, executor="local")
            if worker.bar is not None:
                worker.bar.set_description_str(f"{worker.name} shard {shard}")
        return shard

    def _serve(self, timeout: float) -> None:
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                try:
                    conn, _ = self._server.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                self._selector.register(conn, selectors.EVENT_READ, "conn")
                self._buffers[conn] = b""
                continue
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data:
                self._selector.unregister(conn)
                self._buffers.pop(conn, None)
                conn.close()
                continue
            self._buffers[conn] += data
            while b"\n" in self._buffers[conn]:
                line, self._buffers[conn] = self._buffers[conn].split(b"\n", 1)
                message = json.loads(line)
                shard = self._claim(str(message.get("worker")))
                try:
                    conn.sendall((json.dumps({"shard": shard}) + "\n").encode())
                except OSError:
                    pass

    # -- watching ---------------------------------------------------------------------------------
    def _reap(self) -> None:
        for w in self.workers.values():
            if w.exit_reason or w.proc.poll() is None:
                continue
            code = w.proc.returncode
            _kill_group(w.proc)
            if code == 0:
                w.exit_reason = "stopped as asked" if self.stopping else "finished"
                continue
            w.exit_reason = describe_exit(code, w.log)
            if self.stopping and code in (130, 143, -signal.SIGTERM, -signal.SIGINT):
                continue  # stopped as asked
            (w.log.parent / DIED_NAME).write_text(w.exit_reason + "\n", encoding="utf-8")
            left = f"; shard {w.current} left for `vidcap resume`" if w.current is not None and \
                not self.run.is_done(w.current) else ""
            self._note(f"worker {w.name} (pid {w.proc.pid}) died: {w.exit_reason}{left}; the others go on")

    def _note(self, line: str) -> None:
        self.notes.append(line)
        if self._overall is not None:
            self._overall.write(f"vidcap: {line}", file=sys.stderr)
        else:
            print(f"vidcap: {line}", file=sys.stderr)

    def _result_rows(self, index: int) -> int:
        from vidcap.results import read_results

        try:
            return read_results(self.run, index).num_rows
        except (OSError, ValueError):  # a compaction in between: the next poll sees it
            return self._rows_at.get(index, 0)

    def _update_progress(self) -> None:
        if self._overall is None:
            return
        for w in self.workers.values():
            if w.bar is None:
                continue
            written = w.rows
            if w.current is not None:
                rows = self._result_rows(w.current)
                self._rows_at[w.current] = rows
                written += rows - w.started_rows
            w.bar.update(written - w.bar.n)
        done_shards = sum(self.run.is_done(i) for w in self.workers.values() for i in w.shards)
        self._overall.update(done_shards - self._overall.n)
        videos = sum(w.bar.n for w in self.workers.values() if w.bar is not None)
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._overall.set_postfix_str(f"{videos} videos, {videos / elapsed:.2f}/s", refresh=False)

    def _bars(self) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        interval = 1.0 if sys.stderr.isatty() else 30.0
        self._overall = tqdm(total=len(self.queue), desc=f"{len(self.plans)} workers", unit="shard",
                             position=0, mininterval=interval, file=sys.stderr)
        for k, w in enumerate(self.workers.values()):
            devices = f" [GPU {w.plan.cuda_visible_devices}]" if w.plan.devices else ""
            w.bar = tqdm(desc=f"{w.name}{devices} loading", unit="video", position=k + 1,
                         mininterval=interval, file=sys.stderr)

    # -- the whole run ----------------------------------------------------------------------------
    def run_all(self) -> list[ShardOutcome]:
        self._started = time.monotonic()
        for plan in self.plans:
            w = self._start(plan)
            self.workers[w.job_id] = w
        self._bars()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        last_progress = 0.0
        try:
            while any(w.proc.poll() is None for w in self.workers.values()):
                self._serve(POLL_S)
                self._reap()
                if time.monotonic() - last_progress > PROGRESS_EVERY_S:
                    self._update_progress()
                    last_progress = time.monotonic()
            self._reap()
            self._update_progress()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for w in self.workers.values():
                if w.proc.poll() is None:
                    _kill_group(w.proc, wait=True)
                if w.bar is not None:
                    w.bar.close()
            if self._overall is not None:
                self._overall.close()
            self._selector.close()
            self._server.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
        return self.outcomes()

    def outcomes(self) -> list[ShardOutcome]:
        """One outcome per shard handed out (from the completion markers and the shards' stats) or skipped."""
        result = []
        for w in self.workers.values():
            for index in w.shards:
                result.append(ShardOutcome(index, self.run.is_done(index), self.run.read_stats(index) or {}))
        result += [ShardOutcome(index, False, {"skipped": holder}) for index, holder in self.skipped.items()]
        return sorted(result, key=lambda o: o.index)

    def summary(self) -> str:
        lines = []
        for w in self.workers.values():
            done = sum(self.run.is_done(i) for i in w.shards)
            devices = f" GPU {w.plan.cuda_visible_devices}" if w.plan.devices else ""
            lines.append(f"  {w.name}{devices} pid {w.proc.pid}: {done} shard(s) done of {len(w.shards)} taken"
                         f" ({w.exit_reason or 'running'})")
        return "\n".join(lines)


def describe_exit(code: int, log: Path) -> str:
    """One line: the worker's own last error line when it wrote one, else its exit status or signal."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the kernel's out-of-memory killer sends it too)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    last = _last_line(log)
    return f"{last} (exit {code})" if last else f"exited with status {code}"


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    lines = [ln for ln in lines if not ln.startswith("vidcap worker") or "error" in ln]
    return lines[-1][:300] if lines else ""


def _kill_group(proc: subprocess.Popen[bytes], wait: bool = False) -> None:
    """The worker's leftovers (frame readers, ranks) go with it: its session's process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if wait:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def pool_plans(run: RunDir, workers: int | None) -> list[WorkerPlan] | None:
    """The workers a local run gets (`--workers`, else the visible GPUs / the ranks per shard task), or None
    when one process does it all, as before the pool: one worker by default (CPU, API and no-op engines)."""
    from vidcap.tasks.spec import load_spec

    needs = load_spec(run).needs()
    on_cpu = needs.gpus_per_rank == 0
    plans = plan_workers(workers, needs.ranks, [] if on_cpu else visible_gpus(), on_cpu)
    return plans if workers is not None or len(plans) > 1 else None


def run_pool(run: RunDir, shards: list[int], plans: list[WorkerPlan], progress: bool = True) -> list[ShardOutcome]:
    """Caption `shards` with a pool of local workers; returns one outcome per shard handed out or skipped."""
    pool = Pool(run, shards, plans, progress=progress)
    outcomes = pool.run_all()
    print(f"{len(plans)} worker(s):\n{pool.summary()}", file=sys.stderr)
    dead = [w for w in pool.workers.values() if w.proc.returncode != 0]
    if dead and len(dead) == len(pool.workers) and not any(o.finished for o in outcomes) and not pool.stopping:
        reasons = sorted({w.exit_reason for w in dead})
        raise WorkersFailed(f"every worker died: {'; '.join(reasons)} (logs: {run.logs_dir}/{JOB_PREFIX}*)")
    return outcomes
