"""Slurm through submitit: submit shard arrays, read the cluster's array limit, ask Slurm for job states.

Every Slurm command runs under a deadline. A controller or slurmdbd that does not answer turns into the state
UNKNOWN, never into a hang: submitit's own `Job.result()` waits forever for a job that Slurm killed when the
cluster has no accounting, so vidcap never calls it without knowing the job is over.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import submitit
from submitit.core.utils import FailedJobError

from vidcap.errors import UserError
from vidcap.scheduler.resources import SlurmResources, load_profile
from vidcap.scheduler.slurm_array import job_folder, slurm_job, submit_one_array
from vidcap.scheduler.slurm_states import FINAL_STATES, GONE, UNKNOWN, is_ended, normalize

__all__ = [
    "FINAL_STATES",
    "SlurmResources",
    "SlurmUnavailable",
    "cluster_max_array_size",
    "job_folder",
    "job_states",
    "load_profile",
    "slurm_job",
    "submit_array",
    "wait_for_jobs",
]

# Environment variables whose values must never be written into a job script.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW", re.IGNORECASE)


class SlurmUnavailable(UserError):
    """Slurm's commands are missing here, or the controller does not answer."""


def _run(cmd: list[str], deadline: float) -> subprocess.CompletedProcess[str] | None:
    """Run a Slurm command until `deadline` (time.monotonic); None if it is missing or too slow."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=remaining, check=False)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None


def cluster_max_array_size(timeout_s: float = 15.0) -> int:
    """The cluster's MaxArraySize: an array's task indices must stay below it (sbatch refuses the array)."""
    proc = _run(["scontrol", "show", "config"], time.monotonic() + timeout_s)
    if proc is None or proc.returncode != 0:
        why = "no answer" if proc is None else (proc.stderr.strip() or f"exit code {proc.returncode}")
        raise SlurmUnavailable(f"cannot read the cluster's MaxArraySize with `scontrol show config`: {why}")
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.MULTILINE)
    if match is None:
        raise SlurmUnavailable("`scontrol show config` printed no MaxArraySize")
    return int(match.group(1))


def _refuse_secrets_in_script(resources: SlurmResources) -> None:
    """Secrets reach a job through the environment sbatch exports at submit, never through the script text.

    submitit writes `setup` lines and sbatch options into the script kept in the logs folder, which other
    users of a shared file system may read.
    """
    script_text = "\n".join([*resources.setup, *(f"{k}={v}" for k, v in resources.sbatch.items())])
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in script_text:
            raise UserError(
                f"the Slurm setup lines or sbatch options contain the value of ${name}: leave it in the "
                "environment when you submit (sbatch exports it to the job), never in the job script"
            )


def submit_array(
    fn: Callable[..., Any],
    arg_lists: Sequence[tuple[Any, ...]],
    resources: SlurmResources,
    logs_dir: Path,
    name: str,
    max_array_size: int | None = None,
    accepted: Callable[[int, list[str]], None] | None = None,
) -> list[str]:
    """Submit `fn(*args)` for each entry of `arg_lists` as Slurm job arrays and return their job ids at once.

    One array holds at most MaxArraySize tasks (read from the cluster unless given): sbatch refuses an
    array past the limit. The `%` throttle applies to each array. Each array is one folder and one pickle
    (`vidcap.scheduler.slurm_array`); a task's files are in `slurm_array.job_folder(logs_dir, job_id)` and
    `slurm_array.slurm_job(logs_dir, job_id)` is submitit's handle on it. Job ids are "123_4".
    `accepted(first, ids)` is called as soon as sbatch has accepted each array (its tasks run the entries
    `first`, `first + 1`, ... of `arg_lists`), so that a caller records them before the next sbatch can fail.
    """
    if not arg_lists:
        return []
    _refuse_secrets_in_script(resources)
    if submitit.SlurmExecutor.affinity() < 0:
        raise SlurmUnavailable("cannot submit to Slurm: `srun` is not on PATH")
    limit = max_array_size or cluster_max_array_size()
    params = resources.submitit_parameters(name)
    params["array_parallelism"] = resources.array_parallelism or limit
    job_ids: list[str] = []
    for start in range(0, len(arg_lists), limit):
        chunk = arg_lists[start : start + limit]
        try:
            array_id = submit_one_array(fn, chunk, params, Path(logs_dir), resources.max_requeues)
        except FailedJobError as exc:
            done = f" (already submitted: {_array_ids(job_ids)})" if job_ids else ""
            raise UserError(f"sbatch refused tasks {start}..{start + len(chunk) - 1}: {exc}{done}") from None
        ids = [f"{array_id}_{index}" for index in range(len(chunk))]
        job_ids.extend(ids)
        if accepted is not None:
            accepted(start, ids)
    return job_ids


def _expand_ids(field: str) -> Iterable[str]:
    """'12' -> 12; '12_3' -> 12_3; '12_[0-2,5%4]' (pending array tasks, compacted) -> 12_0 12_1 12_2 12_5."""
    base, sep, tasks = field.partition("_")
    if not sep or not tasks.startswith("["):
        yield field
        return
    for part in tasks.strip("[]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        for index in range(int(first), int(last or first) + 1):
            yield f"{base}_{index}"


def _parse_states(text: str) -> dict[str, str]:
    """Lines 'JOBID|STATE' (squeue/sacct) -> {job id: state}; 'CANCELLED by 0' -> 'CANCELLED'."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if not sep or not state or "." in job_id or "+" in job_id:
            continue
        for expanded in _expand_ids(job_id):
            states[expanded] = normalize(state)
    return states


