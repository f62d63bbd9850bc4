"""Frames from a video with decord, the second backend (`--backend decord`).

decord applies the rotation metadata itself and indexes frames in presentation order, like PyAV's
straight decode. It does not say which rotation it applied, so FrameSet.rotation is None here. It cannot
decode AV1 ("codec not supported by decord: av1"), and fails on damaged files with its own exceptions,
which become FrameError. The file has already been checked with PyAV (stream present, size within the
limit), so both backends give the same reasons for the common failures, and decord's frames must cover the
duration the header promises, as PyAV's must.
"""

from __future__ import annotations

import re

from vidcap.frames.errors import FrameError
from vidcap.frames.frameset import FrameSet
from vidcap.frames.probe import check_complete
from vidcap.frames.pyav_reader import Header
from vidcap.frames.sampling import plan_indices


def read_decord(path: str, num_frames: int, *, header: Header, plan: str = "even") -> FrameSet:
    """K frames of `path` at full size and upright; `header` (from PyAV) tells what the file promises."""
    try:
        import decord
    except ImportError:
        raise FrameError("decord backend not installed (pip install decord)") from None
    decord.logging.set_level(decord.logging.QUIET)  # its FFmpeg's complaints: the FrameError says it once
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        frame_count = len(reader)
        if frame_count:  # by duration: decord's count may leave out frames an MP4 edit list hides
            ends = reader.get_frame_timestamp([0, frame_count - 1])
            check_complete(frame_count, 0, float(ends[1, 1] - ends[0, 0]), header.seconds)
        indices = plan_indices(plan, num_frames, frame_count)
        frames = list(reader.get_batch(indices).asnumpy())
        times = reader.get_frame_timestamp(indices)[:, 0].tolist()
        first = float(reader.get_frame_timestamp([0])[0, 0])
    except FrameError:
        raise
    except (RuntimeError, decord.DECORDError) as exc:
        if "cannot find video stream" in str(exc):  # decord skips streams its FFmpeg cannot decode (AV1)
            raise FrameError(f"codec not supported by decord: {header.codec}") from None
        raise FrameError(f"truncated or corrupt: decord: {_short(exc)}") from None
    height, width = frames[0].shape[:2]
    return FrameSet(frames=frames, indices=indices, timestamps=[float(t) - first for t in times], is_video=True,
                    width=width, height=height, rotation=None, frame_count=frame_count, backend="decord")


def _short(exc: BaseException) -> str:
    """decord's message without its "[hh:mm:ss] /build/path.cc:123: " prefixes, on one line."""
    text = _PREFIX.sub("", " ".join(str(exc).split())).strip()
    return text[:160] or type(exc).__name__


_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")
