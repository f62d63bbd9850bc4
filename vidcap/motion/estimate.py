"""Camera motion from first to last frame, chained through the frames between, with OpenCV.

Why this shape: the first and last frames alone often share too little (a fast pan leaves the picture), and
Open-Sora's first method measured every frame against frame 0 with dense flow, which breaks as soon as the
camera has moved far. Here each step k -> k+1 between consecutive frames of the plan is small enough to
track, and the steps compose:

1. Corners (`goodFeaturesToTrack`) of frame k are tracked into frame k+1 with pyramidal Lucas-Kanade and
   back again; a point whose round trip misses its start by more than `max_fb_error` pixels is dropped.
2. A similarity (translation, rotation, uniform scale) is fitted to the survivors with RANSAC
   (`estimateAffinePartial2D`), so foreground objects moving over a still background are outliers, not a
   pan. When many points disagree, RANSAC runs again on them, and the camera's motion is the candidate
   whose points spread widest, not merely the one with the most corners: a textured object over a flat
   sky can hold more corners than the background, but the background surrounds it.
3. Frame k warped by that similarity must look like frame k+1 (normalised correlation over the overlap at
   least `min_correlation`); otherwise the step crossed a scene cut.
4. The steps compose into the first -> last similarity A; dx, dy = A(c) - c for the frame centre c, over
   the short side; zoom = A's scale. `vidcap.motion.labels.motion_label` turns them into a label.

Unclassified (numbers left empty, reason said): fewer than `min_frames` frames, a blank frame (almost
uniform: black, white, a flat fade), fewer than `min_points` RANSAC inliers in a step, or a scene cut.

`points` is the fewest inliers of any step (the weakest link); `confidence` is the smallest share, over the
steps, of detected corners that were tracked both ways and agreed with the camera motion (1.0: all of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from vidcap.motion.labels import DEFAULT_THRESHOLD, UNCLASSIFIED, motion_label


@dataclass(frozen=True)
class MotionSettings:
    """How frames are taken and tracked; identity settings of a motion run (they change the numbers)."""

    steps: int = 12  # frame pairs between first and last (the plan reads steps + 1 frames)
    short_side: int = 240  # frames are tracked at this short side (pixels), smaller ones as they are
    min_frames: int = 5  # fewer frames in the video: unclassified (too short to show a camera motion)
    max_points: int = 400  # corners detected per step
    min_points: int = 12  # fewer RANSAC inliers in a step: unclassified
    max_fb_error: float = 1.0  # pixels a forward-backward round trip may miss by
    ransac_px: float = 1.5  # RANSAC reprojection threshold in pixels
    min_correlation: float = 0.3  # warped frame k vs frame k+1 below this: a scene cut
    blank_std: float = 3.0  # a frame whose grey levels vary less than this is blank

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.short_side < 32:
            raise ValueError(f"short_side must be at least 32 pixels, got {self.short_side}")
        if self.min_frames < 2:
            raise ValueError(f"min_frames must be at least 2, got {self.min_frames}")
        if self.min_points < 3 or self.max_points < self.min_points:
            raise ValueError("need 3 <= min_points <= max_points")

    @property
    def num_frames(self) -> int:
        """Frames the plan takes from first to last."""
        return self.steps + 1


@dataclass
class Motion:
    """What was measured for one video: the numbers (None when unclassified) and the label at a threshold."""

    label: str
    dx: float | None = None
    dy: float | None = None
    zoom: float | None = None
    points: int = 0
    confidence: float = 0.0
    reason: str = ""  # why unclassified; empty otherwise
    steps: list[dict[str, float]] = field(default_factory=list, repr=False)  # per step, for debugging

    def relabel(self, threshold: float) -> str:
        return motion_label(self.dx, self.dy, self.zoom, threshold)


class _Unclassified(Exception):
    pass


def estimate_motion(frames: Sequence[np.ndarray], settings: MotionSettings = MotionSettings(),
                    threshold: float = DEFAULT_THRESHOLD, frame_count: int | None = None) -> Motion:
    """The camera motion over `frames` (RGB or grey uint8, first to last, time order), labelled at `threshold`.

    `frame_count` is how many frames the video has (default: `len(frames)`, every frame given).
    """
    count = len(frames) if frame_count is None else frame_count
    if count < settings.min_frames or len(frames) < 2:
        return Motion(UNCLASSIFIED, reason=f"too few frames: {count} < {settings.min_frames}")
    greys = [_grey(frame, settings.short_side) for frame in frames]
    for index, grey in enumerate(greys):
        if float(grey.std()) < settings.blank_std:
            return Motion(UNCLASSIFIED, reason=f"blank frame: sampled frame {index + 1} of {len(greys)}")
    total = np.eye(3)
    points, confidence, steps = 1 << 30, 1.0, []
    try:
        for k in range(len(greys) - 1):
            matrix, inliers, share, correlation = _step(greys[k], greys[k + 1], settings, k)
            total = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ total
            points, confidence = min(points, inliers), min(confidence, share)
            steps.append({"inliers": inliers, "share": share, "correlation": correlation})
    except _Unclassified as exc:
        return Motion(UNCLASSIFIED, reason=str(exc), steps=steps)
    height, width = greys[0].shape
    short = min(height, width)
    centre = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    dx, dy = (total @ centre)[:2] - centre[:2]
    zoom = math.sqrt(abs(float(np.linalg.det(total[:2, :2]))))
    dx, dy = float(dx) / short, float(dy) / short
    return Motion(motion_label(dx, dy, zoom, threshold), dx=dx, dy=dy, zoom=zoom, points=int(points),
                  confidence=float(confidence), steps=steps)


def _grey(frame: np.ndarray, short_side: int) -> np.ndarray:
    """Grey uint8 at most `short_side` on its short side (INTER_AREA: no aliasing to track)."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    height, width = grey.shape
    short = min(height, width)
    if short > short_side:
        size = (max(1, round(width * short_side / short)), max(1, round(height * short_side / short)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(grey)


_LK = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))


