"""A signal that sets an event in this process and leaves the processes it starts alone.

Slurm sends the time-limit (or preemption) signal, USR2, to every process of a job step: the worker, its
frame-reading processes and multiprocessing's resource tracker. Those children would die of it (USR2's
default action is to terminate): a reader holding an item turns it into a false error row, and a dead
resource tracker forgets the shared-memory segments it should clean up. A Python handler in the worker
does not help them, as a process started by spawn (exec) gets the default action back.

A blocked signal stays blocked through fork and exec, though. So while `signal_sets_event` is active, the
signal is blocked in the calling (main) thread, and so in every thread and process started from it, and a
helper thread takes it with `sigwait` and sets the event. A thread that existed before and does not block
the signal may still be the one the kernel picks: a handler then forwards the signal to the helper thread.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def signal_sets_event(signum: int, event: threading.Event, message: str = "", after: Any = None) -> Iterator[None]:
    """While inside, `signum` sets `event` (and writes `message` to stderr) instead of its usual action.

    Leaving sets the previous handler again, or `after` when given (e.g. `signal.SIG_IGN`: a signal that
    comes once the work is over must not kill the process), then the previous signal mask. A signal that
    comes while leaving is too late to set the event. Call it from the main thread only.
    """
    previous = signal.getsignal(signum)
    final = after if after is not None else (signal.SIG_DFL if previous is None else previous)
    leaving = threading.Event()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signum})

    def receive() -> None:  # the signal is blocked here too (inherited): sigwait is how it arrives
        while not leaving.is_set():
            if signal.sigtimedwait({signum}, 0.25) is None or leaving.is_set():
                continue
            if message and not event.is_set():
                os.write(2, message.encode())
            event.set()

    helper = threading.Thread(target=receive, name=f"wait-{signal.Signals(signum).name}", daemon=True)
    helper.start()
    ident = helper.ident
    assert ident is not None

    def forward(sig: int, frame: object) -> None:  # runs in this (main) thread, so never after `leaving`
        if not leaving.is_set():
            signal.pthread_kill(ident, sig)

    # for a thread older than the block that has the signal unblocked: hand it over to the helper thread
    signal.signal(signum, forward)
    try:
        yield
    finally:
        leaving.set()
        signal.signal(signum, final)
        helper.join(timeout=5)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
