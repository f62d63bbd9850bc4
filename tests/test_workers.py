"""The local worker pool (`--workers N`): real worker processes on the CPU, claiming shards one at a time.

The no-op engine with a latency stands in for a model whose cost is not this machine's CPU (a GPU, an API),
so the timings that decide who takes what are the engine's, not the 2 shared cores'."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from vidcap.cli import main
from vidcap.errors import UserError
from vidcap.results import ResultWriter, read_results
from vidcap.run import RunDir
from vidcap.scheduler.workers import plan_workers, visible_gpus
from vidcap.fixtures.tiny_models import make_tiny_model
from worker_helpers import make_clips

pytestmark = pytest.mark.timeout(300)


def submit_args(manifest: Path, run: Path, *extra: str, latency: float = 0.0) -> list[str]:
    return ["submit", str(manifest), "--run", str(run), "--engine", "noop", "--noop-latency", str(latency),
            "--num-frames", "2", "--resize", "0", *extra]


def claims(run: RunDir) -> list[tuple[int, str]]:
    lines = run.jobs_path.read_text().splitlines() if run.jobs_path.exists() else []
    return [(r["shard"], r["job_id"]) for r in map(json.loads, lines)]


def all_keys(run: RunDir) -> list[str]:
    return [k for i in range(run.num_shards) for k in read_results(run, i).column("key").to_pylist()]


def start_pool(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vidcap", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def worker_pids(pool_pid: int) -> list[int]:
    """The pool's worker processes (children running vidcap.scheduler.pool_worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pool_pid and b"vidcap.scheduler.pool_worker" in cmd:
            pids.append(int(entry.name))
    return sorted(pids)


def wait_until(check, timeout: float = 60, what: str = "") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# -- planning -----------------------------------------------------------------------------------------

def test_default_workers_are_gpus_over_tp_size_and_each_gets_its_own_slice() -> None:
    gpus = [str(i) for i in range(8)]
    plans = plan_workers(None, 2, gpus)
    assert [p.cuda_visible_devices for p in plans] == ["0,1", "2,3", "4,5", "6,7"]
    assert [p.cuda_visible_devices for p in plan_workers(3, 2, gpus)] == ["0,1", "2,3", "4,5"]
    assert [p.cuda_visible_devices for p in plan_workers(None, 1, ["3", "5"])] == ["3", "5"]  # Slurm's names
    assert [p.cuda_visible_devices for p in plan_workers(None, 3, gpus)] == ["0,1,2", "3,4,5"]
    assert len(plan_workers(None, 1, [])) == 1 and plan_workers(None, 1, [])[0].cuda_visible_devices is None
    assert len(plan_workers(4, 2, [])) == 4  # on the CPU: N processes
    assert len(plan_workers(None, 1, gpus, on_cpu=True)) == 1


def test_more_workers_than_gpus_or_a_bad_count_is_refused() -> None:
    with pytest.raises(UserError, match=r"--workers 3 x --tp-size 2 needs 6 GPUs; 4 visible"):
        plan_workers(3, 2, ["0", "1", "2", "3"])
    with pytest.raises(UserError, match="--tp-size 4 needs 4 GPUs; 2 visible"):
        plan_workers(None, 4, ["0", "1"])
    with pytest.raises(UserError, match="--workers must be at least 1"):
        plan_workers(0, 1, [])


def test_visible_gpus_follow_cuda_visible_devices() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-1a2b,GPU-3c4d"}) == ["GPU-1a2b", "GPU-3c4d"]


# -- claiming -----------------------------------------------------------------------------------------

