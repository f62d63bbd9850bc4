"""One worker of the local pool (`vidcap.scheduler.workers`): load the model once, then caption the shards the
pool hands out, one claim at a time, until it has none left.

The worker process (`python -c COMMAND RUN`) runs what the local executor runs in its own process
(`placement.run_here`) over `Claims`, an iterable that asks the pool for the next shard each time the
previous one is over. Nothing here knows about
models or tensor parallelism: with `--tp-size N` the local executor starts N ranks on this worker's devices
and rank 0 makes its own `Claims` from the same environment.

The pool is a Unix socket named by $VIDCAP_POOL; $VIDCAP_POOL_WORKER names this worker. The protocol is one
JSON line each way: `{"op": "claim", "worker": W, "pid": P}` gets `{"shard": I}` or `{"shard": null}` (no
more, or the pool is stopping). Asking for the next shard means the previous one is over: `run_shards`
goes on only after a shard finished. A pool that is gone answers nothing: the worker takes that as "no
more", and a thread watching the parent stops the worker after its batch in flight.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Iterator

from vidcap.errors import UserError

POOL_ENV = "VIDCAP_POOL"
WORKER_ENV = "VIDCAP_POOL_WORKER"
PARENT_POLL_S = 1.0


class Claims:
    """Shard indices handed out by the pool, one per iteration (an iterable `run_shards` accepts)."""

    def __init__(self, address: str, worker: str) -> None:
        self.address = address
        self.worker = worker
        self._sock: socket.socket | None = None
        self._reader = None
        self.claimed: list[int] = []

    @classmethod
    def from_env(cls) -> "Claims | None":
        address = os.environ.get(POOL_ENV)
        return cls(address, os.environ.get(WORKER_ENV, "?")) if address else None

    def _ask(self) -> int | None:
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.connect(self.address)
                self._reader = self._sock.makefile("r", encoding="utf-8")
            message = {"op": "claim", "worker": self.worker, "pid": os.getpid()}
            self._sock.sendall((json.dumps(message) + "\n").encode())
            line = self._reader.readline()  # type: ignore[union-attr]
        except OSError:
            return None  # the pool is gone: nothing more to take
        if not line:
            return None
        shard = json.loads(line).get("shard")
        return None if shard is None else int(shard)

    def __iter__(self) -> Iterator[int]:
        while (shard := self._ask()) is not None:
            self.claimed.append(shard)
            yield shard
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watch_parent() -> None:
    """When the pool dies (kill -9), this worker stops after its batch in flight, as on SIGTERM."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="watch-pool", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    from vidcap.run import RunDir
    from vidcap.scheduler.placement import run_here

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: pool_worker RUN (started by vidcap's local worker pool)", file=sys.stderr)
        return 2
    claims = Claims.from_env()
    if claims is None:
        print(f"${POOL_ENV} is not set: this process is started by vidcap's local worker pool", file=sys.stderr)
        return 2
    _watch_parent()
    try:
        outcomes = run_here(RunDir.at(args[0]), claims, progress=False)  # type: ignore[arg-type]
    except UserError as exc:
        print(f"vidcap worker {claims.worker}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"vidcap worker {claims.worker}: interrupted", file=sys.stderr)
        return 130
    stopped = [o.index for o in outcomes if not o.finished]
    done = len(outcomes) - len(stopped)
    print(f"vidcap worker {claims.worker}: {done} shard(s) finished"
          + (f", shard {stopped[0]} stopped early" if stopped else ""), file=sys.stderr)
    return 0


#: how the pool starts a worker: imported under its own name (run as __main__, this file's Claims would be
#: another class than the one the tensor-parallel launcher recognises)
COMMAND = "import sys; from vidcap.scheduler.pool_worker import main; sys.exit(main(sys.argv[1:]))"