def _step(a: np.ndarray, b: np.ndarray, settings: MotionSettings, k: int) -> tuple[np.ndarray, int, float, float]:
    """Similarity a -> b (2x3), its inlier count, the share of corners that agreed, and the warp correlation."""
    if a.shape != b.shape:
        raise _Unclassified(f"frame size changed at step {k}")
    short = min(a.shape)
    corners = cv2.goodFeaturesToTrack(a, maxCorners=settings.max_points, qualityLevel=0.003,
                                      minDistance=max(3, short // 40), blockSize=7)
    detected = 0 if corners is None else len(corners)
    if detected < settings.min_points:
        raise _Unclassified(f"too few points: {detected} corners at step {k}")
    forward, status, _ = cv2.calcOpticalFlowPyrLK(a, b, corners, None, **_LK)
    back, status_back, _ = cv2.calcOpticalFlowPyrLK(b, a, forward, None, **_LK)
    error = np.linalg.norm((back - corners).reshape(-1, 2), axis=1)
    good = (status.ravel() == 1) & (status_back.ravel() == 1) & (error < settings.max_fb_error)
    if int(good.sum()) < settings.min_points:
        raise _Unclassified(f"too few points: {int(good.sum())} tracked at step {k}")
    matrix, inliers, correlation = _camera_model(a, b, corners[good], forward[good], settings, k)
    if correlation < settings.min_correlation:
        raise _Unclassified(f"scene cut at step {k} (correlation {correlation:.2f})")
    return matrix, inliers, inliers / detected, correlation


def _camera_model(a: np.ndarray, b: np.ndarray, start: np.ndarray, end: np.ndarray, settings: MotionSettings,
                  k: int) -> tuple[np.ndarray, int, float]:
    """The similarity that is the camera's, its inlier count and warp correlation.

    RANSAC's largest consensus is not always the camera: a large textured object over a flat background
    (sky, wall) can hold more corners than the background. So when the first model leaves more than
    `_SECOND_LOOK` of the points out, RANSAC runs again on those left out (up to `_CANDIDATES` models).
    Among the candidates with at least `_CLOSE` of the best one's inliers, the camera is the one whose
    inliers spread widest (convex hull area): the background surrounds objects; an object is compact.
    """
    left = np.arange(len(start))
    candidates: list[tuple[np.ndarray, np.ndarray]] = []
    while len(candidates) < _CANDIDATES and len(left) >= settings.min_points:
        matrix, mask = cv2.estimateAffinePartial2D(start[left], end[left], method=cv2.RANSAC,
                                                   ransacReprojThreshold=settings.ransac_px,
                                                   maxIters=2000, confidence=0.995, refineIters=10)
        if matrix is None or mask is None or int(mask.sum()) < settings.min_points:
            break
        candidates.append((matrix, left[mask.ravel() == 1]))
        left = left[mask.ravel() == 0]
        if len(candidates) == 1 and len(left) <= _SECOND_LOOK * len(start):
            break
    if not candidates:
        raise _Unclassified(f"too few points: fewer than {settings.min_points} agree at step {k}")
    most = max(len(members) for _, members in candidates)
    close = [c for c in candidates if len(c[1]) >= _CLOSE * most]
    matrix, members = max(close, key=lambda c: cv2.contourArea(cv2.convexHull(start[c[1]].reshape(-1, 2))))
    return matrix, len(members), _warp_correlation(a, b, matrix)


_CANDIDATES = 3
_SECOND_LOOK = 0.2
_CLOSE = 0.5


def _warp_correlation(a: np.ndarray, b: np.ndarray, matrix: np.ndarray) -> float:
    """Normalised correlation of `a` warped onto `b` with `b`, over the pixels both see (at half size)."""
    half = np.array([[0.5, 0, 0], [0, 0.5, 0]]) @ np.vstack([matrix, [0, 0, 1]]) @ np.diag([2.0, 2.0, 1.0])
    small_a = cv2.pyrDown(a)
    small_b = cv2.pyrDown(b)
    height, width = small_b.shape
    warped = cv2.warpAffine(small_a, half, (width, height), flags=cv2.INTER_LINEAR)
    seen = cv2.warpAffine(np.full_like(small_a, 255), half, (width, height), flags=cv2.INTER_NEAREST)
    mask = cv2.erode(seen, np.ones((3, 3), np.uint8)) > 0
    if int(mask.sum()) < 64:
        return 0.0
    x = warped[mask].astype(np.float32)
    y = small_b[mask].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else 0.0