def test_a_fast_worker_takes_more_shards_and_none_runs_twice(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Shard 0 holds the only readable videos (3 s in the engine); the 11 others are unreadable files and
    take no engine time: the worker stuck on shard 0 takes few, the other takes the rest, each once."""
    manifest = make_clips(tmp_path / "v", 24, broken={i: "missing" for i in range(2, 24)})
    run = RunDir.at(tmp_path / "run")
    code = main(submit_args(manifest, run.root, "--rows-per-shard", "2", "--batch-size", "2", "--readers", "0",
                            "--workers", "2", latency=3.0))
    err = capsys.readouterr().err
    assert code == 0, err
    taken = claims(run)
    assert sorted(s for s, _ in taken) == list(range(12)), taken  # each shard handed out once
    per_worker = Counter(job for _, job in taken)
    slow = dict(taken)[0]
    assert len(per_worker) == 2 and per_worker[slow] <= 3 and max(per_worker.values()) >= 9, per_worker
    keys = all_keys(run)
    assert sorted(keys) == sorted(f"clip_{i:03d}.mp4" for i in range(24)) and len(set(keys)) == 24
    assert all(run.is_done(i) for i in range(12))
    assert "2 workers" in err and "12 shard(s)" not in err


def test_a_shard_another_process_is_writing_is_skipped_not_run_twice(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    manifest = make_clips(tmp_path / "v", 6)
    run = RunDir.at(tmp_path / "run")
    assert main(submit_args(manifest, run.root, "--shards", "3", "--prepare-only")) == 0
    with ResultWriter(run, 1):  # this test process holds shard 1, as a Slurm task or another pool would
        code = main(submit_args(manifest, run.root, "--shards", "3", "--workers", "2"))
    err = capsys.readouterr().err
    assert code == 1
    assert f"shard 1 is being written by another process (pid {os.getpid()}" in err
    assert [run.is_done(i) for i in range(3)] == [True, False, True]
    assert read_results(run, 1).num_rows == 0 and 1 not in [s for s, _ in claims(run)]


def test_every_worker_failing_at_start_is_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    manifest = make_clips(tmp_path / "v", 4)
    model = make_tiny_model(tmp_path / "broken-model", family="llava")
    weights = model / "model.safetensors"  # config and processor are fine (preflight passes); the weights not
    weights.write_bytes(weights.read_bytes()[:1000])
    code = main(["submit", str(manifest), "--run", str(tmp_path / "run"), "--model", str(model), "--shards", "2",
                 "--workers", "2", "--num-frames", "2"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith("vidcap submit: error: every worker died: "), err
    assert "invalid header length (exit 1)" in last, last  # the worker's own last line, not a traceback


# -- stopping and dying -------------------------------------------------------------------------------

def test_sigterm_stops_every_worker_after_its_batch_and_resume_finishes(tmp_path: Path) -> None:
    manifest = make_clips(tmp_path / "v", 32)
    run = RunDir.at(tmp_path / "run")
    # 2 s batches: a shard takes 16 s, so the signal (after a `vidcap status` in a fresh process, seconds on a
    # busy machine) still finds both workers busy; with 1 s batches a fresh clone's run once saw them finish
    pool = start_pool(submit_args(manifest, run.root, "--rows-per-shard", "16", "--batch-size", "2",
                                  "--workers", "2", latency=2.0))
    try:
        wait_until(lambda: len(claims(run)) >= 2 and all(read_results(run, s).num_rows >= 2
                                                         for s, _ in claims(run)[:2]), what="two busy workers")
        status = subprocess.run([sys.executable, "-m", "vidcap", "status", str(run.root)], capture_output=True,
                                text=True, timeout=60)
        running = [ln for ln in status.stdout.splitlines() if " running " in ln and "-w" in ln]
        assert len(running) == 2, status.stdout  # the two workers, as a status table shows array tasks
        sent = time.monotonic()
        pool.send_signal(signal.SIGTERM)
        _, err = pool.communicate(timeout=30)
        stopped_in = time.monotonic() - sent
    finally:
        pool.kill()
    assert pool.returncode == 1, err
    assert "every worker stops after its batch in flight" in err and "died" not in err, err
    assert stopped_in < 10, stopped_in  # one batch is 2 s
    in_flight = [s for s, _ in claims(run)]
    assert len(in_flight) == 2 and not any(run.is_done(s) for s in in_flight)
    for s in in_flight:  # whole batches only, written before stopping
        rows = read_results(run, s).num_rows
        assert 2 <= rows < 16 and rows % 2 == 0
    assert err.count("stopped as asked") == 2, err

    resume = subprocess.run([sys.executable, "-m", "vidcap", "resume", str(run.root), "--workers", "2"],
                            capture_output=True, text=True, timeout=120)
    assert resume.returncode == 0, resume.stderr
    keys = all_keys(run)
    assert len(keys) == 32 and len(set(keys)) == 32  # nothing redone: every key exactly once


def test_a_killed_worker_is_reported_the_other_finishes_and_resume_does_its_shard(tmp_path: Path) -> None:
    manifest = make_clips(tmp_path / "v", 36)
    run = RunDir.at(tmp_path / "run")
    pool = start_pool(submit_args(manifest, run.root, "--rows-per-shard", "6", "--batch-size", "2",
                                  "--workers", "2", latency=0.4))
    try:
        wait_until(lambda: len(worker_pids(pool.pid)) == 2, what="two workers")
        victim = worker_pids(pool.pid)[1]
        # its shard: the newest claim of a shard whose stats name the victim, once a batch is written
        def victim_shard() -> int | None:
            for s, _ in reversed(claims(run)):
                stats = run.read_stats(s)
                if stats and stats.get("pid") == victim and read_results(run, s).num_rows >= 2:
                    return s
            return None
        wait_until(lambda: victim_shard() is not None, what="the victim's first batch")
        shard = victim_shard()
        os.kill(victim, signal.SIGKILL)
        _, err = pool.communicate(timeout=120)
    finally:
        pool.kill()
    assert pool.returncode == 1, err
    assert f"(pid {victim}) died: killed by SIGKILL" in err and f"shard {shard} left for `vidcap resume`" in err
    assert [i for i in range(6) if not run.is_done(i)] == [shard]  # the other worker did every other shard
    status = subprocess.run([sys.executable, "-m", "vidcap", "status", str(run.root)], capture_output=True,
                            text=True, timeout=60).stdout
    assert any(ln.split()[:2] == [str(shard), "failed"] for ln in status.splitlines()), status
    assert "killed by SIGKILL" in status

    resume = subprocess.run([sys.executable, "-m", "vidcap", "resume", str(run.root), "--workers", "2"],
                            capture_output=True, text=True, timeout=120)
    assert resume.returncode == 0, resume.stderr
    keys = all_keys(run)
    assert len(keys) == 36 and len(set(keys)) == 36  # the kill lost only its batch in flight, redone once


# -- a real model -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_workers_caption_with_the_tiny_model(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    model = make_tiny_model(tmp_path / "tiny-llava", family="llava")
    manifest = make_clips(tmp_path / "v", 12, broken={5: "truncated"})
    output = tmp_path / "out.csv"
    code = main(["caption", str(manifest), "--output", str(output), "--model", str(model), "--shards", "4",
                 "--batch-size", "3", "--max-new-tokens", "8", "--num-frames", "2", "--resize", "64",
                 "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "12 rows: 11 captioned, 1 failed" in captured.out
    run = RunDir.at(tmp_path / "out.run")
    keys = all_keys(run)
    assert len(keys) == 12 and len(set(keys)) == 12
    assert {job.rsplit("-", 1)[1] for _, job in claims(run)} <= {"w0", "w1"}


# -- inside a Slurm allocation ------------------------------------------------------------------------

@pytest.mark.slurm
def test_the_pool_runs_inside_a_slurm_allocation(tmp_path: Path, slurm_job_env: None) -> None:  # noqa: ARG001
    """`salloc ... srun vidcap submit --executor local --workers 2`: the pool and its workers in the job step."""
    manifest = make_clips(tmp_path / "v", 8)
    run = RunDir.at(tmp_path / "run")
    argv = ["salloc", "--ntasks", "1", "--cpus-per-task", "2", "--mem", "1G", "--time", "5", "--job-name",
            "vidcap-test-pool", "srun", sys.executable, "-m", "vidcap",
            *submit_args(manifest, run.root, "--shards", "4", "--batch-size", "2", "--executor", "local",
                         "--workers", "2", latency=0.3)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            out, err = proc.communicate()
        for job in {m.split()[-1] for m in (err or "").splitlines() if "Granted job allocation" in m}:
            subprocess.run(["scancel", job], timeout=30, check=False)  # ours only, by id
    assert proc.returncode == 0, err
    assert "Granted job allocation" in err and "2 worker(s)" in err
    assert all(run.is_done(i) for i in range(4))
    taken = claims(run)
    assert sorted(s for s, _ in taken) == [0, 1, 2, 3] and all("-w" in job for _, job in taken)
    keys = all_keys(run)
    assert len(keys) == 8 and len(set(keys)) == 8
