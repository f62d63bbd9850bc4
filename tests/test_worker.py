"""The shard worker: alignment, skipping done rows, SIGTERM and kill -9 mid-shard, frozen job config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vidcap.cli import main
from vidcap.errors import UserError
from vidcap.engines.noop import NoopSettings
from vidcap.tasks.caption import CaptionSettings
from vidcap.tasks.spec import TaskSpec, freeze_spec
from vidcap.manifest.split import split
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.worker import run_shard
from worker_helpers import SignatureEngine, make_clips


def new_run(tmp_path, manifest, shards=1, **job):
    run = RunDir.at(tmp_path / "run")
    split(manifest, run, shards=shards)
    engine = job.pop("engine", NoopSettings())
    freeze_spec(run, TaskSpec(task="caption", settings=CaptionSettings(num_frames=2, resize=None), engine="noop",
                              engine_settings=engine, **job))
    return run


def test_broken_items_mid_batch_keep_every_caption_on_its_row(tmp_path):
    manifest = make_clips(tmp_path / "v", 9, broken={2: "truncated", 4: "text", 5: "missing"})
    run = new_run(tmp_path, manifest, batch_size=4)
    engine = SignatureEngine()
    outcome = run_shard(run, 0, engine=engine, progress=False)
    assert outcome.finished and run.is_done(0)
    rows = {r["key"]: r for r in read_results(run, 0).to_pylist()}
    assert len(rows) == 9
    for i in range(9):
        row = rows[f"clip_{i:03d}.mp4"]
        if i in (2, 4, 5):
            assert row["status"] == "error" and row["text"] == ""
        else:
            assert row["status"] == "ok" and row["text"] == f"seed {i}", row
    assert rows["clip_004.mp4"]["error"] == "not a video"
    assert rows["clip_005.mp4"]["error"].startswith("missing")
    assert rows["clip_002.mp4"]["error"].startswith("truncated")
    assert engine.batches == [3, 2, 1]  # batches of 4 rows (0-3, 4-7, 8) minus the unreadable ones
    stats = run.read_stats(0)
    assert (stats["rows_ok"], stats["rows_error"], stats["finished"]) == (6, 3, True)
    assert not run.attempts_dir.exists()  # an engine that bills nothing leaves no attempts journal


def test_rerun_skips_ok_rows_and_retries_errors_up_to_max_attempts(tmp_path):
    manifest = make_clips(tmp_path / "v", 4, broken={1: "empty"})
    run = new_run(tmp_path, manifest, batch_size=2, max_attempts=2)
    run_shard(run, 0, engine=SignatureEngine(), progress=False)
    run.clear_done(0)
    engine = SignatureEngine()
    run_shard(run, 0, engine=engine, progress=False)
    assert engine.batches == []  # only the broken row was retried, and it failed in the reader again
    keys = read_results(run, 0).column("key").to_pylist()
    assert keys.count("clip_001.mp4") == 2 and keys.count("clip_000.mp4") == 1
    run.clear_done(0)
    run_shard(run, 0, engine=SignatureEngine(), progress=False)
    assert read_results(run, 0).column("key").to_pylist().count("clip_001.mp4") == 2  # given up after 2
    assert run.read_stats(0)["rows_given_up"] == 1


def shm_segments() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def start_worker(run: RunDir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidcap", "run-shard", str(run.root), "0", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(run: RunDir, at_least: int, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = read_results(run, 0).num_rows
        if rows >= at_least:
            return rows
        time.sleep(0.05)
    raise AssertionError("the worker wrote nothing in time")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_mid_shard_then_rerun_finishes_every_key_once(tmp_path, sig):
    manifest = make_clips(tmp_path / "v", 16)
    run = new_run(tmp_path, manifest, batch_size=2, engine=NoopSettings(latency_s=0.4))
    before = shm_segments()
    worker = start_worker(run)
    wait_for_rows(run, 2)
    worker.send_signal(sig)
    _, err = worker.communicate(timeout=30)
    if sig == signal.SIGTERM:
        assert worker.returncode == 143, err
        assert "stopping after the batch in flight" in err
    else:
        assert worker.returncode == -9
    assert not run.is_done(0)
    written = read_results(run, 0).column("key").to_pylist()
    assert 2 <= len(written) < 16 and len(written) % 2 == 0  # whole batches only
    deadline = time.time() + 10  # the resource tracker unlinks what a killed process left
    while shm_segments() - before and time.time() < deadline:
        time.sleep(0.1)
    assert not (shm_segments() - before)

    rerun = start_worker(run)
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    keys = read_results(run, 0).column("key").to_pylist()
    assert sorted(keys) == [f"clip_{i:03d}.mp4" for i in range(16)]  # every key exactly once: nothing redone
    assert run.is_done(0)


def test_changed_settings_refused_unless_forced(tmp_path, capsys):
    manifest = make_clips(tmp_path / "v", 2)
    args = ["submit", str(manifest), "--run", str(tmp_path / "run"), "--engine", "noop", "--shards", "1"]
    assert main(args) == 0
    assert main(args + ["--batch-size", "7"]) == 0  # batch size does not change a caption
    assert main(args + ["--prompt", "video-short"]) == 2
    err = capsys.readouterr().err
    assert "this run was started with other settings" in err and "prompt_name: 'video' -> 'video-short'" in err
    assert main(args + ["--prompt", "video-short", "--force-config"]) == 0


def test_image_prompt_for_videos_is_refused(tmp_path, capsys):
    manifest = make_clips(tmp_path / "v", 2)
    code = main(["submit", str(manifest), "--run", str(tmp_path / "run"), "--engine", "noop", "--prompt", "image"])
    assert code == 2 and "image" in capsys.readouterr().err
