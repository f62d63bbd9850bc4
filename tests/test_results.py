"""The result store survives SIGKILL at any instant: what reads back is an exact prefix of the commits."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from vidcap.results import ResultWriter, ShardBusy, read_results, result_rows
from vidcap.run import RunDir

WRITER = r"""
import random, sys
from vidcap.results import ResultWriter, result_rows
from vidcap.run import RunDir
from test_results import batch_rows
run, session = RunDir.at(sys.argv[1]), int(sys.argv[2])
with ResultWriter(run, 0) as writer:
    for i in range(10_000):
        writer.append(result_rows(batch_rows(session, i)))
        print(i, flush=True)
        if i % 5 == 4:
            writer.compact()
"""


def batch_rows(session: int, batch: int) -> list[dict]:
    """Deterministic rows of one batch, so the parent can rebuild what the killed child committed."""
    rng = random.Random(session * 100_003 + batch)
    return [
        {
            "key": f"s{session}-b{batch}-r{j}",
            "text": "caption " * rng.randint(0, 400),
            "status": rng.choice(["ok", "ok", "error"]),
            "error": "",
            "seconds": rng.random(),
            "generated_tokens": rng.randint(0, 500),
        }
        for j in range(rng.randint(1, 40))
    ]


@pytest.mark.timeout(300)
def test_sigkill_at_random_moments_leaves_an_exact_prefix(tmp_path):
    run = RunDir.at(tmp_path / "run")
    expected: list[dict] = []
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]))
    sessions = 30
    for session in range(sessions):
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(run.root), str(session)],
                                 stdout=subprocess.PIPE, text=True, env=env)
        acked = -1
        if session % 3:  # also kill some while the child is still importing or opening
            acked = int(child.stdout.readline())
        time.sleep(rng.uniform(0, 0.25))
        child.send_signal(signal.SIGKILL)
        for line in child.stdout.read().split():
            acked = int(line)
        child.wait()

        got = read_results(run, 0)
        committed = got.num_rows - len(expected)
        # every acknowledged batch is there, and at most the one in flight besides
        acked_rows = [r for b in range(acked + 1) for r in batch_rows(session, b)]
        in_flight = batch_rows(session, acked + 1)
        assert committed in (len(acked_rows), len(acked_rows) + len(in_flight)), f"session {session}"
        expected.extend(acked_rows if committed == len(acked_rows) else acked_rows + in_flight)
        table = got.to_pylist()
        assert [r["key"] for r in table] == [r["key"] for r in expected]
        assert [r["text"] for r in table] == [r["text"] for r in expected]
        assert len({r["key"] for r in table}) == len(table)  # never a row twice
    assert len(expected) > 100
    leftovers = [p.name for p in run.results_dir.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) <= 1  # at most the one compaction a kill interrupted; never read


def test_one_writer_per_shard_and_append_after_compaction(tmp_path):
    run = RunDir.at(tmp_path)
    with ResultWriter(run, 3) as writer:
        writer.append(result_rows([{"key": "a", "status": "ok", "text": "x"}]))
        with pytest.raises(ShardBusy, match=f"shard 3 of {tmp_path} is being written by another process .pid {os.getpid()}"):
            ResultWriter(run, 3)
        writer.compact()
        writer.append(result_rows([{"key": "b", "status": "error", "error": "truncated", "cost_usd": 0.5}]))
    with ResultWriter(run, 3) as writer:  # the lock died with the first writer
        writer.append(result_rows([{"key": "c", "status": "ok"}]))
    table = read_results(run, 3)
    assert table.column("key").to_pylist() == ["a", "b", "c"]
    assert table.column("cost_usd").to_pylist() == [None, 0.5, None]
    assert read_results(run, 4).num_rows == 0


def test_torn_tail_is_ignored_and_next_session_continues(tmp_path):
    run = RunDir.at(tmp_path)
    with ResultWriter(run, 0) as writer:
        writer.append(result_rows([{"key": "a", "status": "ok"}]))
        writer.append(result_rows([{"key": "b", "status": "ok"}]))
        segment = writer._path
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a kill in the middle of the second record
    assert read_results(run, 0).column("key").to_pylist() == ["a"]
    with ResultWriter(run, 0) as writer:
        writer.append(result_rows([{"key": "b", "status": "ok"}]))
    assert read_results(run, 0).column("key").to_pylist() == ["a", "b"]
    flipped = bytearray(segment.read_bytes())
    flipped[30] ^= 0xFF  # a flipped bit in the first record: the checksum refuses it and what follows
    segment.write_bytes(bytes(flipped))
    assert read_results(run, 0).column("key").to_pylist() == ["b"]


CHURN = r"""
import sys
from vidcap.results import ResultWriter, result_rows
from vidcap.run import RunDir
run, batches = RunDir.at(sys.argv[1]), int(sys.argv[2])
for session in range(batches // 20):  # new writer sessions too: segments appear and empty ones vanish
    with ResultWriter(run, 0) as writer:
        for i in range(20):
            writer.append(result_rows([{"key": f"s{session}-{i}-{j}", "status": "ok"} for j in range(2)]))
            if i % 2:
                writer.compact()
"""


@pytest.mark.timeout(120)
def test_reads_racing_appends_and_compactions_never_lose_rows(tmp_path):
    """`status`, `merge` and `resume` read while shards run: a read in a tight loop beside a writer that
    appends and compacts all the time (deleting the segments and older compactions the reader listed)
    never sees fewer rows than a read before it, never raises, and ends with every row once."""
    run = RunDir.at(tmp_path / "run")
    batches = 400
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    writer = subprocess.Popen([sys.executable, "-c", CHURN, str(run.root), str(batches)], env=env)
    seen, reads = 0, 0
    try:
        while writer.poll() is None:
            n = read_results(run, 0).num_rows
            assert n >= seen, f"a read got {n} rows after one that got {seen}"
            seen, reads = n, reads + 1
    finally:
        writer.kill()
    assert writer.wait() == 0
    keys = read_results(run, 0).column("key").to_pylist()
    assert len(keys) == 2 * batches == len(set(keys))
    assert reads > 50, "the reader hardly ran beside the writer"