def _array_ids(job_ids: Iterable[str]) -> str:
    return ",".join(sorted({job_id.split("_")[0] for job_id in job_ids}))


def job_states(job_ids: Sequence[str], timeout_s: float = 30.0) -> dict[str, str]:
    """Slurm state of each job id ("123" or "123_4"): a state of `slurm_states.PHASES`.

    squeue -t all answers for live jobs and for finished ones the controller still holds (MinJobAge);
    sacct, where there is accounting, for the others. An id that squeue answered without (it lists every
    job the controller knows) and that sacct does not know either is GONE (ended and purged); one that
    squeue did not answer for (it failed or missed the deadline) is UNKNOWN. This returns within
    `timeout_s` and never waits on a job.
    """
    if not job_ids:
        return {}
    deadline = time.monotonic() + timeout_s
    states: dict[str, str] = {}
    squeue = _run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", _array_ids(job_ids)], deadline)
    answered = squeue is not None and (squeue.returncode == 0 or "Invalid job id" in squeue.stderr)
    if squeue is not None and squeue.returncode == 0:  # 1 with "Invalid job id" when none is known any more
        states.update(_parse_states(squeue.stdout))
    missing = [job_id for job_id in job_ids if job_id not in states]
    if missing:
        sacct = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", _array_ids(missing)], deadline)
        if sacct is not None and sacct.returncode == 0:  # 1 with "accounting storage is disabled"
            for job_id, state in _parse_states(sacct.stdout).items():
                states.setdefault(job_id, state)
    return {job_id: states.get(job_id, GONE if answered else UNKNOWN) for job_id in job_ids}


def wait_for_jobs(job_ids: Sequence[str], deadline_s: float, poll_s: float = 2.0) -> dict[str, str]:
    """Poll until every job has ended or `deadline_s` has passed; return the last states seen.

    UNKNOWN (no answer) is not an end: it is polled again, and never past the deadline.
    """
    end = time.monotonic() + deadline_s
    while True:
        states = job_states(job_ids, timeout_s=max(end - time.monotonic(), 0.0))
        if all(is_ended(state) for state in states.values()) or time.monotonic() + poll_s >= end:
            return states
        time.sleep(poll_s)
