"""What a reader returns: the frames and where in the source they came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FrameSet:
    """K RGB uint8 frames (H, W, 3) of one video, in time order, or the single frame of an image.

    `indices` are positions in a straight decode of the stream (0-based, presentation order) and
    `timestamps` are seconds from the stream's first frame; an image has `[0]` and `[0.0]`.
    `width`/`height` are the source size as displayed (after rotation, before resize), `rotation` the
    clockwise degrees applied from the display metadata (None where the backend applied it unseen: decord),
    `frame_count` the frames in the stream, `backend` the reader used ("pyav", "decord", "image").
    """

    frames: list[np.ndarray]
    indices: list[int]
    timestamps: list[float]
    is_video: bool
    width: int = 0
    height: int = 0
    rotation: int | None = 0
    frame_count: int = 1
    backend: str = ""

    @property
    def nbytes(self) -> int:
        """Bytes of pixel data (what a hand-over between processes has to move)."""
        return sum(frame.nbytes for frame in self.frames)
