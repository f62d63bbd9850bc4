"""OOM halving: a test double raises out-of-memory above a batch size (the mechanism), and a real tiny model
has an out-of-memory injected into its generate (the mechanism wired to the real engine)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from typing import Sequence

import numpy as np
import pytest
import torch

from vidcap.engines.hf_settings import HFSettings
from vidcap.engines.base import Caption, Engine, Sample
from vidcap.engines.batching import caption_batch, is_out_of_memory
from vidcap.engines.hf import HFEngine
from vidcap.fixtures.tiny_models import make_tiny_model

torch.set_num_threads(1)


class OomAbove(Engine):
    """Captions each sample with its key, but runs out of memory on batches larger than `limit` or holding
    a key in `always`."""

    def __init__(self, limit: int, always: frozenset[str] = frozenset(), error: type = torch.cuda.OutOfMemoryError):
        self.limit, self.always, self.error = limit, always, error
        self.calls: list[int] = []

    def run(self, samples: Sequence[Sample]) -> list[Caption]:
        self.calls.append(len(samples))
        if len(samples) > self.limit or self.always & {s.key for s in samples}:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Caption(text=f"caption of {s.key}") for s in samples]


def samples(count: int) -> list[Sample]:
    return [Sample(key=f"k{i}", frames=[np.zeros((8, 8, 3), np.uint8)], prompt="p") for i in range(count)]


def test_batch_that_fits_is_one_call() -> None:
    engine = OomAbove(limit=8)
    assert [c.text for c in caption_batch(engine, samples(8))] == [f"caption of k{i}" for i in range(8)]
    assert engine.calls == [8]


def test_oom_halves_recursively_and_keeps_order() -> None:
    engine = OomAbove(limit=2)
    captions = caption_batch(engine, samples(7))
    assert [c.text for c in captions] == [f"caption of k{i}" for i in range(7)]
    assert engine.calls == [7, 3, 1, 2, 4, 2, 2]


def test_runtime_error_text_counts_as_oom() -> None:
    engine = OomAbove(limit=1, error=RuntimeError)
    assert all(c.ok for c in caption_batch(engine, samples(3)))


def test_sample_that_never_fits_becomes_an_error_and_the_rest_are_captioned() -> None:
    engine = OomAbove(limit=4, always=frozenset({"k2"}))
    captions = caption_batch(engine, samples(4))
    assert [c.ok for c in captions] == [True, True, False, True]
    assert "out of GPU memory" in captions[2].error and "Tried to allocate" in captions[2].error
    assert [c.text for c in captions if c.ok] == ["caption of k0", "caption of k1", "caption of k3"]


def test_other_errors_are_not_swallowed() -> None:
    engine = OomAbove(limit=0, error=ValueError)
    with pytest.raises(ValueError):
        caption_batch(engine, samples(2))
    assert engine.calls == [2]


def test_oom_recognition() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(MemoryError())


def test_real_engine_halves_on_injected_oom(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generate raises OOM above two samples; the halves are captioned as if they had been the batches."""
    engine = HFEngine.loaded(HFSettings(model=str(make_tiny_model(tmp_path / "m")), max_new_tokens=8))
    rng = np.random.default_rng(0)
    batch = [Sample(f"k{i}", [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)] * 2, "Describe the video.")
             for i in range(5)]
    halves = [c.text for part in (batch[:2], batch[2:3], batch[3:]) for c in engine.caption(part)]
    generate = engine.model.generate
    sizes: list[int] = []

    def oom_above_two(**inputs):
        sizes.append(len(inputs["input_ids"]))
        if len(inputs["input_ids"]) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return generate(**inputs)

    monkeypatch.setattr(engine.model, "generate", oom_above_two)
    assert [c.text for c in caption_batch(engine, batch)] == halves
    assert sizes == [5, 2, 3, 1, 2]
