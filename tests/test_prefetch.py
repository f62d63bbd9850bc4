"""vidcap.prefetch: items come in input order with their frames or their error, reading runs at most
`ahead` items in front of the consumer, a reader process that dies or hangs costs exactly the item it
held, and nothing is left in /dev/shm after close, SIGTERM, or a kill -9 of the owner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vidcap.frames import FrameError, read_frames
from vidcap.prefetch import Item, Prefetcher, segment_prefix
from vidcap.fixtures.synth import frame_signature, make_broken, make_image, make_video

pytestmark = pytest.mark.timeout(90)


def marking_reader(path: str, num_frames: int, **options):
    """read_frames, after leaving PATH.started; a path naming "crash" segfaults, "slow" hangs."""
    Path(path + ".started").touch()
    name = Path(path).name
    if "crash" in name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "slow" in name:
        time.sleep(120)
    return read_frames(path, num_frames, **options)


def segments(pid: int | None = None) -> list[str]:
    prefix = segment_prefix(pid)
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(prefix))


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefetch")
    return [make_video(root / f"v{seed}.mp4", seconds=1.0, width=160, height=120, seed=seed) for seed in range(6)]


@pytest.fixture()
def mixed(tmp_path, videos):
    """Videos, an image and broken files, and what read_frames makes of each."""
    paths = [str(videos[0]), str(make_image(tmp_path / "i.png", 96, 64, seed=40)),
             str(make_broken(tmp_path / "gone.mp4", "missing")), str(videos[1]),
             str(make_broken(tmp_path / "t.mp4", "text")), str(videos[2]),
             str(make_broken(tmp_path / "cut.mp4", "truncated")), str(videos[3])]
    expected = []
    for path in paths:
        try:
            expected.append(read_frames(path, 3, resize=64))
        except FrameError as exc:
            expected.append(exc.reason)
    return paths, expected


def check(items: list[Item], paths: list[str], expected: list) -> None:
    assert [item.index for item in items] == list(range(len(paths)))
    assert [item.path for item in items] == paths
    for item, want in zip(items, expected):
        assert (item.frames is None) != (item.error == "")
        if isinstance(want, str):
            assert item.error == want
        else:
            assert item.frames.indices == want.indices and item.frames.is_video == want.is_video
            assert len(item.frames.frames) == len(want.frames)
            assert all(np.array_equal(a, b) for a, b in zip(item.frames.frames, want.frames))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_items_in_input_order_with_frames_or_error(mixed, workers):
    paths, expected = mixed
    with Prefetcher(paths, 3, resize=64, ahead=3, workers=workers) as prefetcher:
        items = list(prefetcher)
    check(items, paths, expected)
    assert segments() == []


def test_batches(mixed):
    paths, expected = mixed
    with Prefetcher(paths[:7], 3, resize=64, ahead=2) as prefetcher:
        batches = list(prefetcher.batches(3))
    assert [len(b) for b in batches] == [3, 3, 1]
    check([item for batch in batches for item in batch], paths[:7], expected[:7])


def test_frames_stay_valid_after_the_ring_moves_on(videos):
    """The consumer keeps every item while the 2-slot ring is reused 3 times over: copies, not views."""
    paths = [str(v) for v in videos]
    with Prefetcher(paths, 3, ahead=2) as prefetcher:
        kept = list(prefetcher)
        assert len(segments()) == 2  # the ring itself: one segment per slot
    assert segments() == []
    for seed, item in enumerate(kept):
        assert [frame_signature(f) for f in item.frames.frames] == [(seed, i) for i in item.frames.indices]
        assert all(f.flags.writeable for f in item.frames.frames)


def test_slot_grows_for_an_item_larger_than_expected(tmp_path):
    """Slots start at 3 frames' worth of 1080p (8 MiB for K=1); a 2000x1500 image needs 9 MB: it travels
    pickled once, its slot grows to 9 MB + 25% (generation 2), and the next ones use shared memory."""
    big = str(make_image(tmp_path / "big.bmp", width=2000, height=1500, seed=41))
    with Prefetcher([big] * 3, 1, ahead=1) as prefetcher:
        seen = []
        for item in prefetcher:
            assert frame_signature(item.frames.frames[0]) == (41, 0)
            seen += [(name.split("-")[4:], os.stat(f"/dev/shm/{name}").st_size) for name in segments()]
    assert seen == [(["0", "2"], 11 * 2**20)] * 3
    assert segments() == []


def test_without_room_in_dev_shm_items_travel_pickled(monkeypatch, videos):
    import vidcap.prefetch as prefetch

    monkeypatch.setattr(prefetch, "_shm_has_room", lambda total, ours: False)
    paths = [str(v) for v in videos]
    with Prefetcher(paths, 3, ahead=2) as prefetcher:
        items = list(prefetcher)
        assert segments() == []
    assert [frame_signature(item.frames.frames[0])[0] for item in items] == list(range(len(paths)))


def test_reads_ahead_but_no_more_than_ahead(tmp_path, videos):
    paths = []
    for number in range(8):
        path = tmp_path / f"clip{number}.mp4"
        path.write_bytes(videos[number % len(videos)].read_bytes())
        paths.append(str(path))
    started = lambda: sum(Path(p + ".started").exists() for p in paths)  # noqa: E731
    with Prefetcher(paths, 3, ahead=2, reader=marking_reader) as prefetcher:
        iterator = iter(prefetcher)
        next(iterator)
        assert wait_for(lambda: started() == 3, timeout=10)  # item 0 taken: items 1 and 2 read meanwhile
        time.sleep(0.5)
        assert started() == 3  # and not one more until the consumer takes the next
        next(iterator)
        assert wait_for(lambda: started() == 4, timeout=10)
        assert len(list(iterator)) == 6
    assert started() == 8


def test_reader_segfault_costs_only_its_item(tmp_path, videos):
    crash = tmp_path / "crash.mp4"
    crash.write_bytes(videos[0].read_bytes())
    paths = [str(videos[1]), str(crash), str(videos[2]), str(videos[3])]
    with Prefetcher(paths, 3, ahead=4, reader=marking_reader) as prefetcher:
        first_pid = prefetcher.worker_pids()
        items = list(prefetcher)
        assert prefetcher.worker_pids() != first_pid  # a new reader took over
    assert [item.error for item in items] == ["", "reader process died (SIGSEGV)", "", ""]
    assert [frame_signature(items[i].frames.frames[0])[0] for i in (0, 2, 3)] == [1, 2, 3]
    assert segments() == []


def test_reader_killed_by_sigkill_mid_item(tmp_path, videos):
    slow = tmp_path / "slow.mp4"
    slow.write_bytes(videos[0].read_bytes())
    paths = [str(videos[1]), str(slow), str(videos[2]), str(videos[3])]
    with Prefetcher(paths, 3, ahead=2, reader=marking_reader, item_timeout=None) as prefetcher:
        iterator = iter(prefetcher)
        assert next(iterator).error == ""
        assert wait_for(lambda: Path(str(slow) + ".started").exists())
        [pid] = prefetcher.worker_pids()
        os.kill(pid, signal.SIGKILL)
        rest = list(iterator)
        assert pid not in prefetcher.worker_pids()
    assert [item.error for item in rest] == ["reader process died (SIGKILL)", "", ""]
    assert [item.index for item in rest] == [1, 2, 3]
    assert segments() == []


def test_hung_reader_times_out(tmp_path, videos):
    slow = tmp_path / "slow.mp4"
    slow.write_bytes(videos[0].read_bytes())
    paths = [str(slow), str(videos[4]), str(videos[5])]
    began = time.monotonic()
    with Prefetcher(paths, 3, ahead=3, workers=2, reader=marking_reader, item_timeout=2.0) as prefetcher:
        items = list(prefetcher)
    assert time.monotonic() - began < 30
    assert [item.error for item in items] == ["timed out after 2 s", "", ""]
    assert segments() == []


def test_close_is_idempotent_and_ends_iteration(videos):
    prefetcher = Prefetcher([str(v) for v in videos], 3, ahead=2)
    iterator = iter(prefetcher)
    next(iterator)
    next(iterator)
    pids = prefetcher.worker_pids()
    prefetcher.close()
    prefetcher.close()
    assert list(iterator) == [] and list(prefetcher) == []
    assert segments() == [] and prefetcher.worker_pids() == []
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=5)


def test_close_from_a_signal_handler_while_waiting(tmp_path, videos):
    """A handler may close() while the consumer waits on a hung item: nothing left, a clear exception."""
    slow = tmp_path / "slow.mp4"
    slow.write_bytes(videos[0].read_bytes())
    prefetcher = Prefetcher([str(videos[1]), str(slow)], 3, ahead=2, reader=marking_reader, item_timeout=None)
    previous = signal.signal(signal.SIGUSR1, lambda *_: prefetcher.close())
    try:
        iterator = iter(prefetcher)
        next(iterator)
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        with pytest.raises(RuntimeError, match="closed"):
            next(iterator)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert segments() == [] and prefetcher.worker_pids() == []


OWNER = """
import json, os, signal, sys, time
from vidcap.prefetch import Prefetcher
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds the with-block, which closes
with Prefetcher(sys.argv[1:], 3, ahead=4, workers=2) as prefetcher:
    for item in prefetcher:
        assert not item.error, item.error
        if item.index == 4:
            print(json.dumps({"pid": os.getpid(), "workers": prefetcher.worker_pids()}), flush=True)
        time.sleep(0.2)  # a slow model: the ring stays full
