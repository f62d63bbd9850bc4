"""Tensor-parallel captioning: one shard task as N processes that share one model (`--tp-size N`).

Data parallel is the job array (one task per shard); tensor parallel is inside a task: N ranks, one GPU
each, hold one shard of the model each and run `generate` in lockstep. DeepSpeed inference AutoTP is the
default backend, transformers' native `tp_plan="auto"` the other (`--tp-backend`); NCCL on GPUs, gloo on CPU.

Who does what:
* rank 0 runs the ordinary shard worker: it alone reads frames (the prefetch process), broadcasts each
  batch to the others (`tp_engine`), and alone writes results, stats and the completion marker;
* ranks 1..N-1 receive each batch and caption it with their shard of the model (`tp_engine.follow`);
* after each batch the ranks agree on the outcome (OOM on any rank -> every rank halves; an error on any
  rank -> rank 0 fails the shard; captions that differ between ranks -> refused);
* stopping (SIGTERM locally, USR2 under Slurm) is rank 0's decision alone; its outcome is every rank's;
* a dead or stalled rank ends the whole task within a bound (`watchdog`), and a rerun continues.

Entry points (modules import torch only when called):
* `run_shard_ranks(run_dir, index, stop=None)`: each Slurm task of a tensor-parallel array task (what
  `ShardTask("vidcap.parallel:run_shard_ranks")` calls); also works under torchrun's variables.
* `run_shards_local(run, shards, progress=True)`: start N ranks on this machine and watch them (what
  `vidcap run-shard` and the local executor call when tp_size > 1).
* `python -m vidcap.parallel RUN SHARD... --outcomes FILE`: one locally launched rank.

Bounds (environment, seconds): VIDCAP_TP_TIMEOUT (one batch, default 600), VIDCAP_TP_START_TIMEOUT
(rendezvous + load, default 1800), VIDCAP_TP_HEARTBEAT_TIMEOUT (rank 0 silent, default 60).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidcap.run import RunDir
    from vidcap.worker import ShardOutcome

__all__ = ["run_shard_ranks", "run_shards_local"]


def run_shard_ranks(run_dir: str | Path, index: int, stop: threading.Event | None = None) -> "ShardOutcome":
    """One rank of a tensor-parallel shard task under Slurm (submitit's tasks) or torchrun's variables.

    Every rank returns rank 0's outcome, so `finished` agrees across ranks (ShardTask requeues on rank 0).
    Rank and world come from submitit's JobEnvironment (or RANK/WORLD_SIZE when set); the rendezvous is the
    job's first host, on a port derived from the Slurm job id (VIDCAP_TP_PORT overrides).
    """
    from vidcap.parallel.env import RankEnv
    from vidcap.parallel.ranks import serve
    from vidcap.signals import stop_on_signals

    env = RankEnv.discover()
    if stop is None and env.leader:
        stop = threading.Event()
        with stop_on_signals(stop):  # started by hand: SIGTERM/SIGINT stop rank 0 after its batch
            return serve(run_dir, [index], stop, env)[0]
    return serve(run_dir, [index], stop, env)[0]


def run_shards_local(run: "RunDir", shards: list[int], progress: bool = True) -> list["ShardOutcome"]:
    """Start the run's tp_size ranks on this machine for `shards` (one after another) and watch them."""
    from vidcap.parallel.launch import run_shards_local as launch

    return launch(run, shards, progress=progress)
