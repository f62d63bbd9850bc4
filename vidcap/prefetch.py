"""Read frames ahead of the model in separate processes and hand them over in input order.

Why processes: a decoder can segfault or hang on a bad file, and decoding holds the GIL in parts; a
worker process that dies takes only the item it held (which becomes an error row) and is replaced.
Why shared memory: passing 3 x 720p frames by pickling through a queue cost ~11x a shared-memory ring.

Design. The parent (the consumer's process) owns everything that must be cleaned up: a ring of `ahead`
shared-memory slots, created, grown and unlinked only by the parent, so a worker killed with -9 leaves
nothing behind. Item i always uses slot i % ahead, and is dispatched only once item i - ahead has been
taken, so at most `ahead` items are read ahead and no slot is written while it is still being read.
Workers get their tasks through their own pipe (no lock shared with a process that may die), in order,
and say "start" before each item, so the parent knows exactly which item a dead worker held. A slot
smaller than an item's frames is grown by the parent when it sees the item (that item travels pickled,
once); slots start at the size of K frames of 1080p, or of a 2:1 frame at the resize, and cost memory
only as far as they are written. Where /dev/shm is small (Docker's 64 MiB) items travel pickled rather
than risk a SIGBUS. The consumer gets copies of the frames, valid however long it keeps them.

Closing (idempotent, also at exit of the `with` block, from a SIGTERM handler, or at interpreter exit)
kills the workers and unlinks every segment. Workers ignore SIGINT and SIGTERM (the parent decides when
they end, so a Ctrl-C or a scancel does not turn items in flight into false "reader died" errors), and
exit on their own when the parent is gone. If only the parent is killed with -9, Python's resource
tracker unlinks the segments once the workers have gone; if the whole process tree is (Slurm's final
SIGKILL, an OOM kill of the cgroup), nothing survives to do it, so every new Prefetcher first unlinks
the segments of owners that no longer exist (names carry the owner's pid and pid namespace).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import secrets
import signal
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from vidcap.frames import DEFAULT_MAX_PIXELS, FrameError, FrameSet, read_frames

#: How many workers may die in a row between items before the prefetcher gives up (a broken environment,
#: not a bad file: restarting forever would spin).
MAX_IDLE_DEATHS = 3

Reader = Callable[..., FrameSet]


@dataclass
class Item:
    """One input, in input order: its frames, or the reason it has none (exactly one of the two is set).

    `seconds` is the time the reader spent on it.
    """

    index: int
    path: str
    frames: FrameSet | None
    error: str
    seconds: float = 0.0


@dataclass(eq=False)
class _Slot:
    shm: SharedMemory | None = None
    generation: int = 0


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    tasks: deque[int] = field(default_factory=deque)  # items sent and not answered, in order
    current: int | None = None  # item it said it started
    started: float = 0.0


class Prefetcher:
    """Reads `paths` ahead of the consumer in `workers` processes; iterate for `Item`s in input order.

    `workers=0` reads inline in the calling process (no prefetch). `reader` is called as
    `reader(path, num_frames, resize=..., backend=..., max_pixels=...)` and must be importable by name
    (the workers are spawned). An item whose reader process dies, or runs longer than `item_timeout`
    seconds, becomes an error and a new process takes over. On SIGTERM, a handler that raises SystemExit
    lets the `with` block close it; one that only calls close() makes a waiting consumer get RuntimeError.
    """

    def __init__(self, paths: Sequence[str], num_frames: int, resize: int | None = None, backend: str = "pyav",
                 ahead: int = 8, workers: int = 1, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 reader: Reader = read_frames, item_timeout: float | None = 600.0) -> None:
        if ahead < 1 or workers < 0:
            raise ValueError("ahead must be >= 1 and workers >= 0")
        self.paths = [str(p) for p in paths]
        self.options = dict(num_frames=num_frames, resize=resize, backend=backend, max_pixels=max_pixels)
        self.reader = reader
        self.ahead = ahead
        self.item_timeout = item_timeout
        self.wait_seconds = 0.0  # time the consumer spent waiting for frames
        self._closed = False
        self._next_take = 0
        self._next_send = 0
        self._results: dict[int, tuple] = {}
        self._idle_deaths = 0
        _sweep_stale_segments()
        self._prefix = f"{segment_prefix()}{secrets.token_hex(3)}"
        self._slots = [_Slot() for _ in range(ahead)]
        # Slots are sized for what is likely (pages are only used once written), so items do not start
        # out pickled: a pickled item blocks its worker until the consumer comes back for it.
        self._expected_bytes = num_frames * 3 * (resize * resize * 2 if resize else 1920 * 1080)
        self._workers: list[_Worker] = []
        self._context = mp.get_context("spawn")  # no fork: the parent may hold torch threads and CUDA
        self._finalizer = weakref.finalize(self, _cleanup, self._workers, self._slots)
        for _ in range(workers if self.paths else 0):
            self._workers.append(self._start_worker())
        if self._workers:
            self._send_ready()  # reading starts now, while the consumer gets ready (loads its model)

    # -- consumer side -------------------------------------------------------------------------------

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Item]:
        while self._next_take < len(self.paths) and not self._closed:
            if self._workers:
                yield self._take()
            else:
                yield self._read_inline()

    def batches(self, batch_size: int) -> Iterator[list[Item]]:
        """Items in input order, `batch_size` at a time (the last batch may be shorter)."""
        batch: list[Item] = []
        for item in self:
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        """Stop the workers and unlink every shared-memory segment; safe to call more than once."""
        self._closed = True
        self._finalizer()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring, and for tests that kill one)."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def _read_inline(self) -> Item:
        index = self._next_take
        self._next_take += 1
        kind, _, payload, seconds = _read_one(self.reader, self.paths[index], self.options)
        if kind == "error":
            return Item(index, self.paths[index], None, payload, seconds)
        return Item(index, self.paths[index], payload, "", seconds)

    def _take(self) -> Item:
        index = self._next_take
        self._send_ready()
        began = time.perf_counter()
        while index not in self._results:
            if self._closed:  # close() ran in a signal handler while we waited on the workers
                raise RuntimeError("prefetcher closed while waiting for frames")
            try:
                self._pump()
            except (OSError, ValueError):
                if not self._closed:
                    raise
        self.wait_seconds += time.perf_counter() - began
        kind, *rest = self._results.pop(index)
        path = self.paths[index]
        self._next_take += 1
        if kind == "error":
            reason, seconds = rest
            item = Item(index, path, None, reason, seconds)
        elif kind == "pickled":
            frameset, frames, seconds, _ = rest
            frameset.frames = frames
            item = Item(index, path, frameset, "", seconds)
        else:
            frameset, shapes, seconds = rest
            frameset.frames = self._copy_out(self._slots[index % self.ahead], shapes)
            item = Item(index, path, frameset, "", seconds)
        self._send_ready()
        return item

    @staticmethod
    def _copy_out(slot: _Slot, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        assert slot.shm is not None
        frames, offset = [], 0
        for shape in shapes:
            view = np.ndarray(shape, np.uint8, buffer=slot.shm.buf, offset=offset)
            frames.append(view.copy())
            offset += view.nbytes
            del view  # no view may outlive the segment's mapping
        return frames

    # -- dispatch and supervision ----------------------------------------------------------------------

    def _send_ready(self) -> None:
        """Send every item allowed by the bound (at most `ahead` beyond the consumer) to its worker."""
        while self._next_send < len(self.paths) and self._next_send < self._next_take + self.ahead:
            index = self._next_send
            self._next_send += 1
            self._send(self._workers[index % len(self._workers)], index)

    def _send(self, worker: _Worker, index: int) -> None:
        slot = self._slots[index % self.ahead]
        if slot.shm is None and slot.generation == 0:
            self._grow(index % self.ahead, self._expected_bytes)
        name, size = (slot.shm.name, slot.shm.size) if slot.shm is not None else ("", 0)
        worker.tasks.append(index)
        try:
            worker.conn.send(("read", index, self.paths[index], name, size))
        except OSError:
            pass  # the worker is dead; _pump notices and hands its tasks to a new one

    def _pump(self) -> None:
        """Wait for the next message or death of any worker, and act on it."""
        timeout = self._timeout_left()
        conns = {w.conn: w for w in self._workers}
        sentinels = {w.process.sentinel: w for w in self._workers}
        for ready in wait(list(conns) + list(sentinels), timeout):
            worker = conns.get(ready) or sentinels.get(ready)
            if worker is None or worker not in self._workers:
                continue  # already replaced in this round
            if ready in conns:
                try:
                    self._handle(worker, worker.conn.recv())
                    continue
                except (EOFError, OSError, pickle.UnpicklingError):
                    pass  # it died, maybe in the middle of a message
            self._replace(worker, reason=None)
        for worker in list(self._workers):
            if (worker.current is not None and self.item_timeout is not None
                    and time.monotonic() - worker.started > self.item_timeout):
                self._replace(worker, reason=f"timed out after {self.item_timeout:g} s")

    def _timeout_left(self) -> float | None:
        if self.item_timeout is None:
            return None
        starts = [w.started for w in self._workers if w.current is not None]
        return max(0.0, min(starts) + self.item_timeout - time.monotonic()) + 0.01 if starts else 1.0

    def _handle(self, worker: _Worker, message: tuple) -> None:
        kind, index = message[0], message[1]
        if kind == "start":
            worker.current, worker.started = index, time.monotonic()
            self._idle_deaths = 0
            return
        worker.tasks.popleft()
        worker.current = None
        self._results[index] = (kind, *message[2:])
        if kind == "pickled":
            self._grow(index % self.ahead, need=message[5])

    def _grow(self, number: int, need: int) -> None:
        """Give slot `number` room for `need` bytes (+25%, whole MiB) where /dev/shm has room for it."""
        size = -(-need * 5 // 4 // 2**20) * 2**20
        slot = self._slots[number]
        slot.generation += 1
        ours = sum(s.shm.size for s in self._slots if s.shm is not None)
        if not _shm_has_room(ours - (slot.shm.size if slot.shm else 0) + size, ours):
            return  # keep passing this slot's items pickled rather than risk a SIGBUS in a worker
        _unlink(slot)
        slot.shm = SharedMemory(name=f"{self._prefix}-{number}-{slot.generation}", create=True, size=size)

    def _replace(self, worker: _Worker, reason: str | None) -> None:
        """Swap a dead (or hung) worker for a new one; the item it held becomes an error, the rest go on."""
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5)
        # answers it sent before dying are still in the pipe
        try:
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv())
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        worker.conn.close()
        tasks = list(worker.tasks)
        if worker.current is not None:
            tasks.remove(worker.current)
            why = reason or f"reader process died ({_exit_reason(worker.process.exitcode)})"
            self._results[worker.current] = ("error", why, time.monotonic() - worker.started)
        elif reason is None:
            self._idle_deaths += 1
            if self._idle_deaths > MAX_IDLE_DEATHS:
                raise RuntimeError(f"prefetch workers keep dying between items "
                                   f"({_exit_reason(worker.process.exitcode)}); see their stderr")
        fresh = self._start_worker()
        self._workers[self._workers.index(worker)] = fresh
        for index in tasks:
            self._send(fresh, index)

    def _start_worker(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(child, self.reader, self.options),
                                        name="vidcap-prefetch", daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def segment_prefix(pid: int | None = None) -> str:
    """How the names of the shared-memory segments of the Prefetchers of process `pid` (default: this
    one) begin; then come a random token, the slot and its generation."""
    return f"vidcap-{_pid_namespace() or 0}-{pid or os.getpid()}-"


def _sweep_stale_segments() -> None:
    """Unlink segments whose owner no longer exists (same pid namespace only: elsewhere we cannot tell)."""
    namespace = _pid_namespace()
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if namespace is None or len(parts) != 6 or parts[0] != "vidcap" or parts[1] != str(namespace):
            continue
        try:
            os.kill(int(parts[2]), 0)
            continue  # alive (or its pid was reused: leave it, to be safe)
        except ProcessLookupError:
            pass
        except (PermissionError, ValueError):
            continue
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except OSError:
            pass


def _cleanup(workers: list[_Worker], slots: list[_Slot]) -> None:
    """Kill the workers first (none may attach a segment after it is unlinked), then unlink the slots."""
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
    for worker in workers:
        worker.process.join(5)
        worker.conn.close()
    workers.clear()
    for slot in slots:
        _unlink(slot)


def _unlink(slot: _Slot) -> None:
    if slot.shm is None:
        return
    try:
        slot.shm.close()
    except BufferError:
        pass  # a view is alive (close() ran inside a signal handler mid-copy); unlinking is what matters
    try:
        slot.shm.unlink()
    except FileNotFoundError:
        pass
    slot.shm = None


def _shm_has_room(total: int, ours: int) -> bool:
    """Whether our slots may hold `total` bytes: at most half of what /dev/shm leaves us (its free space
    plus what our slots, `ours` bytes, may already occupy; they are sparse, so every byte counts)."""
    try:
        info = os.statvfs("/dev/shm")
    except OSError:
        return True  # no /dev/shm to ask (not Linux): let the system decide
    return total <= (info.f_bavail * info.f_frsize + ours) // 2


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# -- worker side --------------------------------------------------------------------------------------

def _read_one(reader: Reader, path: str, options: dict) -> tuple[str, int, Any, float]:
    """("ok", 0, FrameSet, seconds) or ("error", 0, reason, seconds); never raises for a bad file."""
    began = time.perf_counter()
    try:
        frameset = reader(path, **options)
        return "ok", 0, frameset, time.perf_counter() - began
    except FrameError as exc:
        return "error", 0, exc.reason, time.perf_counter() - began
    except Exception as exc:  # a reader bug or an odd file must cost one row, not the whole shard
        reason = " ".join(f"reader failed: {type(exc).__name__}: {exc}".split())[:300]
        return "error", 0, reason, time.perf_counter() - began


def _worker_main(conn: Connection, reader: Reader, options: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import vidcap.frames.pyav_reader  # noqa: F401  load FFmpeg now, so the first item's time is its own
    attached: dict[str, SharedMemory] = {}
    try:
        while True:
            try:
                _, index, path, name, size = conn.recv()
            except EOFError:
                return  # the parent is gone or closed us
            conn.send(("start", index))
            kind, _, payload, seconds = _read_one(reader, path, options)
            if kind == "error":
                conn.send(("error", index, payload, seconds))
                continue
            need = payload.nbytes
            frames, payload.frames = payload.frames, []
            if name and need <= size:
                _write(_attach(attached, name), frames)
                conn.send(("shm", index, payload, [frame.shape for frame in frames], seconds))
            else:
                conn.send(("pickled", index, payload, frames, seconds, need))
    except (BrokenPipeError, ConnectionResetError):
        return  # the parent is gone
    finally:
        for shm in attached.values():
            shm.close()


def _attach(attached: dict[str, SharedMemory], name: str) -> SharedMemory:
    """The segment `name`, mapped once; segments of the same slot replaced by a bigger one are dropped."""
    if name not in attached:
        slot_prefix = name.rsplit("-", 1)[0] + "-"
        for old in [n for n in attached if n.startswith(slot_prefix)]:
            attached.pop(old).close()
        attached[name] = SharedMemory(name=name)
    return attached[name]


def _write(shm: SharedMemory, frames: list[np.ndarray]) -> None:
    offset = 0
    for frame in frames:
        view = np.ndarray(frame.shape, np.uint8, buffer=shm.buf, offset=offset)
        view[...] = frame
        offset += frame.nbytes
        del view
