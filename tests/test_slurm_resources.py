"""The Slurm layer without a cluster: profiles, the sbatch text submitit writes, state parsing, ShardTask."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
import slurm_jobs
from submitit.slurm.slurm import _make_sbatch_string

from vidcap.errors import UserError
from vidcap.scheduler.resources import SlurmResources, load_profile
from vidcap.scheduler.slurm import _parse_states, job_states, submit_array, wait_for_jobs
from vidcap.scheduler.task import ShardTask

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "slurm/profiles/example.toml"


def _sbatch_text(resources: SlurmResources) -> str:
    return _make_sbatch_string(command="true", folder="/logs/%j", **resources.submitit_parameters("vidcap"))


def test_example_profile_sets_every_field() -> None:
    resources = load_profile(EXAMPLE)
    fields = {f.name for f in dataclasses.fields(SlurmResources)}
    assert set(tomllib.loads(EXAMPLE.read_text())) == fields, "the example documents every key"
    assert resources.gpus_per_task == 1 and resources.setup[0] == "module load cuda/12.1"
    assert resources.sbatch["requeue"] is True


def test_sbatch_script_carries_the_resources() -> None:
    text = _sbatch_text(load_profile(EXAMPLE))
    for line in ["--partition=gpu", "--account=myproject", "--qos=normal", "--time=240", "--gpus-per-task=1",
                 "--cpus-per-task=8", "--mem=65536M", "--constraint='a100|h100'", "--signal=USR2@120",
                 "--exclude=node-bad01", "--mail-type=FAIL", "#SBATCH --requeue\n", "module load cuda/12.1"]:
        assert line in text


def test_no_gpu_option_for_cpu_tasks() -> None:
    assert "gpu" not in _sbatch_text(SlurmResources(time_min=5)).lower()
    assert "--gpus-per-task=4" in _sbatch_text(SlurmResources(gpus_per_task=4))


def test_flags_override_the_profile() -> None:
    profile = load_profile(EXAMPLE)
    merged = profile.override(time_min=30, partition=None, gpus_per_task=2, sbatch={"exclude": "n2"}, setup=["x"])
    assert (merged.time_min, merged.partition, merged.gpus_per_task) == (30, "gpu", 2)
    assert merged.sbatch == {"exclude": "n2", "mail-type": "FAIL", "requeue": True}
    assert merged.setup == ("x",)


@pytest.mark.parametrize(
    "body, words",
    [
        ('gpu_per_task = 1\n', ["unknown key 'gpu_per_task'"]),
        ('time_min = "4:00:00"\n', ["'time_min' must be int"]),
        ('setup = "module load cuda"\n', ["'setup' must be list"]),
        ('[sbatch]\ntime = "10"\n', ["sbatch option 'time'", "time_min"]),
        ('[sbatch]\narray = "0-3"\n', ["sbatch option 'array'"]),
        ('[sbatch]\nexclusive = false\n', ["'exclusive' must be a string, a number or true"]),
        ('time_min = 0\n', ["time_min must be at least 1"]),
        ('time_min = [\n', ["not valid TOML"]),
    ],
)
def test_bad_profile_names_the_file_and_key(tmp_path: Path, body: str, words: list[str]) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(body)
    with pytest.raises(UserError) as info:
        load_profile(path)
    assert str(path) in str(info.value)
    for word in words:
        assert word in str(info.value)


def test_missing_profile_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read Slurm profile"):
        load_profile(tmp_path / "nope.toml")


def test_a_key_in_the_script_is_refused_before_submitting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value-123")
    leaky = SlurmResources(setup=("export OPENAI_API_KEY=sk-secret-value-123",))
    with pytest.raises(UserError, match=r"\$OPENAI_API_KEY"):
        submit_array(print, [(1,)], leaky, tmp_path / "logs", "vidcap", max_array_size=10)
    assert not (tmp_path / "logs").exists()


def test_states_from_squeue_and_sacct_lines() -> None:
    text = "12_[0-2,5%4]|PENDING\n13|CANCELLED by 0\n13.batch|CANCELLED\n14_7|RUNNING\n15_[3]|COMPLETED\n"
    assert _parse_states(text) == {
        "12_0": "PENDING", "12_1": "PENDING", "12_2": "PENDING", "12_5": "PENDING",
        "13": "CANCELLED", "14_7": "RUNNING", "15_3": "COMPLETED",
    }


def test_states_never_hang_on_a_silent_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slurmdbd or controller that does not answer gives UNKNOWN within the deadline."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for name in ("squeue", "sacct"):
        (shims / name).write_text("#!/bin/sh\nexec sleep 60\n")
        (shims / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    start = time.monotonic()
    assert job_states(["123_4", "125"], timeout_s=2) == {"123_4": "UNKNOWN", "125": "UNKNOWN"}
    assert wait_for_jobs(["123_4"], deadline_s=3, poll_s=0.5) == {"123_4": "UNKNOWN"}
    assert time.monotonic() - start < 7


def test_sbatch_template_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(REPO / "slurm/caption_array.sbatch")], check=True)
    for script in ("cluster-up.sh", "cluster-down.sh"):
        subprocess.run(["bash", "-n", str(REPO / "slurm" / script)], check=True)


@pytest.fixture
def usr2_spy() -> Iterator[list[int]]:
    """Stands in for submitit's USR2 handler (checkpoint + requeue); restores the old one after."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_shard_task_stops_after_the_step_and_hands_over_to_submitit(tmp_path: Path, usr2_spy: list[int]) -> None:
    progress = tmp_path / "progress"
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGUSR2)).start()
    outcome = ShardTask("slurm_jobs:stepper")(str(progress), 3)
    assert outcome.finished is False
    lines = progress.read_text().splitlines()
    assert lines[-1] == f"stopped 1 at {outcome.steps}" and lines[-2] == f"step {outcome.steps}"
    assert usr2_spy == [signal.SIGUSR2], "submitit's handler requeues once the step is done"
    # SIGTERM is blocked only while the handler runs (for its scontrol): left blocked, every process this one
    # starts later would inherit it and ignore SIGTERM
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_shard_task_that_finishes_is_not_requeued(tmp_path: Path, usr2_spy: list[int]) -> None:
    progress = tmp_path / "progress"
    progress.write_text("run 1 from 0\nstep 1\nstopped 1 at 1\n")  # a rerun: 3 more steps, then done
    assert ShardTask("slurm_jobs:stepper")(str(progress), 3) == slurm_jobs.Outcome(True, 4, 2)
    assert usr2_spy == []


def test_shard_task_target_must_name_module_and_function() -> None:
    with pytest.raises(ValueError, match="module:function"):
        ShardTask("vidcap.worker.run_shard")


def test_signal_delay_leaves_35_s_of_a_short_time_limit() -> None:
    """USR2 comes up to 30 s before `time - delay` (Slurm's check period): with --time 1 and the default
    120 s it would come as the task starts, every time it is requeued."""
    assert SlurmResources(time_min=1).effective_signal_delay_s == 25
    assert SlurmResources(time_min=2).effective_signal_delay_s == 85
    assert SlurmResources(time_min=240).effective_signal_delay_s == 120
    assert "--signal=USR2@25" in _sbatch_text(SlurmResources(time_min=1))
