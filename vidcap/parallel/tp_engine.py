"""Rank 0's engine that shares each batch with the other ranks, and the followers' loop.

Rank 0 runs the ordinary shard worker (`vidcap.worker.run_shard`): it alone reads frames (its prefetch
process), and it alone writes results. Its engine is a `TensorParallelEngine`: `run(samples)` first
broadcasts the batch on the control group, then every rank runs the same `HFEngine.run` on the same
samples, which makes every rank build the same inputs and call the same `generate` in lockstep (the model's
collectives pair up). Followers run `follow()`: receive a message, caption the batch, repeat, until rank 0
says "end" (the shard outcomes, which every rank returns) or "abort" (rank 0 failed: they fail too).

The broadcast sends a small pickled header (keys, prompts, texts, frame shapes) and the frames as one flat uint8
tensor, without pickling the pixels.

After each batch the ranks agree (one all_gather on the control group) on how it went: every rank's status
and a digest of its captions. So a failure is never one rank's private decision:
* out of memory on any rank: every rank raises an out-of-memory error, so rank 0's `run_batch`
  halves the batch (and broadcasts the halves) exactly as on one GPU, and followers simply caption what
  comes next. This works when the OOM leaves the ranks' collectives paired (it struck every rank alike, or
  before the first collective). When one rank fails in the middle of `generate`, its peers are left inside
  a model collective and never reach the agreement: the watchdog ends the task within the batch bound and
  a rerun redoes the batch (it was not written).
* any other error on any rank: rank 0 raises it (the shard fails as it would on one GPU); followers wait
  for rank 0's "abort".
* captions that differ between ranks (they must not: every rank ends with the same reduced logits): rank 0
  raises, instead of writing captions that depend on which rank wrote them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from vidcap.engines.base import Engine, Result, Sample
from vidcap.engines.batching import free_gpu_memory, is_out_of_memory
from vidcap.parallel.env import Bounds
from vidcap.parallel.watchdog import Watchdog

OK, OUT_OF_MEMORY, FAILED = 0, 1, 2


class RankAborted(Exception):
    """Rank 0 failed and told the followers; carries its one-line reason and exit code."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(reason)
        self.code = code


class Channel:
    """Rank 0 -> every rank, on the control (gloo) group."""

    def __init__(self, group: Any, rank: int, world: int) -> None:
        self.group, self.rank, self.world = group, rank, world
        self.sent_bytes = 0
        self.seconds = 0.0

    def _broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    # rank 0 ----------------------------------------------------------------------------------------
    def send_batch(self, samples: Sequence[Sample]) -> None:
        started = time.perf_counter()
        frames = [f for s in samples for f in s.frames or []]
        flat = all(isinstance(f, np.ndarray) and f.dtype == np.uint8 for f in frames)
        header = {
            "kind": "batch",
            "samples": [(s.key, s.prompt, s.is_video, [f.shape for f in s.frames or []] if flat else
                         list(s.frames or []), s.text) for s in samples],
            "nbytes": sum(f.nbytes for f in frames) if flat else 0,
        }
        self._broadcast_object(header)
        if header["nbytes"]:
            payload = torch.from_numpy(np.concatenate([np.ascontiguousarray(f).reshape(-1) for f in frames]))
            dist.broadcast(payload, src=0, group=self.group)
        self.sent_bytes += header["nbytes"]
        self.seconds += time.perf_counter() - started

    def send(self, kind: str, **fields: Any) -> None:
        self._broadcast_object({"kind": kind, **fields})

    # followers -------------------------------------------------------------------------------------
    def receive(self) -> dict[str, Any]:
        message = self._broadcast_object(None)
        if message["kind"] != "batch":
            return message
        samples = []
        if message["nbytes"]:
            payload = torch.empty(message["nbytes"], dtype=torch.uint8)
            dist.broadcast(payload, src=0, group=self.group)
            buffer, offset = payload.numpy(), 0
            for key, prompt, is_video, shapes, text in message["samples"]:
                frames = []
                for shape in shapes:
                    size = int(np.prod(shape))
                    frames.append(buffer[offset:offset + size].reshape(shape))
                    offset += size
                samples.append(Sample(key=key, frames=frames, prompt=prompt, is_video=is_video, text=text))
        else:
            samples = [Sample(key=k, frames=f, prompt=p, is_video=v, text=t) for k, p, v, f, t in message["samples"]]
        message["samples"] = samples
        return message


