"""Frames of videos and images: K evenly spaced RGB frames, exact, or a FrameError saying why not.

`read_frames` is the entry point; `sample_positions` says where the K frames are taken. Readers: PyAV
(default: exact on variable frame rate and damaged files, decodes AV1, applies rotation), decord, and
Pillow for images (told from videos by content, not by extension).
"""

from vidcap.frames.errors import FrameError
from vidcap.frames.frameset import FrameSet
from vidcap.frames.probe import DEFAULT_MAX_PIXELS
from vidcap.frames.read import BACKENDS, read_frames
from vidcap.frames.sampling import PLANS, plan_indices, sample_indices, sample_positions, span_indices

__all__ = ["BACKENDS", "DEFAULT_MAX_PIXELS", "PLANS", "FrameError", "FrameSet", "plan_indices", "read_frames",
           "sample_indices", "sample_positions", "span_indices"]
