"""Every Slurm job state has one meaning for a shard (vidcap.scheduler.slurm_states), and the waits and
resubmission act on it: no answer (UNKNOWN) is never taken for an end, a held job keeps its shard, and a
state Slurm ends a job with (REVOKED) ends the wait. Slurm's commands are shims here: the states are the
point, not the cluster."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vidcap.errors import UserError
from vidcap.run import RunDir
from vidcap.scheduler.slurm import job_states
from vidcap.scheduler.slurm_states import PHASES, UNKNOWN, Phase, is_ended, is_live, phase
from vidcap.scheduler.slurm_submit import active_shards, wait_slurm
from vidcap.scheduler.submit import Submission

#: `man squeue`, JOB STATE CODES (Slurm 22.05-24.11)
SLURM_STATES = """BOOT_FAIL CANCELLED COMPLETED CONFIGURING COMPLETING DEADLINE FAILED NODE_FAIL OUT_OF_MEMORY PENDING
PREEMPTED RUNNING RESV_DEL_HOLD REQUEUE_FED REQUEUE_HOLD REQUEUED RESIZING REVOKED SIGNALING SPECIAL_EXIT
STAGE_OUT STOPPED SUSPENDED TIMEOUT""".split()


def test_every_slurm_state_has_a_phase_and_no_answer_is_no_end() -> None:
    assert set(SLURM_STATES) <= set(PHASES)
    for held in ("REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD"):
        assert phase(held) is Phase.QUEUED and is_live(held) and not is_ended(held)
    assert is_ended("REVOKED") and is_ended("CANCELLED by 0") and is_ended("GONE")
    assert phase(UNKNOWN) is Phase.UNKNOWN and not is_ended(UNKNOWN) and not is_live(UNKNOWN)
    assert phase("SOME_FUTURE_STATE") is Phase.UNKNOWN  # a newer Slurm's state is never taken as an end


def shim(folder: Path, monkeypatch: pytest.MonkeyPatch, squeue: str, sacct: str = "exit 1") -> None:
    folder.mkdir(exist_ok=True)
    for name, body in (("squeue", squeue), ("sacct", sacct)):
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def test_states_from_squeue_and_a_job_slurm_forgot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim(tmp_path / "bin", monkeypatch, "echo '7_0|SPECIAL_EXIT'; echo '7_1|REVOKED'",
         "echo 'Slurm accounting storage is disabled' >&2; exit 1")
    assert job_states(["7_0", "7_1", "7_2"], timeout_s=5) == {"7_0": "SPECIAL_EXIT", "7_1": "REVOKED", "7_2": "GONE"}
    shim(tmp_path / "bin", monkeypatch, "echo 'slurm_load_jobs error: Socket timed out' >&2; exit 1")
    assert job_states(["7_0"], timeout_s=5) == {"7_0": UNKNOWN}


def test_wait_goes_on_while_slurm_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: UNKNOWN counted as ended, so `caption --executor slurm` merged partial output while the jobs
    still ran. Now the wait goes on until its deadline (or the shards are done)."""
    shim(tmp_path / "bin", monkeypatch, "exec sleep 30")
    run = RunDir.at(tmp_path / "run")
    start = time.monotonic()
    with pytest.raises(UserError, match="gave up waiting"):
        wait_slurm(run, Submission("slurm", [0, 1], job_ids=["7_0", "7_1"]), timeout_s=4, poll_s=0.5)
    assert time.monotonic() - start >= 4


def test_wait_ends_on_revoked_and_a_held_job_keeps_its_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim(tmp_path / "bin", monkeypatch, "echo '7_0|REVOKED'; echo '7_1|REQUEUE_HOLD'")
    run = RunDir.at(tmp_path / "run")
    start = time.monotonic()
    wait_slurm(run, Submission("slurm", [0], job_ids=["7_0"]), timeout_s=30, poll_s=0.5)  # before: waited 30 s
    assert time.monotonic() - start < 10
    run.record_jobs({0: "7_0", 1: "7_1"}, "slurm")
    assert active_shards(run, [0, 1]) == {1: ("7_1", "REQUEUE_HOLD")}