"""


def start_owner(videos) -> tuple[subprocess.Popen, dict]:
    paths = [str(videos[i % len(videos)]) for i in range(200)]
    owner = subprocess.Popen([sys.executable, "-c", OWNER, *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)
    info = json.loads(owner.stdout.readline())
    assert segments(info["pid"]), "the ring should be in use"
    return owner, info


def gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_sigterm_to_owner_cleans_up(videos):
    owner, info = start_owner(videos)
    owner.send_signal(signal.SIGTERM)
    assert owner.wait(timeout=30) == 143, owner.stderr.read()
    assert segments(info["pid"]) == []
    assert wait_for(lambda: gone(info["workers"]), timeout=10)


def test_kill_9_of_owner_leaves_nothing_behind(videos):
    """No handler can run: the workers see their pipe close and exit, and the resource tracker unlinks."""
    owner, info = start_owner(videos)
    owner.kill()
    owner.wait(timeout=30)
    assert wait_for(lambda: gone(info["workers"]), timeout=30)
    assert wait_for(lambda: segments(info["pid"]) == [], timeout=30)


def test_kill_9_of_the_whole_process_tree_is_swept_by_the_next_prefetcher(videos):
    """Slurm's last word is SIGKILL to every process of the job, resource tracker included: nothing is
    left to unlink. The next Prefetcher on the node unlinks what dead owners left, and only that."""
    owner, info = start_owner(videos)
    os.killpg(owner.pid, signal.SIGKILL)
    owner.wait(timeout=30)
    assert wait_for(lambda: gone(info["workers"]), timeout=30)
    # Left behind, unless a Prefetcher of another process on this machine has swept them already.
    time.sleep(1.0)
    with Prefetcher([str(videos[0])], 3, workers=0):
        pass
    assert segments(info["pid"]) == []


def test_sweep_spares_live_owners_and_takes_dead_ones():
    from multiprocessing import resource_tracker
    from multiprocessing.shared_memory import SharedMemory

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    made = []
    for pid in (int(dead), os.getpid()):
        shm = SharedMemory(name=f"{segment_prefix(pid)}0000aa-0-1", create=True, size=4096)
        resource_tracker.unregister(shm._name, "shared_memory")  # this test unlinks what it made itself
        shm.close()
        made.append(shm.name)
    try:
        with Prefetcher([], 3):
            pass
        assert not Path(f"/dev/shm/{made[0]}").exists()  # owner gone: swept
        assert Path(f"/dev/shm/{made[1]}").exists()  # owner alive: kept
    finally:
        for name in made:
            Path(f"/dev/shm/{name}").unlink(missing_ok=True)
