"""`read_frames`: the one entry point; picks the reader from the file's content and applies the resize."""

from __future__ import annotations

from vidcap.frames.frameset import FrameSet
from vidcap.frames.probe import DEFAULT_MAX_PIXELS, sniff
from vidcap.frames.sampling import PLANS
from vidcap.frames.transform import resize_short_side

BACKENDS = ("pyav", "decord")

#: Containers with an index, where decord's seeks land exactly. In others (MPEG-TS, raw streams, ...)
#: decord returned neighbouring frames without a word, so the decord backend reads them with PyAV (and
#: FrameSet.backend says "pyav").
DECORD_EXACT_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi")


def read_frames(path: str, num_frames: int, resize: int | None = None, backend: str = "pyav",
                max_pixels: int | None = DEFAULT_MAX_PIXELS, plan: str = "even") -> FrameSet:
    """K RGB uint8 frames of a video, or the one frame of an image (whatever `num_frames`).

    `plan` says which K: "even" (evenly spaced, the default) or "span" (first to last inclusive).
    `resize` sets the short side (aspect ratio kept, long side truncated); `max_pixels` refuses larger
    sources before decoding (None: no limit). Animated images go through Pillow whatever the backend,
    and the decord backend leaves containers without an index to PyAV (see DECORD_EXACT_FORMATS). Positions and the fewer-than-K policy: see
    `vidcap.frames.sampling`. Raises FrameError, with a short reason, for anything wrong with the file;
    ValueError for a bad argument.
    """
    if plan not in PLANS:
        raise ValueError(f"unknown frame plan {plan!r}; expected one of {', '.join(PLANS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if resize is not None and resize < 1:
        raise ValueError(f"resize must be a positive short side in pixels, got {resize}")
    path = str(path)
    kind = sniff(path)
    if kind == "image":
        from vidcap.frames.image_reader import read_image

        result = read_image(path, max_pixels=max_pixels)
    elif kind == "animation":
        from vidcap.frames.image_reader import read_animation

        result = read_animation(path, num_frames, max_pixels=max_pixels, plan=plan)
    else:
        from vidcap.frames.pyav_reader import probe_video, read_pyav

        header = probe_video(path, max_pixels, looks_like_video=kind == "video") if backend == "decord" else None
        if header is not None and header.format in DECORD_EXACT_FORMATS:
            from vidcap.frames.decord_reader import read_decord

            result = read_decord(path, num_frames, header=header, plan=plan)
        else:
            result = read_pyav(path, num_frames, max_pixels=max_pixels, looks_like_video=kind == "video",
                               plan=plan)
    if resize is not None:
        result.frames = [resize_short_side(frame, resize) for frame in result.frames]
    return result
