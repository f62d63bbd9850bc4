"""The API attempts journal: a request written down before it leaves stays "sent, answer unknown" when the
process is killed (kill -9) before it ends; one that ended carries the tokens it was billed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vidcap.attempts import AttemptJournal, read_journal

KILLED_MID_REQUEST = """
import os, signal, sys
from pathlib import Path
from vidcap.attempts import AttemptJournal
journal = AttemptJournal(Path(sys.argv[1]))
journal.ended(journal.sent("clip_000.mp4", 1), 170, 12)
journal.sent("clip_001.mp4", 1)  # in flight when the kill comes
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_request_in_flight_at_a_kill_stays_unknown(tmp_path: Path) -> None:
    path = tmp_path / "attempts" / "shard-00000.jsonl"
    done = subprocess.run([sys.executable, "-c", KILLED_MID_REQUEST, str(path)], timeout=60)
    assert done.returncode == -9
    ended, unknown = read_journal(path)
    assert [(r["key"], r["prompt_tokens"], r["completion_tokens"]) for r in ended] == [("clip_000.mp4", 170, 12)]
    assert [r["key"] for r in unknown] == ["clip_001.mp4"]
    rerun = AttemptJournal(path)  # a rerun appends to the same journal; its ids never collide
    rerun.ended(rerun.sent("clip_001.mp4", 1))
    rerun.close()
    ended, unknown = read_journal(path)
    assert len(ended) == 2 and [r["key"] for r in unknown] == ["clip_001.mp4"]
    with open(path, "a") as torn:
        torn.write('{"id": "x", "key"')  # a line cut by a machine crash is skipped
    assert len(read_journal(path)[0]) == 2
