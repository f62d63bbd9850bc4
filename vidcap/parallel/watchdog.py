"""The watchdog every tensor-parallel rank runs: a stall or a lost peer ends the task within a known time.

Collective timeouts alone do not bound a tensor-parallel task: DeepSpeed's CPU all-reduce spins on
shared-memory flags with no timeout at all, NCCL's timeout is minutes and only aborts when asked to, and a
rank waiting for the next batch may wait a long time for good reasons (rank 0 reading a slow video). So:

* `busy(what, seconds)`: the main thread arms a deadline around each phase whose length it knows (start-up,
  one batch: broadcast + generate + agreement). A thread checks it twice a second; past the deadline it
  prints one line naming the rank and the phase, dumps every thread's stack (where it hung), and calls
  `os._exit`. In case the stuck call holds the GIL so that no Python thread can run, `faulthandler`'s C
  timer is armed too, a little later, and exits the same way without needing the GIL.
* Heartbeat: rank 0 writes a counter into the rendezvous store every few seconds from a thread; followers
  read it from a thread of theirs. A follower waiting for rank 0's next batch is not bound by the batch
  deadline (rank 0 may be reading frames for minutes), only by the heartbeat: no change for `heartbeat`
  seconds (rank 0 frozen: judged by the deadline thread, so a store call that hangs cannot delay it), or a
  store that refuses the connection (rank 0's process is gone), ends it.
* Parent: ranks started by vidcap's local launcher end when the launcher is gone.

`die()` is also the one way a rank ends on an error it cannot recover from: one line on stderr, the same
line in the launcher's reason file, `os._exit` (no interpreter shutdown that could hang on a dead peer).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Iterator

from vidcap.parallel.env import PARENT_ENV, REASON_ENV, Bounds

#: exit status of a rank that the watchdog ended (stall, lost peer); 2 is a user error, 1 a bug
EXIT_STALLED = 75
#: the faulthandler backstop fires this long after the Python watchdog should have
BACKSTOP_GRACE_S = 15.0
HEARTBEAT_KEY = "vidcap/tp/heartbeat"

_rank_label = "tensor-parallel rank ?"


def set_rank_label(rank: int, world: int) -> None:
    global _rank_label
    _rank_label = f"tensor-parallel rank {rank}/{world}"


def die(reason: str, code: int = EXIT_STALLED, stacks: bool = False) -> None:
    """End this rank now: one line on stderr and in the launcher's reason file, then `os._exit(code)`."""
    line = " ".join(reason.split())
    try:
        os.write(2, f"\nvidcap: {_rank_label}: {line}\n".encode())
        path = os.environ.get(REASON_ENV)
        if path:
            with open(path, "w", encoding="utf-8") as f:
                f.write(f"{code}\n{line}\n")
        if stacks:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
    finally:
        os._exit(code)


class Watchdog:
    """Deadline, parent and heartbeat-staleness checks in one daemon thread; the heartbeat's store calls in
    another (see the module docstring)."""

    def __init__(self, rank: int, world: int, bounds: Bounds, tick: float = 0.5) -> None:
        self.rank, self.world, self.bounds, self.tick = rank, world, bounds, tick
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._what = ""
        self._seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vidcap-tp-watchdog", daemon=True)
        parent = os.environ.get(PARENT_ENV)
        self._parent = int(parent) if parent else None
        self._store: Any = None
        self._leader = rank == 0
        self._listening = False
        self._beat = 0
        self._seen: bytes | None = None
        self._seen_at = 0.0

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    # deadlines -------------------------------------------------------------------------------------
    def arm(self, what: str, seconds: float) -> None:
        with self._lock:
            self._deadline = time.monotonic() + seconds
            self._what, self._seconds = what, seconds
        faulthandler.dump_traceback_later(seconds + BACKSTOP_GRACE_S, exit=True)

    def disarm(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        with self._lock:
            self._deadline = None

    @contextmanager
    def busy(self, what: str, seconds: float) -> Iterator[None]:
        """A deadline around a phase of known length (disarmed however the phase ends)."""
        self.arm(what, seconds)
        try:
            yield
        finally:
            self.disarm()

    # heartbeat ------------------------------------------------------------------------------------
    def attach_heartbeat(self, master_addr: str, master_port: int) -> None:
        """Rank 0 beats, the others listen, in a thread of their own with a store client of its own (the
        rendezvous store's server lives in rank 0's process). A store call may block (a frozen rank 0): it
        never delays the deadline thread, which judges staleness from the last beat seen."""
        import torch.distributed as dist

        timeout = timedelta(seconds=max(5.0, self.bounds.heartbeat / 2))
        self._store = dist.TCPStore(master_addr, master_port, is_master=False, timeout=timeout,
                                    wait_for_workers=False)
        if self._leader:
            self._store.set(HEARTBEAT_KEY, "0")
        self._seen_at = time.monotonic()
        self._listening = not self._leader
        threading.Thread(target=self._beat_loop, name="vidcap-tp-heartbeat", daemon=True).start()

    def stop_listening(self) -> None:
        """A follower that got rank 0's last word stops checking on it (rank 0 may now exit)."""
        self._listening = False

    def stop(self) -> None:
        self._stop.set()
        self.disarm()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    # the threads ----------------------------------------------------------------------------------
    def _run(self) -> None:
        """Deadlines, parent, heartbeat staleness: never blocks on anything but its tick."""
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                deadline, what, seconds = self._deadline, self._what, self._seconds
            if deadline is not None and now > deadline:
                die(f"{what} did not finish within {seconds:g} s: a rank died or stalled; the task is "
                    f"stopped (finished batches are kept: a rerun continues)", stacks=True)
            if self._parent is not None and os.getppid() != self._parent:
                die("the vidcap process that launched the ranks is gone; stopping")
            if self._listening and now - self._seen_at > self.bounds.heartbeat:
                die(f"no heartbeat from rank 0 for {self.bounds.heartbeat:g} s (frozen or gone); stopping")

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.bounds.beat_every):
            if self._leader:
                self._beat += 1
                try:
                    self._store.set(HEARTBEAT_KEY, str(self._beat))
                except Exception:  # noqa: BLE001 - a follower that left is noticed at the next batch
                    pass
                continue
            if not self._listening:
                continue
            try:  # check first: rank 0 may not have written its first beat yet (that counts as no beat)
                value = self._store.get(HEARTBEAT_KEY) if self._store.check([HEARTBEAT_KEY]) else None
            except Exception as exc:  # noqa: BLE001
                if self._listening and not self._stop.is_set():
                    die(f"lost contact with rank 0 (its store does not answer: {_first_line(exc)}); stopping")
                continue
            if value != self._seen:
                self._seen, self._seen_at = value, time.monotonic()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
