"""Out-of-memory halving: a batch that does not fit on the GPU is split in half and retried, down to one.

Batches are static (`--batch-size` samples each), but their memory is not: LLaVA-NeXT tiles and Qwen2-VL's
dynamic resolution make some batches far bigger than others. Instead of failing the shard, a batch that runs
out of GPU memory is run as two halves, recursively; a single sample that still does not fit comes
back as an error result, so the rest of the shard goes on. Engine-agnostic and torch-free at import.

Under tensor parallelism every rank must take the same branch: the TP wrapper has to agree on an OOM across
ranks before retrying, which this module does not do.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Sequence

from vidcap.engines.base import Engine, Result, Sample

log = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or the RuntimeError text older torch and some kernels raise instead."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_gpu_memory() -> None:
    """Drop what the failed attempt left behind so the halves start from a clean cache."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        gc.collect()  # tensors of the failed attempt may sit in reference cycles
        torch.cuda.empty_cache()


def run_batch(engine: Engine, samples: Sequence[Sample]) -> list[Result]:
    """`engine.run(samples)`, halving the batch on out-of-memory; one result per sample, in order."""
    if not samples:
        return []
    try:
        return engine.run(samples)
    except Exception as exc:  # noqa: BLE001 - only OOM is handled, the rest is re-raised
        if not is_out_of_memory(exc):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # retry outside the except block, so the failed attempt's traceback (and its tensors) can be freed
    free_gpu_memory()
    if len(samples) == 1:
        log.warning("out of memory on a single sample %s: marking it as an error", samples[0].key)
        return [Result(error=f"out of GPU memory even alone: {message}")]
    half = len(samples) // 2
    log.warning("out of memory on a batch of %d: retrying as %d + %d", len(samples), half, len(samples) - half)
    return run_batch(engine, samples[:half]) + run_batch(engine, samples[half:])


#: the name from when every engine was a captioner
caption_batch = run_batch
