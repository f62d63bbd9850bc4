"""The frames the model saw, as small JPEGs: read with the run's own frame plan, in parallel.

Reading goes through the same prefetch processes as captioning (`vidcap.prefetch.Prefetcher`), so a
decoder that crashes or hangs on a bad file costs that video only, and the reasons are the readers' own:
a video that cannot be read gets its reason, never a placeholder image. Workers shrink the frames to
thumbnail size before handing them over, so little crosses between processes; the parent only encodes
JPEGs. A path that several rows share is read once.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vidcap.frames import FrameSet, read_frames
from vidcap.gallery.plan import FramePlan
from vidcap.prefetch import Prefetcher

JPEG_QUALITY = 82


@dataclass
class Thumbs:
    """What a card shows in place of a video: thumbnail files (relative to the gallery) or the reason."""

    files: list[str] = field(default_factory=list)
    error: str = ""
    width: int = 0  # of each thumbnail
    height: int = 0
    seen: str = ""  # what the model got, e.g. "3 x 597x336"


def shrink(path: str, num_frames: int, *, resize: int | None, backend: str, max_pixels: int | None,
           height: int, reader: str = "") -> FrameSet:
    """Read as the model did (the task's own reader if it has one), then scale each frame to `height`
    pixels high; runs in a reader process. `FrameSet.width/height` become the size the model saw."""
    read = read_frames
    if reader:
        from vidcap.sources.frames import load_reader

        read = load_reader(reader)
    frameset = read(path, num_frames, resize=resize, backend=backend, max_pixels=max_pixels)
    seen_h, seen_w = frameset.frames[0].shape[:2]
    frameset.frames = [_fit(frame, height) for frame in frameset.frames]
    frameset.width, frameset.height = seen_w, seen_h  # what the model saw, after the run's resize
    return frameset


def _fit(frame: np.ndarray, height: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if h <= height:
        return frame
    size = (max(1, round(w * height / h)), height)
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))


def thumb_name(path: str) -> str:
    """A stable file stem for a media path, spread over 256 folders (a million files in one is slow)."""
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{digest[:2]}/{digest[2:18]}"


def make_thumbnails(paths: list[str], plan: FramePlan, out: Path, *, height: int = 112, readers: int = 2,
                    progress: bool = True) -> dict[str, Thumbs]:
    """Thumbnails of every distinct path under `out/thumbs/`; path -> Thumbs (files or the reason)."""
    unique = list(dict.fromkeys(paths))
    reader = functools.partial(shrink, height=height, reader=plan.reader)
    result: dict[str, Thumbs] = {}
    bar = tqdm(total=len(unique), desc="thumbnails", unit="video", disable=not progress, file=sys.stderr,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    made_dirs: set[str] = set()
    with Prefetcher(unique, plan.num_frames, resize=plan.resize, backend=plan.backend,
                    ahead=max(4, 4 * readers), workers=readers, reader=reader, item_timeout=300.0) as prefetch:
        for item in prefetch:
            if item.frames is None:
                result[item.path] = Thumbs(error=item.error)
            else:
                result[item.path] = _write(item.path, item.frames, out, made_dirs)
            bar.update(1)
    bar.close()
    return result


def _write(path: str, frameset: FrameSet, out: Path, made_dirs: set[str]) -> Thumbs:
    stem = thumb_name(path)
    folder = stem.split("/")[0]
    if folder not in made_dirs:
        (out / "thumbs" / folder).mkdir(parents=True, exist_ok=True)
        made_dirs.add(folder)
    files = []
    for i, frame in enumerate(frameset.frames):
        name = f"thumbs/{stem}-{i}.jpg"
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, "JPEG", quality=JPEG_QUALITY)
        with open(out / name, "wb") as f:
            f.write(buffer.getvalue())
        files.append(name)
    h, w = frameset.frames[0].shape[:2]
    seen = f"{len(frameset.frames)} x {frameset.width}x{frameset.height}"
    return Thumbs(files=files, width=w, height=h, seen=seen)


def default_readers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
