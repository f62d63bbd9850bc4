"""Where to take K frames from a video of n frames.

Relative points follow what Open-Sora used: 1 frame at 0.5; 2 at 0.25 and 0.75; 3 at 0.1, 0.5 and 0.9;
K >= 4 at the centres of K equal segments, (i + 0.5) / K. A point p maps to frame floor(p * n): sampling
is by frame position, not by time, so on variable frame rate it matches decord and Open-Sora's indexing.

Fewer frames than asked (n < K) is an error, "too few frames: n < K": the model gets exactly K distinct
frames or the row gets an error, never a repeated or invented frame. For n >= K the indices are distinct
(consecutive points are at least 1/K apart, 0.4 apart for K = 3).
"""

from __future__ import annotations

import math

from vidcap.frames.errors import FrameError

_FIXED = {1: [0.5], 2: [0.25, 0.75], 3: [0.1, 0.5, 0.9]}


def sample_positions(num_frames: int) -> list[float]:
    """The relative points in [0, 1) at which `num_frames` frames are taken."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return list(_FIXED.get(num_frames) or [(i + 0.5) / num_frames for i in range(num_frames)])


def sample_indices(num_frames: int, frame_count: int) -> list[int]:
    """The frame indices taken from a video of `frame_count` frames; FrameError if it has fewer than K."""
    if frame_count < num_frames:
        raise FrameError(f"too few frames: {frame_count} < {num_frames}")
    # the epsilon keeps 0.1 * 30 from landing on 2.9999999 through binary rounding
    return [min(frame_count - 1, math.floor(p * frame_count + 1e-9)) for p in sample_positions(num_frames)]
