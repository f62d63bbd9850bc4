"""Shared by the PLLaVA tests: a fixed batch and greedy generation with its logits (compared by tie_aware)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from vidcap.engines.base import Sample
from vidcap.engines.pllava_inputs import build_batch

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


