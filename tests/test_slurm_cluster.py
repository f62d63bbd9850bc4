"""vidcap.scheduler on the real test cluster: arrays, throttle, splitting, states, secrets, requeue, sbatch.

Each test waits with a deadline (wait_for_jobs), so a job that Slurm loses fails the test instead of
hanging it. Jobs import their functions from tests/slurm_jobs.py (the `slurm_job_env` fixture).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import slurm_jobs
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from submitit.core.utils import DelayedSubmission

from vidcap.scheduler.slurm import (
    SlurmResources,
    cluster_max_array_size,
    job_folder,
    job_states,
    slurm_job,
    submit_array,
    wait_for_jobs,
)
from vidcap.scheduler.task import ShardTask

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_job_env")]

REPO = Path(__file__).resolve().parent.parent
QUICK = SlurmResources(time_min=5)


def _scontrol(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=15).stdout


def _config() -> str:
    return subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=15).stdout


def _arrays(ids: list[str]) -> list[str]:
    return sorted({job_id.split("_")[0] for job_id in ids}, key=int)


def _wait_until(predicate: Any, deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.2)


def test_array_runs_every_task_and_returns_at_once(tmp_path: Path) -> None:
    start = time.monotonic()
    ids = submit_array(slurm_jobs.square, [(i,) for i in range(6)], QUICK, tmp_path / "logs", "vidcap-test")
    assert time.monotonic() - start < 5, "submit_array must not wait for the jobs"
    assert len(_arrays(ids)) == 1, "one array"
    states = wait_for_jobs(ids, deadline_s=90, poll_s=0.5)
    assert set(states.values()) == {"COMPLETED"}, states
    assert [slurm_job(tmp_path / "logs", job_id).result() for job_id in ids] == [i * i for i in range(6)]
    for job_id in ids:  # logs in the run's logs folder, one folder per array
        assert (job_folder(tmp_path / "logs", job_id) / f"{job_id}_0_log.out").exists()


def test_throttle_limits_tasks_running_together(tmp_path: Path) -> None:
    resources = SlurmResources(time_min=5, array_parallelism=2)
    ids = submit_array(slurm_jobs.timed_sleep, [(1.5,)] * 6, resources, tmp_path / "logs", "vidcap-test")
    assert "ArrayTaskThrottle=2" in _scontrol(_arrays(ids)[0])
    states = wait_for_jobs(ids, deadline_s=90, poll_s=0.5)
    assert set(states.values()) == {"COMPLETED"}, states
    spans = [slurm_job(tmp_path / "logs", job_id).result() for job_id in ids]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) <= 2


def test_more_tasks_than_max_array_size_become_several_arrays(tmp_path: Path) -> None:
    limit = cluster_max_array_size()
    if limit > 5001:
        pytest.skip(f"MaxArraySize={limit}: too many tasks to submit in a quick test")
    held = SlurmResources(time_min=5, sbatch={"hold": True})  # submitted, never run
    ids = submit_array(slurm_jobs.square, [(i,) for i in range(limit + 2)], held, tmp_path / "logs", "vidcap-test")
    arrays = _arrays(ids)
    try:
        assert len(arrays) == 2
        assert ids == [f"{arrays[0]}_{i}" for i in range(limit)] + [f"{arrays[1]}_{i}" for i in range(2)]
        assert re.search(rf"ArrayTaskId=0-{limit - 1}\b", _scontrol(arrays[0]))
        assert set(job_states(ids, timeout_s=30).values()) == {"PENDING"}
    finally:
        subprocess.run(["scancel", *arrays], check=True, timeout=30)


def test_cancelled_task_is_seen_by_squeue_then_sacct(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = submit_array(slurm_jobs.timed_sleep, [(120,), (120,)], QUICK, tmp_path / "logs", "vidcap-test")
    try:
        _wait_until(lambda: job_states([first], 10)[first] == "RUNNING", 60, f"{first} to run")
        subprocess.run(["scancel", first], check=True, timeout=30)
        assert wait_for_jobs([first], deadline_s=30, poll_s=0.5) == {first: "CANCELLED"}
        assert job_states([second], 10)[second] == "RUNNING", "scancel of one task leaves the others"
        if "accounting_storage/none" in _config():
            pytest.skip("the sacct half needs accounting (VIDCAP_SLURM_ACCOUNTING=1, the default)")
        # The same answer from sacct alone (what is left once the controller forgets the job).
        shims = tmp_path / "shims"
        shims.mkdir()
        (shims / "squeue").write_text("#!/bin/sh\necho 'Unable to contact slurm controller' >&2\nexit 1\n")
        (shims / "squeue").chmod(0o755)
        monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
        assert wait_for_jobs([first], deadline_s=30, poll_s=0.5) == {first: "CANCELLED"}  # sacct lags 1-3 s
        assert job_states([second], 10)[second] == "RUNNING"
    finally:
        subprocess.run(["scancel", first, second], timeout=30)


def test_no_accounting_gives_gone_for_jobs_the_controller_forgot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "sacct").write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    (shims / "sacct").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    [job_id] = submit_array(slurm_jobs.square, [(3,)], QUICK, tmp_path / "logs", "vidcap-test")
    forgotten = "999999999_0"  # never existed: squeue refuses it, as it does jobs older than MinJobAge
    states = job_states([job_id, forgotten], timeout_s=10)
    assert states[forgotten] == "GONE" and states[job_id] not in ("UNKNOWN", "GONE")  # answered: ended
    assert wait_for_jobs([job_id], deadline_s=60, poll_s=0.5) == {job_id: "COMPLETED"}


def test_api_key_reaches_the_job_but_no_file_in_the_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-vidcap-test-" + os.urandom(8).hex()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    resources = SlurmResources(time_min=5, setup=("echo setup ran",), sbatch={"comment": "vidcap"})
    ids = submit_array(slurm_jobs.env_digest, [("OPENAI_API_KEY",)] * 2, resources, tmp_path / "logs", "vidcap-test")
    assert set(wait_for_jobs(ids, deadline_s=90, poll_s=0.5).values()) == {"COMPLETED"}
    assert [slurm_job(tmp_path / "logs", j).result() for j in ids] == [hashlib.sha256(key.encode()).hexdigest()] * 2
    files = [p for p in (tmp_path / "logs").rglob("*") if p.is_file() and not p.is_symlink()]
    scripts = [p for p in files if p.name.endswith("_submission.sh")]
    assert scripts and "echo setup ran" in scripts[0].read_text()
    assert [p for p in files if key.encode() in p.read_bytes()] == []


def _countdown(logs: Path, job_id: str) -> int:
    return DelayedSubmission.load(slurm_job(logs, job_id).paths.submitted_pickle)._timeout_countdown


def _check_progress(progress: Path, after_restart: int) -> None:
    """Run 1 stopped right after a whole step; run 2 began where run 1 stopped and did the rest."""
    lines = progress.read_text().splitlines()
    stop_at = next(i for i, line in enumerate(lines) if line.startswith("stopped 1 at "))
    done = int(lines[stop_at].split()[-1])
    assert lines[: stop_at + 1] == ["run 1 from 0", *(f"step {s}" for s in range(1, done + 1)), f"stopped 1 at {done}"]
    rerun = [f"step {s}" for s in range(done + 1, done + after_restart + 1)]
    assert lines[stop_at + 1 :] == [f"run 2 from {done}", *rerun]


def test_time_limit_stops_after_the_batch_and_requeues(tmp_path: Path) -> None:
    # --time=1 with USR2 25 s before it: Slurm checks limits every 30 s, so USR2 comes 5-35 s into a run.
    # The rerun's 3 steps take under a second, well before its own USR2 could come (5 s at the earliest).
    resources = SlurmResources(time_min=1, signal_delay_s=25, max_requeues=3)
    progress = [tmp_path / "progress-0", tmp_path / "progress-1"]
    task = ShardTask("slurm_jobs:stepper")
    ids = submit_array(task, [(str(p), 3) for p in progress], resources, tmp_path / "logs", "vidcap-test")
    states = wait_for_jobs(ids, deadline_s=150, poll_s=1)
    assert set(states.values()) == {"COMPLETED"}, states
    for job_id, path in zip(ids, progress, strict=True):
        outcome = slurm_job(tmp_path / "logs", job_id).result()
        assert outcome.finished and outcome.runs == 2
        _check_progress(path, after_restart=3)
        assert "Restarts=1" in _scontrol(job_id)
        # A time limit under 10 min counts every USR2 as a timeout (submitit's 10-minute rule).
        assert _countdown(tmp_path / "logs", job_id) == 2


def test_preemption_signal_requeues_without_using_a_timeout(tmp_path: Path) -> None:
    resources = SlurmResources(time_min=15, max_requeues=3)  # >= 10 min: an early USR2 is a preemption
    progress = tmp_path / "progress"
    task = ShardTask("slurm_jobs:stepper")
    [job_id] = submit_array(task, [(str(progress), 3)], resources, tmp_path / "logs", "vidcap-test")
    _wait_until(lambda: progress.exists() and "step 2" in progress.read_text(), 60, "two steps")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    assert wait_for_jobs([job_id], deadline_s=90, poll_s=0.5) == {job_id: "COMPLETED"}
    outcome = slurm_job(tmp_path / "logs", job_id).result()
    assert outcome.finished and outcome.runs == 2
    _check_progress(progress, after_restart=3)
    assert _countdown(tmp_path / "logs", job_id) == 3


def _fake_vidcap(tmp_path: Path) -> Path:
    """A `vidcap` on PATH standing in for run-shard: records its call; a first run waits for USR2 and then exits
    143 as run-shard does when it stops before the shard is done (the template requeues on a non-zero exit)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vidcap").write_text(
        """#!/bin/bash
run=$2 shard=$3
echo "$* restart=${SLURM_RESTART_COUNT:-0}" >> "$run/calls-$shard"
if [ "$shard" = 11 ] && [ -z "${SLURM_RESTART_COUNT:-}" ]; then
  trap 'echo "stopped" >> "$run/calls-$shard"; exit 143' USR2  # as run-shard: 143 = stopped early
  while :; do sleep 0.1; done
fi
mkdir -p "$run/done" && touch "$run/done/$(printf 'shard-%05d' "$shard")"
"""
    )
    (bin_dir / "vidcap").chmod(0o755)
    return bin_dir


def test_plain_sbatch_template_runs_one_shard_per_task_and_requeues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("PATH", f"{_fake_vidcap(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(
        ["sbatch", "--array=0-2%2", "--time=5", "--mem=100M", "--cpus-per-task=1",
         f"--output={tmp_path}/%A_%a.out", str(REPO / "slurm/caption_array.sbatch"), str(run), "10"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout
    array = re.search(r"job (\d+)", out).group(1)
    ids = [f"{array}_{i}" for i in range(3)]
    _wait_until(lambda: (run / "calls-11").exists(), 60, "shard 11 to start")
    # The time-limit signal goes to the batch shell (B:USR2): send the same one now.
    subprocess.run(["scancel", "--batch", "--signal=USR2", ids[1]], check=True, timeout=30)
    assert wait_for_jobs(ids, deadline_s=90, poll_s=0.5) == dict.fromkeys(ids, "COMPLETED")
    assert (run / "calls-10").read_text() == f"run-shard {run} 10 restart=0\n"
    assert (run / "calls-12").read_text() == f"run-shard {run} 12 restart=0\n"
    assert (run / "calls-11").read_text() == f"run-shard {run} 11 restart=0\nstopped\nrun-shard {run} 11 restart=1\n"