def caption_together(engine: Engine, group: Any, world: int, samples: Sequence[Sample]) -> list[Result]:
    """Every rank: caption the same batch, then agree on the outcome (see the module docstring)."""
    captions: list[Result] | None = None
    own: BaseException | None = None
    status, note = OK, ""
    try:
        captions = engine.run(samples)
    except Exception as exc:  # noqa: BLE001 - decided together below
        own = exc
        status = OUT_OF_MEMORY if is_out_of_memory(exc) else FAILED
        note = _first_line(exc)
    votes: list[Any] = [None] * world
    dist.all_gather_object(votes, (status, _digest(captions), note), group=group)
    failed = [(r, n) for r, (s, _, n) in enumerate(votes) if s == FAILED]
    if failed:
        if own is not None and status == FAILED:
            raise own
        rank, why = failed[0]
        raise RuntimeError(f"tensor-parallel rank {rank} failed on this batch: {why}")
    short = [(r, n) for r, (s, _, n) in enumerate(votes) if s == OUT_OF_MEMORY]
    if short:
        own = None
        free_gpu_memory()
        ranks = ", ".join(str(r) for r, _ in short)
        raise RuntimeError(f"out of memory on tensor-parallel rank(s) {ranks}: {short[0][1]}")
    if len({d for _, d, _ in votes}) > 1:
        raise RuntimeError("tensor-parallel ranks produced different captions for the same batch "
                           f"(digests {[d[:8] for _, d, _ in votes]}): refusing to write them")
    assert captions is not None
    return captions


class TensorParallelEngine(Engine):
    """Rank 0's engine: broadcast the batch, caption it with the others, return rank 0's captions."""

    name = "hf-tp"

    def __init__(self, local: Engine, channel: Channel, watchdog: Watchdog, bounds: Bounds,
                 backend: str) -> None:
        self.local, self.channel, self.watchdog, self.bounds = local, channel, watchdog, bounds
        self.backend = backend
        self.batches = 0
        self.model_s = 0.0

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        if not samples:
            return []
        self.batches += 1
        with self.watchdog.busy(f"batch {self.batches} ({len(samples)} samples)", self.bounds.batch):
            self.channel.send_batch(samples)
            started = time.perf_counter()
            try:
                return caption_together(self.local, self.channel.group, self.channel.world, samples)
            finally:
                self.model_s += time.perf_counter() - started

    def open(self, spec: Any = None) -> None:
        """Every rank loaded its part already; only the task's prompt is checked here (on rank 0)."""
        self.local.open(spec)

    def figures(self) -> dict[str, Any]:
        stats = dict(self.local.figures())
        stats.update({
            "tp_size": self.channel.world, "tp_backend": self.backend, "tp_batches": self.batches,
            "tp_broadcast_s": round(self.channel.seconds, 4), "tp_broadcast_bytes": self.channel.sent_bytes,
            "tp_model_s": round(self.model_s, 4),
        })
        return stats

    def close(self) -> None:
        """The ranks' driver closes the local engine when every rank is done."""


def follow(engine: Engine, channel: Channel, watchdog: Watchdog, bounds: Bounds) -> list[Any]:
    """A follower's life: caption what rank 0 sends until it sends "end" (its outcomes) or "abort"."""
    batches = 0
    while True:
        message = channel.receive()  # no deadline here: rank 0 may read frames for long; the heartbeat
        kind = message["kind"]       # tells whether it is still there
        if kind == "end":
            watchdog.stop_listening()
            return list(message["outcomes"])
        if kind == "abort":
            watchdog.stop_listening()
            raise RankAborted(message["reason"], int(message.get("code", 1)))
        if kind != "batch":
            raise RuntimeError(f"unknown message from rank 0: {kind!r}")
        batches += 1
        samples = message["samples"]
        with watchdog.busy(f"batch {batches} ({len(samples)} samples)", bounds.batch):
            try:
                caption_together(engine, channel.group, channel.world, samples)
            except Exception:  # noqa: BLE001 - agreed by every rank; rank 0 decides what happens next
                pass


def _digest(captions: list[Result] | None) -> str:
    if captions is None:
        return ""
    h = hashlib.sha256()
    for c in captions:
        h.update(f"{c.text}\0{c.generated_tokens}\0{c.error}\n".encode())
    return h.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
