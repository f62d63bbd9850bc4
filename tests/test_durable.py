"""The flusher that writes a large output to disk while it is still being written (vidcap/durable.py)."""

from __future__ import annotations

import os
import threading
import time

from vidcap import durable
from vidcap.durable import flushed_as_written


def _synced(monkeypatch):
    """Sizes of the file each time the flusher asked for its data to go to disk."""
    sizes, real = [], os.fdatasync

    def fdatasync(fd):
        sizes.append(os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(durable.os, "fdatasync", fdatasync)
    return sizes


def test_a_growing_file_is_flushed_each_time_it_grows_by_the_step_and_the_thread_ends(tmp_path, monkeypatch):
    """The file need not exist when the block starts; once it has grown by `every` bytes since the last flush
    its data is flushed, not before; the flusher thread is gone when the block ends."""
    sizes = _synced(monkeypatch)
    path = tmp_path / "out.csv"
    with flushed_as_written(path, every=10_000, poll=0.005):
        time.sleep(0.05)  # not created yet: nothing to do
        with open(path, "wb") as f:
            for _ in range(6):
                f.write(b"x" * 4_000)
                f.flush()
                time.sleep(0.05)
    assert sizes and all(b - a >= 10_000 for a, b in zip([0] + sizes, sizes))
    assert sizes[-1] <= 24_000
    assert not [t for t in threading.enumerate() if t.name == "vidcap-flush"]


def test_a_small_file_is_never_flushed_early_and_a_failing_flush_is_not_an_error(tmp_path, monkeypatch):
    """Below the step nothing is flushed (atomic_path's fsync does it at the end); a flush that fails (a
    file system without fdatasync) is only a missed head start, not an error in the block."""
    sizes = _synced(monkeypatch)
    path = tmp_path / "small.csv"
    with flushed_as_written(path, every=1 << 20, poll=0.005):
        path.write_bytes(b"y" * 1000)
        time.sleep(0.05)
    assert sizes == []

    def broken(fd):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(durable.os, "fdatasync", broken)
    with flushed_as_written(path, every=10, poll=0.005):
        path.write_bytes(b"z" * 1000)
        time.sleep(0.05)
    assert path.read_bytes() == b"z" * 1000
