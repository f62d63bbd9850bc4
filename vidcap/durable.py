"""Atomic, durable file writes: the one way vidcap replaces a file that a reader or a rerun may trust.

One policy everywhere: write a temporary file beside the target (a name no other writer uses), fsync it,
rename it over the target, fsync the folder. A reader sees the old file or the whole new one, never half
of one; after the call returns the new file survives a kill of the process or a power loss of the node;
a failure removes the temporary file. Many files at once (a split into 100,000 shards) use `Batch`: the
same steps, with the fsyncs of all files issued together at the end rather than one disk round trip each.
"""

from __future__ import annotations

import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

#: threads that issue the fsyncs of a Batch at once (fsync releases the GIL; the disk queues them)
SYNC_THREADS = 16


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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


class Batch:
    """Many atomic writes made durable together: `path(target)` gives a temporary path to write; `commit()`
    fsyncs every file (in parallel), renames each over its target and fsyncs their folders. Nothing is
    renamed if a write failed: `abort()` (or leaving the `with` block on an error) removes the temporaries."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, target: str | os.PathLike[str]) -> Path:
        target = Path(target)
        tmp = temporary_name(target)
        self._pending.append((tmp, target))
        return tmp

    def commit(self) -> None:
        with ThreadPoolExecutor(SYNC_THREADS) as pool:
            list(pool.map(fsync_file, [tmp for tmp, _ in self._pending]))
        folders = set()
        for tmp, target in self._pending:
            os.replace(tmp, target)
            folders.add(target.parent)
        self._pending = []
        for folder in folders:
            fsync_dir(folder)

    def abort(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending = []

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()
