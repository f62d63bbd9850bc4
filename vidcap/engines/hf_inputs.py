"""Samples to model inputs: the chat-templated prompt with its visual placeholders, and the frames.

How the K frames of a video reach the model:
- a processor with a video input (LLaVA-NeXT-Video, Qwen2-VL, Qwen2.5-VL, and any other checkpoint whose
  processor has a video processor and a video token) gets them as one video;
- any other (LLaVA 1.5, LLaVA-NeXT, most image models) gets them as K images in time order, all in one user
  turn ahead of the prompt text, as Open-Sora's LLaVA captioner did. The video prompt presets say the frames
  are one video's frames in order, so the same words fit both.
An image sample (`is_video` false, e.g. an image row in a video run) always goes in as an image.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vidcap.engines.base import Sample


def takes_video(processor: Any) -> bool:
    """Whether the checkpoint has a real video input (a video processor and a video placeholder token)."""
    return getattr(processor, "video_processor", None) is not None and bool(getattr(processor, "video_token", None))


def render_prompt(processor: Any, prompt: str, kind: str, count: int) -> str:
    """The prompt as the model expects it: `count` visual items of `kind` ("image"/"video") then the text,
    through the checkpoint's chat template, or placeholder tokens on their own line where it has none."""
    if getattr(processor, "chat_template", None):
        content = [{"type": kind} for _ in range(count)] + [{"type": "text", "text": prompt}]
        return processor.apply_chat_template([{"role": "user", "content": content}],
                                             add_generation_prompt=True, tokenize=False)
    token = processor.video_token if kind == "video" else processor.image_token
    return token * count + "\n" + prompt


def build_inputs(processor: Any, samples: Sequence[Sample]) -> Any:
    """One padded (left) batch of tensors for `samples`, in their order."""
    as_video = takes_video(processor)
    texts: list[str] = []
    images: list[np.ndarray] = []
    videos: list[np.ndarray] = []
    for sample in samples:
        if not sample.frames:
            raise ValueError(f"sample {sample.key!r} has no frames")
        if sample.is_video and as_video:
            videos.append(np.stack(sample.frames))
            texts.append(render_prompt(processor, sample.prompt, "video", 1))
        else:
            images.extend(sample.frames)
            texts.append(render_prompt(processor, sample.prompt, "image", len(sample.frames)))
    return processor(text=texts, images=images or None, videos=videos or None, padding=True,
                     return_tensors="pt")


def visual_token_count(processor: Any, input_ids: Any) -> int:
    """How many positions of `input_ids` are image or video placeholders."""
    ids = {getattr(processor, name, None) for name in ("image_token_id", "video_token_id")} - {None}
    return int(sum((input_ids == token).sum() for token in ids))
