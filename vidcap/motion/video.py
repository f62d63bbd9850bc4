"""One video file -> its camera motion: the frame plan read with vidcap's own readers, then the estimator.

Frames come from `vidcap.frames.read_frames` with the "span" plan (first to last inclusive, PyAV by
default), never from OpenCV's VideoCapture: OpenCV only measures. A file that cannot give its frames
raises FrameError (an error row); a readable video whose motion cannot be measured is `unclassified`.
"""

from __future__ import annotations

import cv2

from vidcap.frames import DEFAULT_MAX_PIXELS, FrameSet, read_frames
from vidcap.motion.estimate import Motion, MotionSettings, estimate_motion
from vidcap.motion.labels import DEFAULT_THRESHOLD, UNCLASSIFIED


def read_span(path: str, num_frames: int, resize: int | None = None, backend: str = "pyav",
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> FrameSet:
    """`num_frames` frames from the first to the last (all of them when the video has fewer), reduced so the
    short side is at most `resize`; FrameError if the file cannot give them.

    The motion task's frame reader (read_frames' signature, so the prefetch processes can run it). Frames
    are only ever made smaller: an upscaled small video tracks worse (measured: 19 instead of 26 inliers
    on a compressed 180p zoom), and INTER_AREA leaves no aliasing for the tracker to follow.
    """
    frameset = read_frames(path, num_frames, backend=backend, max_pixels=max_pixels, plan="span")
    if resize is not None:
        frameset.frames = [_shrink(frame, resize) for frame in frameset.frames]
    return frameset


def _shrink(frame, short_side: int):
    height, width = frame.shape[:2]
    short = min(height, width)
    if short <= short_side:
        return frame
    size = (max(1, round(width * short_side / short)), max(1, round(height * short_side / short)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def read_motion_frames(path: str, settings: MotionSettings = MotionSettings(), backend: str = "pyav",
                       max_pixels: int | None = DEFAULT_MAX_PIXELS) -> FrameSet:
    """The plan's frames of `path` (steps + 1, first to last, short side at most the settings')."""
    return read_span(path, settings.num_frames, resize=settings.short_side, backend=backend, max_pixels=max_pixels)


def motion_of(frameset: FrameSet, settings: MotionSettings = MotionSettings(),
              threshold: float = DEFAULT_THRESHOLD) -> Motion:
    """The motion shown by frames read with the plan (an image is a single frame: unclassified)."""
    if not frameset.is_video:
        return Motion(UNCLASSIFIED, reason="an image, not a video")
    return estimate_motion(frameset.frames, settings, threshold, frame_count=frameset.frame_count)


def measure_video(path: str, settings: MotionSettings = MotionSettings(),
                  threshold: float = DEFAULT_THRESHOLD, backend: str = "pyav") -> Motion:
    """Read and measure one video; FrameError for a file that cannot give its frames."""
    return motion_of(read_motion_frames(path, settings, backend), settings, threshold)
