"""One pickle per Slurm array (vidcap.scheduler.slurm_array): what is written at submit, and a requeue that
reruns one task from its own pickle while its siblings' pickles and the array's stay as they were."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import slurm_jobs
from slurm_fixtures import slurm_cluster, slurm_job_env  # noqa: F401  (fixtures)
from submitit.core.utils import DelayedSubmission

from vidcap.scheduler.slurm import SlurmResources, job_folder, job_states, slurm_job, submit_array, wait_for_jobs
from vidcap.scheduler.slurm_array import ARRAY_PICKLE, ArrayPickle
from vidcap.scheduler.task import ShardTask


def test_a_task_gets_what_submitit_would_have_pickled_for_it() -> None:
    array = ArrayPickle(slurm_jobs.square, [(2,), (3,)], timeout_min=7, max_num_timeout=4)
    task = array.task(1)
    assert (task.function, task.args, task.kwargs) == (slurm_jobs.square, (3,), {})
    assert (task._timeout_min, task._timeout_countdown) == (7, 4)
    assert task.result() == 9


def _wait_until(predicate, deadline_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.2)


def _fingerprint(path: Path) -> tuple[int, int, bytes]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, path.read_bytes()


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_job_env")
def test_one_pickle_per_array_and_a_requeued_task_reruns_from_its_own(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    progress = [tmp_path / f"progress-{i}" for i in range(3)]
    for sibling in (progress[0], progress[2]):  # already "ran once": they finish 3 steps after they start
        sibling.write_text("run 1 from 0\n")
    held = SlurmResources(time_min=15, max_requeues=3, sbatch={"hold": True})  # >= 10 min: USR2 is a preemption
    ids = submit_array(ShardTask("slurm_jobs:stepper"), [(str(p), 3) for p in progress], held, logs, "vidcap-test")
    array = ids[0].split("_")[0]
    folder = job_folder(logs, ids[0])
    try:
        assert ids == [f"{array}_{i}" for i in range(3)]
        assert folder.is_symlink() and folder.resolve().parent == logs.resolve()
        assert sorted(p.name for p in logs.iterdir()) == sorted([array, folder.resolve().name]), "no per-task folders"
        assert [p.name for p in logs.rglob("*.pkl")] == [ARRAY_PICKLE], "one pickle for the array, none per task"
        loaded = ArrayPickle.load(folder / ARRAY_PICKLE)
        assert loaded.arg_lists == [(str(p), 3) for p in progress] and loaded.max_num_timeout == 3
        subprocess.run(["scontrol", "release", array], check=True, timeout=30)
        _wait_until(lambda: "step 2" in progress[1].read_text() if progress[1].exists() else False, 90,
                    "task 1 to take two steps")
        _wait_until(lambda: all(job_states([ids[i]], 10)[ids[i]] == "COMPLETED" for i in (0, 2)), 90, "siblings")
        pickles = {i: slurm_job(logs, ids[i]).paths.submitted_pickle for i in range(3)}
        before = {i: _fingerprint(pickles[i]) for i in range(3)}  # each task wrote its own as it started
        # The rerun must come from task 1's own pickle: without the array's it could come from nothing else.
        array_pickle = (folder / ARRAY_PICKLE).read_bytes()
        (folder / ARRAY_PICKLE).rename(tmp_path / "array.pkl.aside")
        subprocess.run(["scancel", "--signal=USR2", ids[1]], check=True, timeout=30)
        assert wait_for_jobs(ids, deadline_s=120, poll_s=0.5) == dict.fromkeys(ids, "COMPLETED")
    finally:
        subprocess.run(["scancel", array], timeout=30)
    outcome = slurm_job(logs, ids[1]).result()
    assert outcome.finished and outcome.runs == 2
    lines = progress[1].read_text().splitlines()
    stopped = next(line for line in lines if line.startswith("stopped 1 at "))
    assert lines[lines.index(stopped) + 1] == f"run 2 from {stopped.split()[-1]}", lines
    assert before[1][0] != pickles[1].stat().st_ino, "the checkpoint re-dumped task 1's own pickle"
    assert DelayedSubmission.load(pickles[1]).args == (str(progress[1]), 3)
    assert [_fingerprint(pickles[i]) for i in (0, 2)] == [before[0], before[2]], "siblings' pickles untouched"
    assert (tmp_path / "array.pkl.aside").read_bytes() == array_pickle
    assert [slurm_job(logs, ids[i]).result().runs for i in (0, 2)] == [2, 2]
    assert "Restarts=1" in subprocess.run(["scontrol", "show", "job", ids[1]], capture_output=True, text=True,
                                          timeout=15).stdout
