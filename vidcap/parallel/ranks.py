"""What every tensor-parallel rank runs: start together, load the shards of the model, then rank 0 drives
the shard worker and the others follow; all return rank 0's outcomes.

Stopping. Only rank 0's `stop` event counts: it is checked by `run_shard` between batches; when set, rank 0
finishes the batch in flight, writes it, returns its unfinished outcome and broadcasts it as "end"; every
rank returns that outcome, so under Slurm each rank's ShardTask sees the same `finished` (rank 0's submitit
handler requeues the job; the others' handlers do nothing, as submitit does for non-zero ranks). Followers
never act on a signal of their own.

Failure. Rank 0 failing (an exception anywhere, a user error such as a prompt too long) tells the followers
("abort", best effort, in a thread with a short join) and ends; a follower that is told ends with the same
reason. A rank that dies or hangs is caught by the others' watchdogs (`vidcap.parallel.watchdog`). Whatever
the failure, finished batches are in the results: a rerun continues from them.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Sequence

from vidcap.errors import UserError
from vidcap.parallel.env import Bounds, RankEnv
from vidcap.parallel.watchdog import EXIT_STALLED, Watchdog, die, set_rank_label
from vidcap.worker import ShardOutcome, run_shards


def serve(run_dir: str | Path, shards: Sequence[int], stop: threading.Event | None, env: RankEnv,
          progress: bool = False) -> list[ShardOutcome]:
    """Run `shards` of the run with this rank's part of the model; the same outcomes on every rank.

    Any failure ends the process through `die` (one line, `os._exit`): a rank must not linger in an
    interpreter shutdown that waits on a dead peer, and the launcher or Slurm reads the exit status."""
    set_rank_label(env.rank, env.world_size)
    env.export()
    bounds = Bounds.from_env()
    watchdog = Watchdog(env.rank, env.world_size, bounds).start()
    try:
        return _serve(Path(run_dir), list(shards), stop or threading.Event(), env, bounds, watchdog, progress)
    except UserError as exc:
        die(str(exc), code=UserError.exit_code)
    except _Aborted as exc:
        die(str(exc), code=exc.code)
    except BaseException as exc:  # noqa: BLE001 - a traceback for bugs, then the one-line reason
        if isinstance(exc, KeyboardInterrupt):
            die("interrupted", code=130)
        lost = peer_loss(exc)
        if lost:  # another rank died: its own line (or the launcher's) says why; no traceback here
            die(f"lost contact with another rank ({lost})", code=EXIT_STALLED)
        traceback.print_exc()
        die(_describe(exc), code=1)
    raise AssertionError("unreachable")


class _Aborted(Exception):
    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


def _serve(run_dir: Path, shards: list[int], stop: threading.Event, env: RankEnv, bounds: Bounds,
           watchdog: Watchdog, progress: bool) -> list[ShardOutcome]:
    from vidcap.run import RunDir
    from vidcap.tasks.spec import load_spec

    run = RunDir.at(run_dir)
    job = load_spec(run)
    if job.needs().ranks != env.world_size:
        raise UserError(f"this run was frozen with --tp-size {job.needs().ranks} but {env.world_size} ranks "
                        "were started")
    with watchdog.busy("start-up (rendezvous, model loading)", bounds.start):
        from vidcap.parallel.load import init_groups, load_rank_engine, rank_device
        from vidcap.parallel.tp_engine import Channel

        device = rank_device(job.engine_settings, env)
        groups = init_groups(env, device, bounds)
        watchdog.attach_heartbeat(env.master_addr, env.master_port)
        local = load_rank_engine(job.engine_settings, env, device, groups)
        channel = Channel(groups.control, env.rank, env.world_size)
    try:
        if env.leader:
            outcomes = _lead(run, shards, stop, job, local, channel, watchdog, bounds, progress)
        else:
            outcomes = _follow(local, channel, watchdog, bounds)
        _finish(groups, watchdog, bounds)
        return outcomes
    finally:
        local.close()


def _lead(run: Any, shards: list[int], stop: threading.Event, job: Any, local: Any, channel: Any,
          watchdog: Watchdog, bounds: Bounds, progress: bool) -> list[ShardOutcome]:
    from vidcap.parallel.tp_engine import TensorParallelEngine

    engine = TensorParallelEngine(local, channel, watchdog, bounds, job.engine_settings.tp_backend)
    outcomes: list[ShardOutcome] = []
    try:
        engine.open(job)
        outcomes = run_shards(run, shards, engine, stop, progress)
    except BaseException as exc:
        code = UserError.exit_code if isinstance(exc, UserError) else 130 if isinstance(exc, KeyboardInterrupt) \
            else 1
        if not peer_loss(exc):  # with a peer gone, telling the others would only fail the same way
            _abort_followers(channel, str(exc) if isinstance(exc, UserError) else _describe(exc), code)
        raise
    with watchdog.busy("telling the other ranks the shard is over", bounds.batch):
        channel.send("end", outcomes=outcomes)
    return outcomes


def _follow(local: Any, channel: Any, watchdog: Watchdog, bounds: Bounds) -> list[ShardOutcome]:
    from vidcap.parallel.tp_engine import RankAborted, follow

    try:
        return follow(local, channel, watchdog, bounds)
    except RankAborted as exc:
        raise _Aborted(f"rank 0 failed: {exc}", exc.code) from None
    except RuntimeError as exc:  # gloo: the connection to rank 0 closed
        raise _Aborted(f"lost contact with rank 0 ({peer_loss(exc) or _describe(exc)})", EXIT_STALLED) from None


def _abort_followers(channel: Any, reason: str, code: int) -> None:
    """Best effort: a follower stuck in the model's collectives never reads it (its watchdog ends it)."""
    def tell() -> None:
        try:
            channel.send("abort", reason=reason, code=code)
        except Exception:  # noqa: BLE001 - a follower already gone: its own watchdog or death says why
            pass

    thread = threading.Thread(target=tell, daemon=True)
    thread.start()
    thread.join(timeout=5)


