"""One pickle per Slurm job array, not one per task: what makes submitting 100,000 shards take seconds.

submitit's `executor.batch()` cloudpickles a DelayedSubmission for every task, makes a folder for it and
moves the pickle in (about 200 tasks a second here, 8 minutes for 100,000 shards). `ArrayExecutor` writes
one `ArrayPickle` per array (the function once, every task's arguments) and has sbatch run
`python -m vidcap.scheduler.array_entry FOLDER` in each task. That entry writes the task's own
`<A>_<a>_submitted.pkl` the first time the task starts (a requeued task finds it and keeps it) and hands
over to submitit's `process_job`. From there on all is submitit's: the result pickle, the logs, and the
checkpoint on USR2 (`vidcap.scheduler.task.ShardTask`), which re-dumps that task's own pickle, never the
array's, before `scontrol requeue`.

Layout: `LOGS/array-<uid>/` holds an array's script, pickle, logs and results, named before sbatch is
called because Slurm opens the logs in it as soon as a task starts, which can be before sbatch returns.
`LOGS/<array id>` links to it once the id is known; `job_folder(LOGS, "123_4")` is how readers find a
task's files.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import submitit
from submitit.core import utils as submitit_utils

ARRAY_PICKLE = "array.pkl"
ENTRY_MODULE = "vidcap.scheduler.array_entry"


@dataclass
class ArrayPickle:
    """Everything an array's tasks need, pickled once: `function(*arg_lists[SLURM_ARRAY_TASK_ID])`."""

    function: Callable[..., Any]
    arg_lists: list[tuple[Any, ...]]
    timeout_min: int
    max_num_timeout: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def task(self, index: int) -> submitit_utils.DelayedSubmission:
        """What submitit would have pickled for task `index` (its timeout and requeue count included)."""
        delayed = submitit_utils.DelayedSubmission(self.function, *self.arg_lists[index], **self.kwargs)
        delayed.set_timeout(self.timeout_min, self.max_num_timeout)
        return delayed

    def dump(self, path: Path) -> None:
        submitit_utils.cloudpickle_dump(self, path)

    @staticmethod
    def load(path: Path) -> ArrayPickle:
        loaded = submitit_utils.pickle_load(path)
        if not isinstance(loaded, ArrayPickle):
            raise TypeError(f"{path} holds a {type(loaded).__name__}, not an ArrayPickle")
        return loaded


def job_folder(logs_dir: Path, job_id: str) -> Path:
    """The folder with the files of job `job_id` ("123_4": the link LOGS/123 to its array's folder)."""
    return Path(logs_dir) / job_id.partition("_")[0]


def slurm_job(logs_dir: Path, job_id: str) -> submitit.Job[Any]:
    """submitit's handle on one task (its result, its pickles), made only when someone asks for it."""
    from submitit.slurm.slurm import SlurmJob

    return SlurmJob(folder=job_folder(logs_dir, job_id), job_id=job_id)


class ArrayExecutor(submitit.SlurmExecutor):
    """A SlurmExecutor that submits an array from one pickle (submitit's plugin habit: a subclass that
    overrides how submissions are made, keeping its sbatch script, its `process_job` and its requeue).

    `folder` must contain no %j/%A: the array's files go there, and it exists before sbatch is called.
    """

    def submit_map(self, fn: Callable[..., Any], arg_lists: Sequence[tuple[Any, ...]]) -> str:
        """Submit `fn(*args)` for each of `arg_lists` as one array; its Slurm id ("123"), once sbatch accepts it.

        Raises submitit's FailedJobError when sbatch refuses the array."""
        if not arg_lists:
            raise ValueError("an array needs at least one task")
        if submitit_utils.JobPaths.get_first_id_independent_folder(self.folder) != self.folder:
            raise ValueError(f"an array's folder must be known before sbatch: no %j/%A in {self.folder}")
        self.folder.mkdir(parents=True, exist_ok=True)
        timeout_min = int(self.parameters.get("time", 5))
        ArrayPickle(fn, list(arg_lists), timeout_min, self.max_num_timeout).dump(self.folder / ARRAY_PICKLE)
        array_ex = submitit.SlurmExecutor(self.folder, self.max_num_timeout, python=self.python)
        array_ex.update_parameters(**self.parameters)
        array_ex.parameters["map_count"] = len(arg_lists)
        # the command is ours (_submitit_command_str below); the script and sbatch call are submitit's
        return array_ex._submit_command(self._submitit_command_str).job_id

    @property
    def _submitit_command_str(self) -> str:
        return " ".join([self.python, "-u -m", ENTRY_MODULE, shlex.quote(str(self.folder))])


