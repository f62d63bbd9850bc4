"""Clips whose camera motion is known: a camera window moving over a still scene, encoded for real with PyAV.

Test and benchmark fixture, self-contained (numpy, OpenCV for the warps, PyAV, scikit-image's photographs).
The scene is a real photograph shipped with scikit-image (astronaut, coffee, rocket, ...) or a procedural
texture, extended by mirroring where the camera looks past its edge. The camera at time t in [0, 1]
looks at centre c(t) = -D u(t) / z(t) (+ handheld jitter) with zoom z(t) = zoom ** t, so the content that
was at the centre of the first frame sits at centre + D in the last one: `dx`, `dy` (D over the short side)
and `zoom` are exactly the numbers the estimator measures, and the true label is
`motion_label(dx, dy, zoom)`. On top: large foreground objects moving over a still camera, sensor noise,
compression (crf), a hard cut to another scene, black frames, very short clips, portrait shapes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from vidcap.motion.labels import DEFAULT_THRESHOLD, UNCLASSIFIED, motion_label

#: scikit-image's bundled photographs with enough texture to track (file names in skimage/data).
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "camera.png",
          "ihc.png", "coins.png", "brick.png", "gravel.png", "grass.png")


@dataclass(frozen=True)
class ClipSpec:
    """One generated clip and its true label at the default threshold."""

    name: str
    width: int = 320
    height: int = 180
    frames: int = 48
    fps: int = 24
    scene: str = "photo:astronaut.png"  # or "texture:<seed>"
    dx: float = 0.0  # content displacement first -> last, fraction of the short side (+: moves right)
    dy: float = 0.0  # (+: moves down)
    zoom: float = 1.0  # content scale first -> last (> 1: grows, zoom in)
    ease: bool = False  # smooth start and stop instead of constant speed
    jitter: float = 0.0  # handheld shake: std of the per-frame offset, fraction of the short side
    noise: float = 0.0  # sensor noise std, grey levels
    crf: int = 23
    gop: int | None = None  # keyframe interval (None: the encoder's default)
    objects: int = 0  # large textured foreground objects crossing the picture
    cut_at: float | None = None  # a hard cut to another scene at this fraction of the clip
    black: str = ""  # "start", "end" or "all": black frames there
    seed: int = 0

    @property
    def label(self) -> str:
        """The true label at the default threshold (what a perfect estimator answers)."""
        if self.cut_at is not None or self.black or self.frames < 5:
            return UNCLASSIFIED
        return motion_label(self.dx, self.dy, self.zoom, DEFAULT_THRESHOLD)

    @property
    def still(self) -> bool:
        """A camera that does not move past the threshold (the clips that must never be labelled moving)."""
        return self.label == "static"


def load_scene(scene: str) -> np.ndarray:
    """The RGB uint8 picture of a scene name: "photo:<file in skimage/data>" or "texture:<seed>"."""
    kind, _, value = scene.partition(":")
    if kind == "photo":
        from PIL import Image
        import skimage.data

        with Image.open(os.path.join(os.path.dirname(skimage.data.__file__), value)) as image:
            return np.array(image.convert("RGB"))
    if kind == "texture":
        return texture(int(value))
    raise ValueError(f"unknown scene {scene!r}: expected photo:<name> or texture:<seed>")


def texture(seed: int, size: int = 768) -> np.ndarray:
    """A procedural RGB scene: multi-scale noise with random shapes and lines (corners to track)."""
    rng = np.random.default_rng(seed)
    field = np.zeros((size, size, 3), np.float32)
    for cells in (4, 12, 40):
        coarse = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        field += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) * (60 / cells ** 0.3)
    image = np.clip(field + 128, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(60, 120))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(6, size // 10))
        shape = rng.integers(0, 3)
        if shape == 0:
            cv2.rectangle(image, (x, y), (x + r, y + int(rng.integers(6, size // 10))), colour, -1)
        elif shape == 1:
            cv2.circle(image, (x, y), r // 2, colour, -1)
        else:
            cv2.line(image, (x, y), (x + int(rng.integers(-r, r)), y + int(rng.integers(-r, r))), colour, 3)
    return image


class _Camera:
    """Where the camera looks in frame i, over a world picture that covers every view."""

    def __init__(self, spec: ClipSpec, scene: str, dx: float, dy: float, zoom: float, rng: np.random.Generator):
        self.spec, self.short = spec, min(spec.width, spec.height)
        self.shift = np.array([dx, dy]) * self.short
        self.zoom = zoom
        n = max(spec.frames, 1)
        shake = rng.normal(0, spec.jitter * self.short, (n, 3)) if spec.jitter else np.zeros((n, 3))
        if spec.jitter:  # handheld: a slow sway plus a little fast tremble; roll in degrees
            kernel = np.ones(5) / 5
            shake = np.stack([np.convolve(shake[:, j], kernel, mode="same") for j in range(3)], axis=1) * 1.5
            shake[:, 2] *= 20 / self.short
        self.shake = shake
        self.centres, self.zooms = [], []
        for i in range(n):
            t = i / (n - 1) if n > 1 else 0.0
            u = t * t * (3 - 2 * t) if spec.ease else t
            z = zoom ** t
            self.centres.append(-self.shift * u / z + shake[i, :2] / z)
            self.zooms.append(z)
        half = np.array([spec.width, spec.height]) / 2
        low = np.min([c - half / z for c, z in zip(self.centres, self.zooms)], axis=0) - 8
        high = np.max([c + half / z for c, z in zip(self.centres, self.zooms)], axis=0) + 8
        picture = load_scene(scene)
        # the picture fills the first view at about its own resolution, mirrored beyond its edges
        scale = max(spec.width / picture.shape[1], spec.height / picture.shape[0]) * 1.05 / min(1.0, zoom)
        picture = cv2.resize(picture, None, fx=scale, fy=scale,
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        ph, pw = picture.shape[:2]
        # world (0, 0) is the picture's centre; mirror the picture out to cover [low, high]
        left, top = (int(np.ceil(max(0.0, -v))) for v in low + np.array([pw / 2, ph / 2]))
        right, bottom = (int(np.ceil(max(0.0, v))) for v in high - np.array([pw / 2, ph / 2]))
        self.world = np.pad(picture, ((top, bottom), (left, right), (0, 0)), mode="symmetric")
        self.origin = np.array([pw / 2 + left, ph / 2 + top])

    def frame(self, i: int) -> np.ndarray:
        spec, z, (cx, cy) = self.spec, self.zooms[i], self.centres[i]
        fc = np.array([(spec.width - 1) / 2, (spec.height - 1) / 2])
        angle = np.deg2rad(self.shake[i, 2])
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / z
        offset = self.origin + np.array([cx, cy]) - rot @ fc
        matrix = np.hstack([rot, offset[:, None]])
        return cv2.warpAffine(self.world, matrix, (spec.width, spec.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


class _Objects:
    """Large textured shapes crossing a still picture, each on its own straight path."""

    def __init__(self, spec: ClipSpec, rng: np.random.Generator):
        self.spec, self.items = spec, []
        short = min(spec.width, spec.height)
        for k in range(spec.objects):
            w, h = (int(short * rng.uniform(0.35, 0.55)) for _ in range(2))
            patch = cv2.resize(texture(spec.seed * 31 + k + 7, 256), (w, h), interpolation=cv2.INTER_AREA)
            start = rng.uniform([-w / 2, -h / 2], [spec.width - w / 2, spec.height - h / 2])
            travel = rng.uniform(0.4, 0.9) * np.array([spec.width, spec.height]) * rng.choice([-1, 1], 2)
            if rng.random() < 0.5:
                travel[rng.integers(0, 2)] *= 0.1
            ellipse = rng.random() < 0.5
            mask = np.zeros((h, w), np.uint8)
            if ellipse:
                cv2.ellipse(mask, (w // 2, h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
            else:
                mask[:] = 1
            self.items.append((patch, mask.astype(bool), start, travel))

    def draw(self, frame: np.ndarray, i: int) -> np.ndarray:
        t = i / max(1, self.spec.frames - 1)
        height, width = frame.shape[:2]
        for patch, mask, start, travel in self.items:
            x, y = (int(round(v)) for v in start + travel * t)
            h, w = mask.shape
            x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
            if x1 <= x0 or y1 <= y0:
                continue
            sub = mask[y0 - y: y1 - y, x0 - x: x1 - x]
            frame[y0:y1, x0:x1][sub] = patch[y0 - y: y1 - y, x0 - x: x1 - x][sub]
        return frame


def render(spec: ClipSpec) -> Iterator[np.ndarray]:
    """The RGB uint8 frames of a clip, in order."""
    rng = np.random.default_rng(spec.seed)
    camera = _Camera(spec, spec.scene, spec.dx, spec.dy, spec.zoom, rng)
    objects = _Objects(spec, rng) if spec.objects else None
    cut = round(spec.cut_at * spec.frames) if spec.cut_at is not None else None
    other = None
    if cut is not None:  # the second shot: another scene, its own camera
        scene = f"texture:{spec.seed + 1000}" if spec.scene.startswith("photo") else f"photo:{PHOTOS[spec.seed % 5]}"
        other = _Camera(spec, scene, -spec.dy, spec.dx, 1.0, rng)
    black = max(1, spec.frames // 8)
    for i in range(spec.frames):
        frame = (other if cut is not None and i >= cut else camera).frame(i)  # type: ignore[union-attr]
        if objects is not None:
            frame = objects.draw(frame, i)
        if spec.noise:
            frame = np.clip(frame + rng.normal(0, spec.noise, frame.shape), 0, 255).astype(np.uint8)
        if (spec.black == "all" or (spec.black == "start" and i < black)
                or (spec.black == "end" and i >= spec.frames - black)):
            frame = np.zeros_like(frame)
        yield frame


def write_clip(spec: ClipSpec, path: str | os.PathLike) -> Path:
    """Encode the clip with PyAV (H.264 in the container the extension names) and return its path."""
    import av

    if spec.width % 2 or spec.height % 2:
        raise ValueError("width and height must be even (4:2:0 chroma)")
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(spec.fps))
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        options = {"crf": str(spec.crf), "preset": "veryfast"}
        if spec.gop:
            options["g"] = str(spec.gop)
        stream.options = options
        stream.codec_context.thread_count = 1
        for frame in render(spec):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def clip_set(count: int, *, seed: int = 0, size: tuple[int, int] = (320, 180), frames: int = 48,
             threshold: float = DEFAULT_THRESHOLD) -> list[ClipSpec]:
    """`count` clips covering every label: still cameras (with jitter, noise, foreground objects, slow drift
    below the threshold), pans (also under a foreground object), tilts, zooms in and out, their combinations, motion just above the
    threshold, scene cuts, black frames, very short clips; a third portrait, half over photographs.

    Speeds stay at least 30% away from the threshold on either side (0.7 T / 1.3 T), so a label is not
    decided by the encoder's noise.
    """
    rng = np.random.default_rng(seed)
    kinds = ["static", "static_objects", "drift", "pan", "tilt", "zoom", "pan_tilt", "pan_zoom", "tilt_zoom",
             "all3", "near", "cut", "black", "tiny", "short", "static_objects", "pan_objects"]
    t = threshold
    specs = []
    for n in range(count):
        kind = kinds[n % len(kinds)]
        width, height = size if n % 3 else size[::-1]
        scene = f"photo:{PHOTOS[int(rng.integers(len(PHOTOS)))]}" if n % 2 else f"texture:{int(rng.integers(1 << 20))}"

        def sign() -> float:
            return float(rng.choice([-1.0, 1.0]))

        def moving(low: float = 1.3, high: float = 3.0) -> float:
            return sign() * t * float(rng.uniform(low, high))

        def still(high: float = 0.5) -> float:
            return sign() * t * float(rng.uniform(0, high))

        def zooming(low: float = 1.3, high: float = 2.4) -> float:
            factor = 1 + 2 * t * float(rng.uniform(low, high))
            return factor if rng.random() < 0.5 else 1 / factor

        spec = ClipSpec(name=f"{n:04d}-{kind}", width=width, height=height, frames=frames, scene=scene,
                        seed=int(rng.integers(1 << 20)), crf=int(rng.choice([18, 23, 28, 33])),
                        jitter=float(rng.choice([0.0, 0.002, 0.005])), noise=float(rng.choice([0.0, 3.0, 6.0])),
                        ease=bool(rng.random() < 0.5))
        if kind == "static":
            spec = replace(spec, dx=still(0.2), dy=still(0.2))
        elif kind == "static_objects":
            spec = replace(spec, objects=int(rng.integers(1, 3)), jitter=0.0, dx=still(0.1), dy=still(0.1))
        elif kind == "pan_objects":
            spec = replace(spec, objects=1, dx=moving(1.3, 2.5), dy=still(0.3))
        elif kind == "drift":
            spec = replace(spec, dx=still(0.7), dy=still(0.7), zoom=1 + 2 * t * float(rng.uniform(-0.3, 0.6)))
        elif kind == "pan":
            spec = replace(spec, dx=moving(), dy=still(0.4))
        elif kind == "tilt":
            spec = replace(spec, dx=still(0.4), dy=moving())
        elif kind == "zoom":
            spec = replace(spec, zoom=zooming(), dx=still(0.3), dy=still(0.3))
        elif kind == "pan_tilt":
            spec = replace(spec, dx=moving(), dy=moving())
        elif kind == "pan_zoom":
            spec = replace(spec, dx=moving(1.3, 2.0), zoom=zooming(1.3, 1.8))
        elif kind == "tilt_zoom":
            spec = replace(spec, dy=moving(1.3, 2.0), zoom=zooming(1.3, 1.8))
        elif kind == "all3":
            spec = replace(spec, dx=moving(1.3, 2.0), dy=moving(1.3, 2.0), zoom=zooming(1.3, 1.6))
        elif kind == "near":
            spec = replace(spec, **({"dx": moving(1.3, 1.5)} if rng.random() < 0.5 else {"dy": moving(1.3, 1.5)}))
        elif kind == "cut":
            spec = replace(spec, dx=moving(0, 2.0), cut_at=float(rng.uniform(0.3, 0.7)))
        elif kind == "black":
            spec = replace(spec, dx=moving(0, 2.0), black=str(rng.choice(["start", "end", "all"])))
        elif kind == "tiny":
            spec = replace(spec, frames=int(rng.integers(1, 5)), dx=moving())
        elif kind == "short":
            spec = replace(spec, frames=int(rng.integers(8, 14)), dx=moving(), dy=still(0.4))
        specs.append(spec)
    return specs
