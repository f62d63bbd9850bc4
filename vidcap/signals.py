"""Signals that stop vidcap after the batch in flight, leave its child processes alone, and name their sender.

Slurm sends the time-limit (or preemption) signal, USR2, to every process of a job step: the worker, its
frame-reading processes and multiprocessing's resource tracker. Those children would die of it (USR2's
default action is to terminate): a reader holding an item turns it into a false error row, and a dead
resource tracker forgets the shared-memory segments it should clean up. A Python handler in the worker
does not help them, as a process started by spawn (exec) gets the default action back.

A blocked signal stays blocked through fork and exec, though. So while `on_signals` is active, the signals
are blocked in the calling (main) thread, and so in every thread and process started from it, and a helper
thread takes them with `sigwaitinfo`. That also gives the sender (si_pid): every stop says who asked for it
and with what command line, because a stop nobody expected (a USR2 to a process outside any Slurm job) is
otherwise a mystery.

Why sigwaitinfo and not sigtimedwait: CPython's sigtimedwait (3.11 at least), interrupted by another signal
(SIGCHLD with a handler, say) once its timeout has run out, leaves its retry loop and returns the siginfo
it never filled: stack garbage, a signal nobody sent with a random number and sender. That was the "stray
USR2" that stopped shard runs outside Slurm (and "0 is not a valid Signals" in a rank). sigwaitinfo retries
on EINTR until a signal of the set really comes; leaving wakes the helper with one sent to it alone. A thread that existed before and does not block the signal may still be the one the
kernel picks: a handler then forwards the signal to the helper thread (the sender is then unknown).
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator

#: the sender as text, e.g. "pid 4242 (slurmstepd: [17.0])"
Receiver = Callable[[int, str], None]


def describe_sender(info: Any) -> str:
    """Who sent a signal, from sigtimedwait's siginfo: pid and command line (or why it is not known)."""
    pid = getattr(info, "si_pid", 0)
    code = getattr(info, "si_code", None)
    if code == getattr(signal, "SI_KERNEL", 0x80):
        return "the kernel"
    if pid == os.getpid() and code == getattr(signal, "SI_TKILL", -6):
        return "this process (forwarded from another thread; the first sender is unknown)"
    if pid <= 0:
        return "an unknown sender (a terminal, the kernel, or a process outside this pid namespace)"
    return f"pid {pid} ({command_line(pid)})"


def command_line(pid: int) -> str:
    """`pid`'s command line, its name if it has none (a kernel thread), or why neither can be read."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(2000)
        text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        if text:
            return text
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f"[{f.read().decode(errors='replace').strip()}]"
    except FileNotFoundError:
        return "gone by now"
    except OSError as exc:
        return f"command line unreadable: {exc.strerror}"


@contextmanager
def on_signals(signums: Iterable[int], receive: Receiver, after: dict[int, Any] | None = None) -> Iterator[None]:
    """While inside, each of `signums` calls `receive(signum, sender)` in a helper thread instead of its
    usual action.

    Leaving sets the previous handlers again, or the one `after` gives for a signal (e.g. `signal.SIG_IGN`:
    a signal that comes once the work is over must not kill the process), then the previous signal mask. A signal that
    comes while leaving is too late. Call it from the main thread only.
    """
    signums = set(signums)
    previous = {s: signal.getsignal(s) for s in signums}
    leaving = threading.Event()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signums)

    def wait() -> None:  # the signals are blocked here too (inherited): sigwaitinfo is how they arrive
        while True:
            info = signal.sigwaitinfo(signums)
            if leaving.is_set():
                return  # woken to leave (or a signal too late to act on)
            if info.si_signo not in signums:
                continue  # never from sigwaitinfo; a guard, as a phantom stop costs a whole batch
            try:
                receive(info.si_signo, describe_sender(info))
            except Exception as exc:  # noqa: BLE001 - a failing receiver must not end the waiting
                os.write(2, f"vidcap: error while handling {signal.Signals(info.si_signo).name}: {exc}\n".encode())

    helper = threading.Thread(target=wait, name="vidcap-signals", daemon=True)
    helper.start()
    ident = helper.ident
    assert ident is not None

    def forward(sig: int, frame: object) -> None:  # runs in this (main) thread, so never after `leaving`
        if not leaving.is_set():
            signal.pthread_kill(ident, sig)

    # for a thread older than the block that has the signal unblocked: hand it over to the helper thread
    for s in signums:
        signal.signal(s, forward)
    try:
        yield
    finally:
        leaving.set()
        try:
            signal.pthread_kill(ident, next(iter(signums)))  # wakes the helper: pending for it alone, dies with it
        except ProcessLookupError:
            pass
        for s, old in previous.items():
            final = (after or {}).get(s, signal.SIG_DFL if old is None else old)
            signal.signal(s, final)
        helper.join(timeout=5)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def stop_message(signum: int, sender: str, action: str = "stopping after the batch in flight") -> str:
    return f"\nvidcap: {signal.Signals(signum).name} from {sender}: {action}\n"


@contextmanager
def signal_sets_event(signum: int, event: threading.Event, message: bool | str = False,
                      after: Any = None) -> Iterator[None]:
    """While inside, `signum` sets `event` instead of its usual action; with `message`, the first one also
    says on stderr who sent it (see `on_signals` for `after`)."""

    def receive(sig: int, sender: str) -> None:
        if message and not event.is_set():
            os.write(2, stop_message(sig, sender).encode())
        event.set()

    with on_signals({signum}, receive, None if after is None else {signum: after}):
        yield


def in_slurm_job() -> bool:
    """Whether this process runs inside a Slurm job (so that USR2 can mean its time limit)."""
    return bool(os.environ.get("SLURM_JOB_ID"))


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM/SIGINT/SIGUSR2 set `stop` instead of killing the process mid-write (main thread only).

    USR2 is Slurm's "time limit (or preemption) is near" (slurm/caption_array.sbatch passes it on); in a
    process that runs in no Slurm job it cannot mean that, so it is ignored, with a line naming its sender.
    A second Ctrl-C stops at once (KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def receive(signum: int, sender: str) -> None:
        if signum == signal.SIGUSR2 and not in_slurm_job():
            os.write(2, stop_message(signum, sender, "ignored (this process runs in no Slurm job, so it "
                                                     "cannot be Slurm's time limit)").encode())
            return
        # os.write, not print: the progress bar may be in the middle of its own write to stderr
        if not stop.is_set():
            os.write(2, stop_message(signum, sender).encode())
        stop.set()  # the main thread never waits on this event, so setting it here cannot deadlock

    def interrupt(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C means now
        receive(signum, "the terminal (Ctrl-C)" if os.isatty(0) else "an unknown sender")

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        # a USR2 once the shard is over is ignored: its default action would kill a process whose work is done
        late = signal.SIG_IGN if signal.getsignal(signal.SIGUSR2) in (signal.SIG_DFL, None) else None
        with on_signals({signal.SIGTERM, signal.SIGUSR2}, receive, {signal.SIGUSR2: late} if late else None):
            yield
    finally:
        signal.signal(signal.SIGINT, previous)
