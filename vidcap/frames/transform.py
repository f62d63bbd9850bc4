"""Pixel work shared by every reader: display rotation and short-side resize."""

from __future__ import annotations

import numpy as np
from PIL import Image


def rotate(frame: np.ndarray, clockwise: int) -> np.ndarray:
    """Turn a frame clockwise by a multiple of 90 degrees (other angles round to the nearest 90)."""
    turns = round(clockwise / 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k=-turns)) if turns else frame


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at `short_side` and the aspect ratio kept.

    The long side is truncated, as torchvision's Resize(int) does (what PLLaVA-style pipelines feed
    their models): 1280 x 720 at 336 gives 597 x 336.
    """
    if width <= height:
        return short_side, max(1, int(short_side * height / width))
    return max(1, int(short_side * width / height)), short_side


def resize_short_side(frame: np.ndarray, short_side: int) -> np.ndarray:
    """Resize an RGB uint8 frame (bilinear, antialiased by Pillow) so its short side is `short_side`."""
    height, width = frame.shape[:2]
    size = resized_size(width, height, short_side)
    if size == (width, height):
        return frame
    return np.array(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
