"""Where to take K frames from a video of n frames.

Relative points follow what Open-Sora used: 1 frame at 0.5; 2 at 0.25 and 0.75; 3 at 0.1, 0.5 and 0.9;
K >= 4 at the centres of K equal segments, (i + 0.5) / K. A point p maps to frame floor(p * n): sampling
is by frame position, not by time, so on variable frame rate it matches decord and Open-Sora's indexing.

Fewer frames than asked (n < K) is an error, "too few frames: n < K": the model gets exactly K distinct
frames or the row gets an error, never a repeated or invented frame. For n >= K the indices are distinct
(consecutive points are at least 1/K apart, 0.4 apart for K = 3).

A second plan, "span", takes K frames from the first to the last inclusive, evenly spaced (camera motion
measures first -> last through the frames between). A video with fewer than K frames gives all of them:
the caller decides how few is too few (motion calls it unclassified, not an error).
"""

from __future__ import annotations

import math

from vidcap.frames.errors import FrameError

_FIXED = {1: [0.5], 2: [0.25, 0.75], 3: [0.1, 0.5, 0.9]}

#: Frame plans a reader accepts: "even" (K evenly spaced, Open-Sora's points) and "span" (first to last).
PLANS = ("even", "span")


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


def span_indices(num_frames: int, frame_count: int) -> list[int]:
    """K distinct indices from the first frame to the last, evenly spaced; all frames when fewer than K."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if frame_count < 1:
        raise FrameError("too few frames: 0 < 1")
    if frame_count <= num_frames:
        return list(range(frame_count))
    if num_frames == 1:
        return [0]
    return [round(i * (frame_count - 1) / (num_frames - 1)) for i in range(num_frames)]


def plan_indices(plan: str, num_frames: int, frame_count: int) -> list[int]:
    """The indices a frame plan takes from a video of `frame_count` frames."""
    if plan == "even":
        return sample_indices(num_frames, frame_count)
    if plan == "span":
        return span_indices(num_frames, frame_count)
    raise ValueError(f"unknown frame plan {plan!r}; expected one of {', '.join(PLANS)}")
