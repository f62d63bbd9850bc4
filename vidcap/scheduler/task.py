"""The callable submitit runs for one shard: stops after its current batch on USR2, then is requeued.

submitit's own USR2 handler (time limit or preemption) checkpoints and requeues at once, raising SystemExit
wherever Python happens to be, so the batch in flight would be lost. ShardTask takes the signal over while
the target runs: the handler only sets the `stop` event the target checks between batches. When the target
returns unfinished, ShardTask calls submitit's handler itself, which pickles this task again
(`checkpoint`), runs `scontrol requeue` and exits; the rerun calls the target again, and the target
continues from its durable results.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
from typing import Any, Callable, Protocol

from submitit.core.job_environment import JobEnvironment
from submitit.helpers import Checkpointable


class Outcome(Protocol):
    """What the target returns (vidcap.worker.ShardOutcome): False when it stopped with work left."""

    finished: bool


def _resolve(target: str) -> Callable[..., Outcome]:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _set_on_readable(fd: int, stop: threading.Event) -> None:
    """Set `stop` once a byte arrives on `fd`; return quietly when the other end is closed."""
    if os.read(fd, 1):
        stop.set()
    os.close(fd)


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
        usr_sig = JobEnvironment._usr_sig()  # USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise
        submitit_handler = signal.getsignal(usr_sig)
        stop = threading.Event()
        # The handler may run while the main thread holds `stop`'s internal lock (inside stop.wait()), so
        # it must not call stop.set() itself: it writes a byte that a helper thread turns into set().
        read_fd, write_fd = os.pipe()
        threading.Thread(target=_set_on_readable, args=(read_fd, stop), daemon=True).start()
        signal.signal(usr_sig, lambda signum, frame: os.write(write_fd, b"\0"))
        try:
            outcome = function(*args, stop=stop)
        finally:
            signal.signal(usr_sig, signal.SIG_IGN)  # a signal now comes too late to matter
            os.close(write_fd)
        if not outcome.finished and stop.is_set() and callable(submitit_handler):
            submitit_handler(usr_sig, None)  # checkpoint, scontrol requeue, sys.exit
        return outcome
