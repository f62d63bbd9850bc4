"""Frames to a chat-completions request: each frame a base64 JPEG data URL after the prompt text.

The API has no video input, so a video goes as its K frames in order. Frames are shrunk so their longer
side is at most `max_side` before encoding: the API bills and resizes by pixels anyway, and smaller JPEGs
cut upload time and memory when hundreds of requests are in flight.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import numpy as np
from PIL import Image

DETAILS = ("low", "high", "auto")


def frame_to_data_url(frame: np.ndarray, max_side: int, quality: int) -> str:
    """One RGB uint8 frame (H, W, 3) as a `data:image/jpeg;base64,...` URL."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame (H, W, 3), got shape {frame.shape}")
    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(prompt: str, frames: Sequence[np.ndarray], *, detail: str, max_side: int,
                  quality: int) -> list[dict[str, Any]]:
    """The `messages` of one request: a single user turn holding the prompt, then the frames in order."""
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    for frame in frames:
        content.append({"type": "image_url",
                        "image_url": {"url": frame_to_data_url(frame, max_side, quality), "detail": detail}})
    return [{"role": "user", "content": content}]