def submit_one_array(fn: Callable[..., Any], arg_lists: Sequence[tuple[Any, ...]], parameters: dict[str, Any],
                     logs_dir: Path, max_num_timeout: int) -> str:
    """Submit one array into a new folder of `logs_dir` and link `logs_dir/<array id>` to it."""
    folder = Path(logs_dir).absolute() / f"array-{uuid.uuid4().hex[:12]}"
    executor = ArrayExecutor(folder=folder, max_num_timeout=max_num_timeout)
    executor.update_parameters(**parameters)
    array_id = executor.submit_map(fn, arg_lists)
    _link(job_folder(logs_dir, array_id), folder.name)
    return array_id


def _link(link: Path, target: str) -> None:
    """link -> target, replacing a link left by an older array with the same id (a reset cluster)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    try:
        os.replace(tmp, link)
    except OSError as exc:  # a real folder of that name: the array's files stay reachable by its own name
        tmp.unlink(missing_ok=True)
        print(f"vidcap: cannot link {link} to {target} ({exc.strerror}); the array's files are in {target}",
              file=sys.stderr)


def materialise_task_pickle(folder: Path) -> None:
    """Write this task's own submitted pickle from its array's, unless it has one (a requeued task).

    Only the step's first task writes it (the others wait for it in `process_job`), through a file of its
    own renamed into place: no reader ever sees half a pickle."""
    from submitit.core.job_environment import JobEnvironment

    env = JobEnvironment()
    target = env.paths.submitted_pickle
    if env.global_rank != 0 or target.exists():
        return
    if env.array_task_id is None:
        raise RuntimeError(f"{ENTRY_MODULE} runs only in a Slurm array task (no SLURM_ARRAY_TASK_ID)")
    delayed = ArrayPickle.load(folder / ARRAY_PICKLE).task(int(env.array_task_id))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    delayed.dump(tmp)
    os.replace(tmp, target)


def release_held_signal(held: int) -> None:
    """Let the preemption signal through once submitit's handler for this task is in place.

    `array_entry` blocks it on the task's first line: Python and submitit take seconds to start on a loaded
    node, and a USR2 then (a time limit close, a preemption) would kill the task with no checkpoint and no
    requeue. Held, it waits; released here, submitit's handler checkpoints and requeues the task as it
    would a minute later. `process_job` then installs the same handler again."""
    from submitit.core.job_environment import JobEnvironment

    try:
        env = JobEnvironment()
        paths = env.paths
        for _ in range(60):  # another rank writes it (process_job waits as long)
            if paths.submitted_pickle.exists():
                env._handle_signals(paths, submitit_utils.DelayedSubmission.load(paths.submitted_pickle))
                break
            time.sleep(1)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {held})


def main(argv: list[str] | None = None, held_signal: int | None = None) -> None:
    """The command each array task runs: FOLDER (the array's); then submitit's own `_submit` does the rest.
    `held_signal`: blocked since the task started (see `release_held_signal`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(f"usage: python -m {ENTRY_MODULE} ARRAY_FOLDER")
    folder = Path(args[0])
    os.environ["SUBMITIT_FOLDER"] = str(folder)  # what JobEnvironment().paths reads (process_job sets it too)
    try:
        materialise_task_pickle(folder)
    finally:
        if held_signal is not None:
            release_held_signal(held_signal)
    from submitit.core.submission import process_job

    process_job(folder)
