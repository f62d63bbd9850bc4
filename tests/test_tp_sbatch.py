"""slurm/caption_array.sbatch with tensor parallel (a run prepared with --tp-size 2) on the test cluster, on
CPU: `--ntasks-per-node=2` makes srun start two tasks and each `vidcap run-shard` is one rank (before, each
task started its own two ranks: four ranks, two of them refused by the shard lock). The time-limit signal
(B:USR2, sent by hand) reaches both ranks through srun: rank 0 stops after its batch, rank 1 does not die
of it, the template requeues the task and the rerun finishes the shard, every key once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from worker_helpers import make_clips

from vidcap.cli import main
from vidcap.results import read_results
from vidcap.run import RunDir
from vidcap.scheduler.slurm import job_states, wait_for_jobs
from vidcap.fixtures.tiny_models import make_tiny_model

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_job_env")]
CLIPS = 8


@pytest.mark.timeout(1500)
def test_plain_sbatch_template_runs_one_rank_per_slurm_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_tiny_model(tmp_path / "llava", "llava", width=128)  # 128 wide: DeepSpeed really splits it
    manifest = make_clips(tmp_path / "v", CLIPS)
    run = RunDir.at(tmp_path / "run")
    assert main(["submit", str(manifest), "--run", str(run.root), "--shards", "1", "--tp-size", "2",
                 "--engine", "hf", "--model", str(model), "--device", "cpu", "--max-new-tokens", "64",
                 "--batch-size", "2", "--num-frames", "2", "--resize", "0", "--prepare-only"]) == 0
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")  # `vidcap`
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", os.environ.get("TORCH_EXTENSIONS_DIR",
                                                              str(REPO / ".cache" / "torch_extensions")))
    run.logs_dir.mkdir(parents=True, exist_ok=True)
    array = subprocess.run(
        ["sbatch", "--parsable", "--array=0-0", "--time=20", "--mem=4G", "--cpus-per-task=1",
         "--ntasks-per-node=2", f"--output={run.logs_dir}/%A_%a.out", str(REPO / "slurm/caption_array.sbatch"),
         str(run.root)], capture_output=True, text=True, check=True, timeout=30).stdout.strip().split(";")[0]
    job = f"{array}_0"
    log = run.logs_dir / f"{array}_0.out"
    try:
        deadline = time.monotonic() + 900  # start-up: model load, and a DeepSpeed op build (minutes on a busy machine)
        while read_results(run, 0).num_rows < 2:
            assert time.monotonic() < deadline and not run.is_done(0), log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True, timeout=30)
        while not run.is_done(0):
            assert time.monotonic() < deadline + 200, log.read_text(errors="replace")[-3000:]
            time.sleep(1)
        assert wait_for_jobs([job], deadline_s=60, poll_s=1) == {job: "COMPLETED"}
    finally:
        if job_states([job], timeout_s=15)[job] not in ("COMPLETED",):
            subprocess.run(["scancel", array], timeout=30, check=False)
    text = log.read_text(errors="replace")
    keys = read_results(run, 0).column("key").to_pylist()
    assert sorted(keys) == [f"clip_{i:03d}.mp4" for i in range(CLIPS)], text[-3000:]  # every key once
    assert run.read_stats(0)["engine"]["tp_size"] == 2
    assert text.count("AutoTP:") == 4, text[-3000:]  # two ranks per attempt, two attempts: not 2 x 2 per attempt
    assert "being written by another process" not in text and "Traceback" not in text, text[-3000:]
    assert "vidcap: SIGUSR2 from pid " in text and "stopping after the batch in flight" in text
    assert "vidcap: shard 0 stopped at the time limit; requeued" in text
    info = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=15).stdout
    assert "Restarts=1" in info
