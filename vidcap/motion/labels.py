"""From measured numbers to an Open-Sora camera-motion label: a pure function, so a run can be re-thresholded.

The numbers describe how the scene moved in the picture from the first frame to the last:

- `dx`, `dy`: displacement of the content that was at the centre of the first frame, in the last frame,
  as fractions of the frame's short side (x to the right, y downwards, as in image coordinates);
- `zoom`: the scale factor of the content (2.0: everything looks twice as large at the end).

With threshold T (default 0.25, Open-Sora's), the label is built from three independent parts:

    pan:  dx < -T  -> pan_right      (the content moves left: the camera pans right)
          dx >  T  -> pan_left
    tilt: dy >  T  -> tilt_up        (the content moves down: the camera tilts up)
          dy < -T  -> tilt_down
    zoom: (zoom - 1) / 2 > T      -> zoom_in    (a point on the edge of the short side moves outwards
          (1 / zoom - 1) / 2 > T  -> zoom_out    by more than T of the short side, measured in the
                                                 larger of the two pictures)

The parts that pass are joined with "+" in the fixed order pan, tilt, zoom (`pan_left+zoom_in`); none
passing is `static`. Missing numbers (the estimator could not measure honestly) are `unclassified`.
At T = 0.25 a zoom counts from a factor of 1.5 (in) or 1/1.5 (out).
"""

from __future__ import annotations

import math

DEFAULT_THRESHOLD = 0.25
STATIC = "static"
UNCLASSIFIED = "unclassified"
#: The 8 Open-Sora categories; a label is one of the last two or a "+"-joined combination of the others.
CATEGORIES = ("pan_right", "pan_left", "tilt_up", "tilt_down", "zoom_in", "zoom_out", STATIC, UNCLASSIFIED)


def motion_label(dx: float | None, dy: float | None, zoom: float | None,
                 threshold: float = DEFAULT_THRESHOLD) -> str:
    """The label for measured numbers at `threshold` (see the module docstring for the formula)."""
    check_threshold(threshold)
    if not all(_finite(v) for v in (dx, dy, zoom)) or zoom <= 0:  # type: ignore[operator]
        return UNCLASSIFIED
    parts = []
    if dx < -threshold:  # type: ignore[operator]
        parts.append("pan_right")
    elif dx > threshold:  # type: ignore[operator]
        parts.append("pan_left")
    if dy > threshold:  # type: ignore[operator]
        parts.append("tilt_up")
    elif dy < -threshold:  # type: ignore[operator]
        parts.append("tilt_down")
    if (zoom - 1) / 2 > threshold:  # type: ignore[operator]
        parts.append("zoom_in")
    elif (1 / zoom - 1) / 2 > threshold:  # type: ignore[operator]
        parts.append("zoom_out")
    return "+".join(parts) or STATIC


def check_threshold(threshold: float) -> None:
    """ValueError unless the threshold is a positive finite fraction of the short side."""
    if not (_finite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive number (fraction of the short side), got {threshold!r}")


def label_parts(label: str) -> list[str]:
    """The categories a label is made of (`pan_left+zoom_in` -> ["pan_left", "zoom_in"])."""
    return label.split("+") if label else []


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
