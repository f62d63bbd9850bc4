"""Synthetic media for tests, demos and benchmarks, made with PyAV so no external tool is needed.

Every frame carries a *signature*: a 4 x 6 grid of colour cells holding 72 bits (a magic byte, the
video's seed, the frame index and a CRC-16 of both). Each cell is one of 8 colours (one bit per RGB
channel, levels far from the threshold), drawn over a slowly moving texture so the encoder sees real
motion. `frame_signature` reads the grid back from the mean of each cell's centre, so it survives
lossy compression, resizing and JPEG; a frame read in the wrong orientation fails the CRC instead of
giving a wrong answer. That lets any test prove that frame i of video A is exactly what it got.
"""

from __future__ import annotations

import math
import os
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

ROWS, COLS = 4, 6
MAGIC = 0xA5
LOW, HIGH = 48, 208  # channel levels of a 0 bit and a 1 bit; the texture adds at most +-TEXTURE
TEXTURE = 32
BROKEN_KINDS = ("empty", "truncated", "text", "audio_only", "corrupt_middle", "missing")


def _crc16(seed: int, index: int) -> int:
    return zlib.crc32(seed.to_bytes(3, "big") + index.to_bytes(3, "big")) & 0xFFFF


def _bits(seed: int, index: int) -> np.ndarray:
    """The 72 bits of a signature, as a (ROWS, COLS, 3) array of 0/1."""
    if not (0 <= seed < 1 << 24 and 0 <= index < 1 << 24):
        raise ValueError("seed and frame index must fit in 24 bits")
    value = (MAGIC << 64) | (seed << 40) | (index << 16) | _crc16(seed, index)
    bits = [(value >> (71 - i)) & 1 for i in range(72)]
    return np.array(bits, dtype=np.uint8).reshape(ROWS, COLS, 3)


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random uint8 field in [0, 2 * TEXTURE], twice the frame size so frames can pan across it."""
    rng = np.random.default_rng(seed + 1_000_003)
    coarse = rng.uniform(-1.0, 1.0, size=(height // 16 + 2, width // 16 + 2)).astype(np.float32)
    field = np.kron(coarse, np.ones((16, 16), np.float32))[: height, : width]
    # two passes of a cheap box blur turn the blocks into a smooth field
    for axis in (0, 1):
        for _ in range(2):
            field = (np.roll(field, 4, axis) + field + np.roll(field, -4, axis)) / 3
    field = np.tile(field, (2, 2))
    field = field * (TEXTURE / max(1e-6, float(np.abs(field).max()))) + TEXTURE
    return np.clip(np.rint(field), 0, 2 * TEXTURE).astype(np.uint8)


def draw_frame(height: int, width: int, seed: int, index: int, texture: np.ndarray | None = None) -> np.ndarray:
    """The RGB uint8 frame `index` of video `seed`: signature cells over a texture panning with `index`."""
    colours = np.where(_bits(seed, index) == 1, HIGH, LOW).astype(np.uint8)
    frame = np.empty((height, width, 3), np.uint8)
    for r in range(ROWS):
        rows = slice(r * height // ROWS, (r + 1) * height // ROWS)
        for c in range(COLS):
            frame[rows, c * width // COLS: (c + 1) * width // COLS] = colours[r, c]
    if texture is not None:
        # levels sit TEXTURE above and below the extremes, so this uint8 arithmetic never wraps
        dy, dx = (index * 3) % height, (index * 5) % width
        frame -= TEXTURE
        frame += texture[dy: dy + height, dx: dx + width, None]
    return frame


def frame_signature(frame: np.ndarray) -> tuple[int, int]:
    """(seed, index) drawn into an RGB frame by `draw_frame`; ValueError if the frame carries none."""
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < ROWS or frame.shape[1] < COLS:
        raise ValueError(f"not an RGB frame: shape {frame.shape}")
    height, width = frame.shape[:2]
    value = 0
    for r in range(ROWS):
        for c in range(COLS):
            y0, y1 = (4 * r + 1) * height // (4 * ROWS), (4 * r + 3) * height // (4 * ROWS)
            x0, x1 = (4 * c + 1) * width // (4 * COLS), (4 * c + 3) * width // (4 * COLS)
            means = frame[y0: max(y1, y0 + 1), x0: max(x1, x0 + 1)].reshape(-1, 3).mean(axis=0)
            for m in means:
                value = (value << 1) | int(m >= (LOW + HIGH) / 2)
    magic, seed, index, crc = value >> 64, (value >> 40) & 0xFFFFFF, (value >> 16) & 0xFFFFFF, value & 0xFFFF
    if magic != MAGIC or crc != _crc16(seed, index):
        raise ValueError("no vidcap signature in this frame (wrong orientation, or not a synthetic frame)")
    return seed, index


def _vfr_times(count: int, fps: float, seed: int) -> list[Fraction]:
    """Irregular, strictly increasing frame times (s) averaging about 1/fps: steps of 0.5, 1 or 2.5 frames."""
    rng = np.random.default_rng(seed + 7)
    steps = rng.choice([0.5, 1.0, 2.5], size=count)
    times, t = [], Fraction(0)
    for step in steps:
        times.append(t)
        t += Fraction(round(1000 * step / fps), 1000)
    return times


def make_video(path: str | os.PathLike, *, seconds: float = 2.0, fps: int = 24, width: int = 320,
               height: int = 240, codec: str = "libx264", vfr: bool = False, rotate: int | None = None,
               seed: int = 0, gop: int | None = None, faststart: bool = False) -> Path:
    """Encode a video whose frame i shows the signature (seed, i); the container follows the extension.

    `width` x `height` is the size as displayed. With `rotate` (90, 180, 270: degrees a player turns the
    picture clockwise, like a phone's "rotate" tag) the frames are stored turned the other way and the
    display matrix says how to turn them back, as a phone does. `vfr` gives irregular frame times (steps of
    half a frame to 2.5 frames, millisecond time base). `gop` is the keyframe interval in frames.
    """
    path = Path(path)
    count = max(1, round(seconds * fps))
    turns = (rotate or 0) // 90 % 4
    if rotate is not None and rotate % 90:
        raise ValueError("rotate must be a multiple of 90")
    if width % 2 or height % 2:
        raise ValueError("width and height must be even (4:2:0 chroma)")
    stored_w, stored_h = (height, width) if turns % 2 else (width, height)
    import av

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, "yuv420p"
        if vfr:
            stream.codec_context.time_base = Fraction(1, 1000)
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.codec_context.options = {"preset": "veryfast", "crf": "23"}
        elif codec == "libsvtav1":
            stream.codec_context.options = {"preset": "11"}
        elif codec == "libvpx-vp9":
            stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8"}
        if turns:
            stream.set_display_rotation(-90 * turns)
        texture = _texture(height, width, seed)
        times = _vfr_times(count, fps, seed) if vfr else None
        for i in range(count):
            picture = np.ascontiguousarray(np.rot90(draw_frame(height, width, seed, i, texture), k=turns))
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = int(times[i] * 1000), Fraction(1, 1000)
            else:
                frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_image(path: str | os.PathLike, width: int = 320, height: int = 240, seed: int = 0) -> Path:
    """An image (format from the extension) showing the signature (seed, 0)."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(draw_frame(height, width, seed, 0, _texture(height, width, seed))).save(path)
    return path


def _make_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        t = np.arange(16000, dtype=np.float32) / 16000
        samples = (0.2 * np.sin(2 * math.pi * 440 * t)).astype(np.float32)
        for start in range(0, samples.size, 1024):
            chunk = samples[start: start + 1024][None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_broken(path: str | os.PathLike, kind: str) -> Path:
    """A file that cannot give its frames, of one of `BROKEN_KINDS`:

    empty (0 bytes); truncated (a faststart MP4 cut at 60%: it still opens, its tail is gone); text (prose
    in a file named as the caller chose); audio_only (an MP4 with one AAC stream); corrupt_middle (the
    middle third of a 3 s video overwritten with random bytes); missing (only makes sure nothing is there).
    """
    path = Path(path)
    if kind == "missing":
        path.unlink(missing_ok=True)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("This is not a video, only text with a video's name.\n" * 20)
    elif kind == "audio_only":
        _make_audio_only(path)
    elif kind == "truncated":
        make_video(path, seconds=2.0, seed=101, faststart=True)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 6 // 10])
    elif kind == "corrupt_middle":
        make_video(path, seconds=3.0, seed=102, gop=12)
        data = bytearray(path.read_bytes())
        start, stop = len(data) // 3, 2 * len(data) // 3
        data[start:stop] = np.random.default_rng(102).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
    else:
        raise ValueError(f"unknown broken kind {kind!r}; expected one of {', '.join(BROKEN_KINDS)}")
    return path
