"""What a file is, told from its first bytes rather than its name, and the checks every reader shares.

An extension lies often in scraped datasets (a JPEG named .mp4, an HTML error page named .jpg), so the
kind comes from the content: known image signatures go to the image reader (an animated GIF, WebP or
PNG is an animation: a video read through Pillow), everything else to a video reader. Knowing that a
file *looks* like a container also lets a failure to open it say "truncated or corrupt" rather than
"not a video".
"""

from __future__ import annotations

import os
import stat

from vidcap.frames.errors import FrameError

#: 8K UHD (7680 x 4320): frames past this are refused before any decoding.
DEFAULT_MAX_PIXELS = 7680 * 4320


def _is_image(head: bytes) -> bool:
    return (
        head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*"))
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or (head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"heic", b"heix", b"mif1"))
    )


def _looks_like_video(head: bytes) -> bool:
    """A known container signature: ISO BMFF (mp4/mov), Matroska/WebM, AVI, FLV, MPEG-TS/PS, Ogg."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
        or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV", b"OggS", b"\x00\x00\x01\xba", b"\x30\x26\xb2\x75"))
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or (len(head) > 188 and head[0] == 0x47 and head[188] == 0x47)
    )


def _is_animated(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except Exception:  # an unreadable image is the image reader's to report
        return False


def sniff(path: str) -> str:
    """"image", "animation", "video" (a known container), or "unknown" (left to the video reader to judge).

    Raises FrameError for a file that is missing, not a regular file, or empty.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FrameError("missing file") from None
    except OSError as exc:
        raise FrameError(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FrameError("not a regular file")
    if info.st_size == 0:
        raise FrameError("empty file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(256)
    except OSError as exc:
        raise FrameError(f"cannot read file: {exc.strerror or exc}") from None
    if _is_image(head):
        return "animation" if head.startswith((b"GIF", b"RIFF", b"\x89PNG")) and _is_animated(path) else "image"
    return "video" if _looks_like_video(head) else "unknown"


def check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Refuse a frame larger than `max_pixels` before decoding it."""
    if max_pixels is not None and width * height > max_pixels:
        raise FrameError(f"resolution over limit: {width}x{height} > {max_pixels} pixels")


def check_complete(frames: int, declared_frames: int, span: float | None, declared_seconds: float | None) -> None:
    """Refuse a video whose header promises more than its data holds (a cut download or copy).

    Sampling 0.1 / 0.5 / 0.9 of what is left would give frames from the wrong places. With a frame count
    in the header (MP4, MOV) compare counts; without one (Matroska, WebM) compare the frames' time span
    with the stream's declared duration, allowing 10% and half a second for rounding and odd muxers.
    """
    if declared_frames:
        if frames < declared_frames:
            raise FrameError(f"truncated or corrupt: {frames} of {declared_frames} frames present")
    elif declared_seconds and span is not None and span < 0.9 * declared_seconds and declared_seconds - span > 0.5:
        raise FrameError(f"truncated or corrupt: frames cover {span:.2f} s of {declared_seconds:.2f} s")
