"""Functions that the Slurm tests run inside jobs (imported there by name through PYTHONPATH)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def square(x: int) -> int:
    return x * x


def timed_sleep(seconds: float) -> tuple[float, float]:
    """Sleep; return (start, end) wall-clock times so the test can count tasks running together."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def env_digest(name: str) -> str:
    """Digest of an environment variable as the job sees it (the value itself never enters a result)."""
    return hashlib.sha256(os.environ.get(name, "").encode()).hexdigest()


def _append(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclass
class Outcome:
    """Shaped like vidcap.worker.ShardOutcome where ShardTask looks (`finished`)."""

    finished: bool
    steps: int
    runs: int


def stepper(progress: str, steps_after_restart: int, *, stop: threading.Event) -> Outcome:
    """A stand-in for run_shard: 0.2 s "batches", progress recorded durably after each one.

    The first run goes on until `stop` is set; a rerun continues from the recorded progress and finishes
    after `steps_after_restart` more steps, so the test cannot pass unless the job was stopped and requeued.
    """
    path = Path(progress)
    lines = path.read_text().splitlines() if path.exists() else []
    step = sum(line.startswith("step ") for line in lines)
    run = 1 + sum(line.startswith("run ") for line in lines)
    _append(path, f"run {run} from {step}")
    target = None if run == 1 else step + steps_after_restart
    while target is None or step < target:
        if stop.is_set():
            _append(path, f"stopped {run} at {step}")
            return Outcome(False, step, run)
        time.sleep(0.2)
        step += 1
        _append(path, f"step {step}")
    return Outcome(True, step, run)
