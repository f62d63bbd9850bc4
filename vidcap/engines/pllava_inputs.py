"""Samples to PLLaVA inputs: frames fitted and repeated to `num_frames`, the conversation prompt, one image
placeholder expanded to the pooled token count, rows left-padded so each may carry its own prompt.

Following Open-Sora's tools/caption/pllava_dir/caption_pllava.py and PLLaVA's tasks/eval/eval_utils.py:
* prompt: ``"{system} USER:<image> {query} ASSISTANT:"``; Open-Sora put its whole instruction in the system
  text and asked "Describe the video in details.": here the run's prompt is the system text and QUERY the
  question;
* frames: CLIP's processor resizes the short side to 336 and centre-crops (a landscape frame is seen as its
  centre square; Open-Sora's intermediate resize to a 640 long side does not change that). `pad` letterboxes
  each frame to a square with black first (PLLaVA's `center_pad`), so the whole frame is seen;
* a video with fewer than `num_frames` frames has its frames repeated as PLLaVA does:
  ``repeat_interleave(num_frames // n + 1)[:num_frames]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from vidcap.engines.base import Sample

QUERY = {True: "Describe the video in details.", False: "Describe the image in details."}
FRAME_FITS = ("crop", "pad")
IMAGE_TOKEN = "<image>"


def render_prompt(system: str, query: str) -> str:
    """PLLaVA's conversation (roles USER:/ASSISTANT:, separator " "), the media token before the query."""
    head = f"{system} " if system else ""
    return f"{head}USER:{IMAGE_TOKEN} {query} ASSISTANT:"


def repeat_frames(frames: Sequence[np.ndarray], num_frames: int) -> list[np.ndarray]:
    """Exactly `num_frames` frames: more are an error upstream; fewer are repeated in PLLaVA's way."""
    if len(frames) >= num_frames:
        return list(frames[:num_frames])
    multiplier = num_frames // len(frames) + 1
    return [frame for frame in frames for _ in range(multiplier)][:num_frames]


def letterbox(frame: np.ndarray) -> np.ndarray:
    """The frame centred on a black square whose side is its long side."""
    h, w = frame.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.zeros((side, side, frame.shape[2]), dtype=frame.dtype)
    out[top:top + h, left:left + w] = frame
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L), placeholders expanded, left-padded
    attention_mask: torch.Tensor  # (B, L)
    pixel_values: torch.Tensor  # (B * num_frames, 3, S, S)
    prompt_tokens: list[int]  # per row, without padding, placeholders counted


def prompt_ids(tokenizer: Any, text: str, image_token_id: int, visual_tokens: int) -> list[int]:
    """Token ids of one prompt with its single placeholder expanded to `visual_tokens` copies."""
    ids = tokenizer(text)["input_ids"]
    at = [i for i, t in enumerate(ids) if t == image_token_id]
    if len(at) != 1:
        raise ValueError(f"the prompt holds {len(at)} {IMAGE_TOKEN} tokens, PLLaVA takes exactly one "
                         f"(remove {IMAGE_TOKEN} from the prompt text)")
    return ids[:at[0]] + [image_token_id] * visual_tokens + ids[at[0] + 1:]


def build_batch(samples: Sequence[Sample], tokenizer: Any, image_processor: Any, *, num_frames: int,
                image_token_id: int, visual_tokens: int, pad_token_id: int, frame_fit: str) -> Batch:
    rows = [prompt_ids(tokenizer, render_prompt(s.prompt, QUERY[s.is_video]), image_token_id, visual_tokens)
            for s in samples]
    longest = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad_token_id] * (longest - len(r)) + r for r in rows], dtype=torch.long)
    attention_mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    frames: list[np.ndarray] = []
    for sample in samples:
        if not sample.frames:
            raise ValueError(f"sample {sample.key!r} has no frames")
        fitted = [letterbox(f) for f in sample.frames] if frame_fit == "pad" else list(sample.frames)
        frames.extend(repeat_frames(fitted, num_frames))
    pixel_values = image_processor(frames, return_tensors="pt")["pixel_values"]
    return Batch(input_ids, attention_mask, pixel_values, [len(r) for r in rows])
