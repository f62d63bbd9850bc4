"""A shard's attempts journal (`RUN/attempts/shard-N.jsonl`): one line when a billed request is about to leave,
one when it ended.

A result row records the tokens and cost of the answer it came from, but only once its batch is written: a
task killed (kill -9, a node lost) while a batch was in flight loses the rows of answers the provider has
already billed. So every request is written down BEFORE it is sent (`sent`), and its end after (`ended`,
with the tokens billed, zero for an error without usage). A line is one O_APPEND write of a whole line, which
a kill -9 of the writer does not undo (the kernel holds it), so after any kill the journal says how many
requests were sent whose answer no one read: possibly billed, and shown as such by `vidcap status`.

The worker opens the journal and hands it to the engine as an `AttemptLog` (vidcap.engines.base): the engine
knows nothing of the file. The file is made on the first line, so an engine that bills nothing leaves none.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from types import TracebackType


class AttemptJournal:
    """Append-only journal of one shard's requests, shared by every task that ever ran the shard."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1  # opened at the first line
        self._tag = f"{os.getpid()}.{os.urandom(4).hex()}"  # ids unique across tasks and reruns
        self._ids = itertools.count()

    def sent(self, key: str, attempt: int) -> str:
        """Written before the request leaves; returns the id `ended` takes."""
        ident = f"{self._tag}.{next(self._ids)}"
        self._write({"id": ident, "key": key, "attempt": attempt})
        return ident

    def ended(self, ident: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """The request ended (an answer, an error, a timeout): the tokens it was billed, as the answer said."""
        self._write({"id": ident, "ended": True, "prompt_tokens": prompt_tokens,
                     "completion_tokens": completion_tokens})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "AttemptJournal":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _write(self, record: dict[str, object]) -> None:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())


def read_journal(path: Path) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(ended records, requests sent that never ended: their answer unknown, possibly billed). A torn last
    line (a write cut by a crash of the machine, not of the process) is skipped."""
    sent: dict[str, dict[str, object]] = {}
    ended: list[dict[str, object]] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("ended"):
            start = sent.pop(str(record["id"]), None)
            if start is not None:
                ended.append({**start, **record})
        else:
            sent[str(record["id"])] = record
    return ended, list(sent.values())
