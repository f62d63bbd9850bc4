"""Shared by the PLLaVA tests: a fixed batch, greedy generation with its logits, and the tie-aware comparison.

Random weights give near-tied logits, and batch composition moves them by ~1e-7: two greedy runs may part ways
at a genuine tie. A differing token is accepted only where the reference's top-2 gap is below TIE_GAP, and
every logit before it must agree within LOGIT_TOL.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from vidcap.engines.base import Sample
from vidcap.engines.pllava_inputs import build_batch

TIE_GAP = 1e-5
LOGIT_TOL = 1e-4
PROMPTS = ("Describe this video in detail.", "What happens here, and who is in it?", "Caption it.")


def frames(count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def fixed_batch() -> list[Sample]:
    """Three videos of different sizes, frame counts (one short) and prompt lengths: left padding varies."""
    return [Sample("a", frames(4, 48, 80, 1), PROMPTS[0]), Sample("b", frames(2, 40, 40, 2), PROMPTS[1]),
            Sample("c", frames(4, 64, 36, 3), PROMPTS[2])]


def greedy(engine, samples):  # noqa: ANN001, ANN201 - a PllavaEngine
    """New tokens (lists) and logits (batch, steps, vocab) from the engine's own inputs and settings."""
    batch = build_batch(samples, engine.tokenizer, engine.image_processor, num_frames=engine.num_frames,
                        image_token_id=engine.image_token_id, visual_tokens=engine.model.tokens_per_video,
                        pad_token_id=engine.pad_token_id, frame_fit=engine.config.frame_fit)
    generation = copy.deepcopy(engine.generation)
    generation.output_logits = generation.return_dict_in_generate = True
    out = engine.model.generate(batch.input_ids.to(engine.device), batch.attention_mask.to(engine.device),
                                batch.pixel_values.to(engine.device, dtype=engine.model.dtype), len(samples),
                                generation, engine.pad_token_id)
    logits = torch.stack([x.full_tensor() if hasattr(x, "full_tensor") else x for x in out.logits], dim=1)
    return out.sequences.tolist(), logits.float().cpu()


def compare(ref_tokens: list[int], ref_logits: torch.Tensor, tokens: list[int], logits: torch.Tensor,
            eos: set[int], what: str) -> None:
    """Same tokens and logits until the end, or until a divergence at a genuine near-tie of the reference."""
    for step, (x, y) in enumerate(zip(ref_tokens, tokens)):
        drift = float((ref_logits[step] - logits[step]).abs().max())
        assert drift < LOGIT_TOL, f"{what}: logits at step {step} differ by {drift:.2e}"
        if x != y:
            top = ref_logits[step].topk(2).values
            gap = float(top[0] - top[1])
            assert gap < TIE_GAP, f"{what}: token {step} differs ({x} vs {y}) with a top-2 gap of {gap:.2e}"
            return
        if x in eos:
            return
