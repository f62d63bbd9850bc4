"""Atomic, durable file writes: the one way vidcap replaces a file that a reader or a rerun may trust.

One policy everywhere: write a temporary file beside the target (a name no other writer uses), fsync it,
rename it over the target, fsync the folder. A reader sees the old file or the whole new one, never half
of one; after the call returns the new file survives a kill of the process or a power loss of the node;
a failure removes the temporary file. Many files at once (a split into 100,000 shards) use `Batch`: the
same steps, with the writes overlapping in threads and, for a large batch on Linux, one syncfs(2) of the
file system instead of one fsync per file (about 7x less time per file here: a disk round trip each).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

#: threads that write (and, for a small batch, fsync) the files of a Batch at once (both release the GIL)
SYNC_THREADS = 16
#: a Batch of at least this many files is made durable by one syncfs(2) rather than an fsync per file
SYNCFS_MIN_FILES = 256
#: a large output being written is flushed to disk each time it has grown by this many bytes
FLUSH_EVERY = 128 << 20


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@functools.cache
def _libc_syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not Linux (or no glibc): the caller fsyncs file by file
        return None


def syncfs(path: str | os.PathLike[str]) -> bool:
    """Write every dirty page and inode of the file system holding `path` to disk (Linux syncfs(2)); False
    where that call is missing or fails, so the caller falls back to fsyncing file by file."""
    call = _libc_syncfs()
    if call is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return call(fd) == 0
    finally:
        os.close(fd)


def temporary_name(path: str | os.PathLike[str]) -> Path:
    """A hidden name beside `path` that no other writer (process or thread) picks."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write the new content of `path` to; it replaces `path`, durably, when the block
    ends without an error, and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_dir(path.parent)


@contextmanager
def flushed_as_written(path: str | os.PathLike[str], every: int = FLUSH_EVERY, poll: float = 0.2) -> Iterator[None]:
    """While the block runs, a thread writes the pages of the file at `path` (written meanwhile by the block,
    created by it or not yet) to disk each time the file has grown by `every` bytes.

    Why: the fsync that makes a large output durable otherwise waits for every page the kernel has not yet
    written back (gigabytes: seconds at disk speed, after the work is done). Flushed as it grows, the output
    goes to disk while the rest of the work runs, ahead of scratch files that are deleted before they
    ever need to reach the disk."""
    stop = threading.Event()

    def flush() -> None:
        fd, synced = -1, 0
        try:
            while not stop.wait(poll):
                if fd < 0:
                    try:
                        fd = os.open(path, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                size = os.fstat(fd).st_size
                if size - synced >= every:
                    os.fdatasync(fd)
                    synced = size
        except OSError:
            pass  # only an early start of the fsync that atomic_path makes anyway (and reports)
        finally:
            if fd >= 0:
                os.close(fd)

    flusher = threading.Thread(target=flush, name="vidcap-flush", daemon=True)
    flusher.start()
    try:
        yield
    finally:
        stop.set()
        flusher.join()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


class Batch:
    """Many atomic writes made durable together (a split into 100,000 shards): `write(target, produce)` runs
    `produce()` (the file's bytes) and writes them to a temporary file in a pool of threads; `commit()` waits
    for all of them, makes them durable (one syncfs for SYNCFS_MIN_FILES or more, else an fsync each, in the
    pool), renames each over its target and fsyncs their folders. Nothing is renamed if one failed: leaving
    the `with` block on an error (or `abort()`) removes the temporaries."""

    def __init__(self, threads: int = SYNC_THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads)
        self._pending: list[tuple[str, str, Future[None]]] = []
        # one random tag for the whole batch (a syscall and pathlib objects per file were most of a 100k-shard
        # split's main thread): temporary names stay unique as long as the targets are
        self._tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._targets: set[str] = set()

    def write(self, target: str | os.PathLike[str], produce: Callable[[], bytes | memoryview]) -> None:
        target = os.fspath(target)
        if target in self._targets:
            raise ValueError(f"{target}: written twice in one batch")
        self._targets.add(target)
        folder, name = os.path.split(target)
        tmp = os.path.join(folder, f".{name}.{self._tag}.tmp")
        self._pending.append((tmp, target, self._pool.submit(_write_new, tmp, produce)))

    def commit(self) -> None:
        for _, _, future in self._pending:
            future.result()
        self._make_durable([tmp for tmp, _, _ in self._pending])  # data on disk before a rename names it
        folders = set()
        for tmp, target, _ in self._pending:
            os.replace(tmp, target)
            folders.add(os.path.dirname(target))
        self._pending = []
        for folder in folders:
            fsync_dir(folder)

    def _make_durable(self, temporaries: list[str]) -> None:
        """One syncfs for a large batch in one folder (one file system), else an fsync per file."""
        folders = {os.path.dirname(tmp) for tmp in temporaries}
        if len(temporaries) >= SYNCFS_MIN_FILES and len(folders) == 1 and syncfs(folders.pop()):
            return
        list(self._pool.map(fsync_file, temporaries))

    def abort(self) -> None:
        for tmp, _, future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)
        for tmp, _, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._pending = []

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if kind is None:
                self.commit()
            else:
                self.abort()
        except BaseException:
            self.abort()
            raise
        finally:
            self._pool.shutdown(wait=True)


def _write_new(path: str, produce: Callable[[], bytes | memoryview]) -> None:
    data = produce()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