def _finish(groups: Any, watchdog: Watchdog, bounds: Bounds) -> None:
    """Leave together: rank 0 keeps beating until every follower has stopped listening."""
    import torch.distributed as dist

    with watchdog.busy("leaving together", min(bounds.batch, 120.0)):
        dist.barrier(group=groups.control)
    watchdog.stop()
    try:
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - the work is done and written
        pass


#: how the collective backends word a peer that went away (gloo's tcp transport, c10d's store, NCCL)
_PEER_LOSS_MARKERS = ("gloo/transport", "Connection reset by peer", "Connection closed by peer", "Broken pipe",
                      "Connection refused", "ProcessGroupNCCL", "NCCL communicator was aborted")


def peer_loss(exc: BaseException) -> str | None:
    """The short reason when `exc` says a peer rank went away (its socket closed or reset), else None.

    torch raises these as a plain RuntimeError (gloo) or a DistError; the text is all that tells them
    from a bug. The reason drops gloo's source path and its advice: "Read error [127.0.0.1]:24751:
    Connection reset by peer"."""
    import torch.distributed as dist

    text = str(exc)
    if not (isinstance(exc, getattr(dist, "DistError", ())) or isinstance(exc, RuntimeError)
            and any(marker in text for marker in _PEER_LOSS_MARKERS)):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if first.startswith("[") and "] " in first:
        first = first.split("] ", 1)[1]
    return first.split(". This is typically")[0].strip()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def run_rank_main(argv: Sequence[str] | None = None) -> int:
    """`python -m vidcap.parallel RUN SHARD... --outcomes FILE`: one rank started by the local launcher."""
    import argparse
    import json

    from vidcap.durable import atomic_write_text
    from vidcap.signals import stop_on_signals

    p = argparse.ArgumentParser(prog="python -m vidcap.parallel", description=run_rank_main.__doc__)
    p.add_argument("run")
    p.add_argument("shards", type=int, nargs="+")
    p.add_argument("--outcomes", required=True, help="rank 0 writes the shard outcomes here (JSON)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    env = RankEnv.from_env()
    stop = threading.Event()
    if env.leader:
        with stop_on_signals(stop):  # the launcher forwards SIGTERM/SIGINT to rank 0 only
            outcomes = serve(args.run, args.shards, stop, env, progress=not args.no_progress)
        data = [{"index": o.index, "finished": o.finished, "stats": o.stats} for o in outcomes]
        atomic_write_text(args.outcomes, json.dumps(data, default=str))
    else:
        serve(args.run, args.shards, stop, env)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter shutdown: the process groups are gone, nothing is left to flush
