"""The callable submitit runs for one shard: stops after its current batch on USR2, then is requeued.

submitit's own USR2 handler (time limit or preemption) checkpoints and requeues at once, raising SystemExit
wherever Python happens to be, so the batch in flight would be lost. ShardTask takes the signal over while
the target runs: the handler only sets the `stop` event the target checks between batches. When the target
returns unfinished, ShardTask calls submitit's handler itself, which pickles this task again
(`checkpoint`), runs `scontrol requeue` and exits; the rerun calls the target again, and the target
continues from its durable results.

Slurm sends USR2 to every process of the step, the target's children too (frame readers, multiprocessing's
resource tracker), which would die of it: `vidcap.signals.signal_sets_event` blocks it in them.
"""

from __future__ import annotations

import importlib
import signal
import threading
from typing import Any, Callable, Protocol

from submitit.core.job_environment import JobEnvironment
from submitit.helpers import Checkpointable

from vidcap.errors import UserError
from vidcap.signals import signal_sets_event


class Outcome(Protocol):
    """What the target returns (vidcap.worker.ShardOutcome): False when it stopped with work left."""

    finished: bool


def _resolve(target: str) -> Callable[..., Outcome]:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def preemption_signal() -> int:
    """The signal submitit's Slurm jobs get before their time limit: USR2 unless SUBMITIT_PREEMPT_SIGNAL
    says otherwise. submitit keeps this in a private method (`JobEnvironment._usr_sig`; the range in
    pyproject.toml is the one checked): a submitit without it is refused in one line rather than failing in every task."""
    usr_sig = getattr(JobEnvironment, "_usr_sig", None)
    if usr_sig is None:
        import submitit

        raise UserError(f"submitit {getattr(submitit, '__version__', '?')} has no JobEnvironment._usr_sig, which "
                        "vidcap needs to stop a task after its batch; install submitit>=1.5,<1.6")
    return int(usr_sig())


class ShardTask(Checkpointable):
    """Calls `target(*args, stop=event)` and requeues the job when USR2 made it stop early.

    `target` is "package.module:function", imported in the job (so this pickles as a short string), e.g.
    "vidcap.worker:run_shard". It must check `stop.is_set()` between batches, return when it is set, and
    return an object whose `finished` is False when work is left. Only the arguments and the target's own
    files carry over to the rerun: the default `checkpoint` resubmits this object with the same arguments.
    """

    def __init__(self, target: str) -> None:
        if ":" not in target:
            raise ValueError(f"ShardTask target must be 'module:function', got {target!r}")
        self.target = target

    def __call__(self, *args: Any) -> Outcome:
        function = _resolve(self.target)
        usr_sig = preemption_signal()
        submitit_handler = signal.getsignal(usr_sig)
        stop = threading.Event()
        # SIG_IGN on the way out: a signal after the target returned comes too late to matter
        with signal_sets_event(usr_sig, stop, message=True, after=signal.SIG_IGN):
            outcome = function(*args, stop=stop)
        if not outcome.finished and stop.is_set() and callable(submitit_handler):
            # the handler runs `scontrol requeue`, and the requeue makes Slurm end this step with SIGTERM,
            # scontrol included: when that lands before scontrol exits, the requeue took but submitit sees a
            # failed command and logs a traceback. Blocked here, SIGTERM stays blocked in scontrol (a signal
            # mask survives exec); this process exits right after, as submitit does once it has requeued.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            try:
                submitit_handler(usr_sig, None)  # checkpoint, scontrol requeue, sys.exit
            finally:  # never leave it blocked: processes started later would inherit it
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return outcome
