"""Images through Pillow: a still as one RGB frame, upright (EXIF orientation applied) and with
transparency over white; an animated GIF, PNG or WebP as a short video.

Animations go through Pillow whatever the video backend: it composes GIF frames by their disposal rules
and reads animated WebP, which FFmpeg reads as a single frame and decord not at all.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from vidcap.frames.errors import FrameError
from vidcap.frames.frameset import FrameSet
from vidcap.frames.probe import check_pixels
from vidcap.frames.sampling import plan_indices


def read_image(path: str, *, max_pixels: int | None) -> FrameSet:
    """The first frame of an image file; FrameError if it cannot be decoded or is over the pixel limit."""
    try:
        with Image.open(path) as image:
            check_pixels(image.width, image.height, max_pixels)  # before decoding a single pixel
            image.load()
            frame = _rgb(ImageOps.exif_transpose(image))
    except Image.DecompressionBombError as exc:
        raise FrameError(f"resolution over limit: {exc}".splitlines()[0][:200]) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise FrameError(f"unreadable image: {exc}".splitlines()[0][:200]) from None
    height, width = frame.shape[:2]
    return FrameSet(frames=[frame], indices=[0], timestamps=[0.0], is_video=False, width=width, height=height,
                    frame_count=1, backend="image")


def read_animation(path: str, num_frames: int, *, max_pixels: int | None, plan: str = "even") -> FrameSet:
    """K frames of an animated image (by the frame `plan`), timed by the frame durations it declares."""
    try:
        with Image.open(path) as image:
            check_pixels(image.width, image.height, max_pixels)
            count = getattr(image, "n_frames", 1)
            indices = plan_indices(plan, num_frames, count)
            frames, starts, clock = [], {}, 0.0
            for index in range(indices[-1] + 1):
                image.seek(index)
                image.load()  # WebP sets the frame's duration only once it is loaded
                starts[index] = clock
                clock += float(image.info.get("duration") or 0) / 1000
                if index in indices:
                    frames.append(_rgb(image))
    except Image.DecompressionBombError as exc:
        raise FrameError(f"resolution over limit: {exc}".splitlines()[0][:200]) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise FrameError(f"unreadable image: {exc}".splitlines()[0][:200]) from None
    height, width = frames[0].shape[:2]
    return FrameSet(frames=frames, indices=indices, timestamps=[starts[i] for i in indices], is_video=True,
                    width=width, height=height, frame_count=count, backend="image")


def _rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    return np.array(image.convert("RGB"))
