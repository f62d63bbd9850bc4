"""Open-Sora's first camera-motion method, re-implemented as the baseline for bench/motion.py.

Faithful to tools/caption/camera_motion_detect.py (Open-Sora, "ref: antiboredom/camera-motion-detector"):
grey frames 0, 15, 30, ... at full resolution; Farneback flow (0.5, 3, 15, 3, 5, 1.2, 0) from frame 0 to
each of them -- its bug: `prvs` is set once, at frame 0, and never moves on; per frame the median flow
magnitude and angle and the share of pixels moving away from the centre give one of static / zoom in /
zoom out / pan left / tilt up / pan right / tilt down; the video takes the majority, or unknown, pan/tilt,
dynamic. Two changes, both in its favour for speed, none for accuracy: frames come from one straight PyAV
decode instead of an OpenCV seek per sampled frame, and the pixel grid is built with numpy instead of a
Python double loop over every pixel.
"""

from __future__ import annotations

import av
import cv2
import numpy as np

#: Open-Sora's words -> the 8 categories. Its "unknown" and a video with no second frame (None) count as
#: unclassified (generous: they are its way of not deciding); "pan/tilt" and "dynamic" match nothing.
TO_CATEGORY = {"static": "static", "zoom out": "zoom_out", "zoom in": "zoom_in", "pan left": "pan_left",
               "tilt up": "tilt_up", "pan right": "pan_right", "tilt down": "tilt_down", "unknown": "unclassified",
               None: "unclassified"}


def get_type(mag: float, ang: float, zoom_in: float, tau_static: float = 1.0, tau_zoom=(0.4, 0.6)) -> str:
    if mag < tau_static:
        return "static"
    if zoom_in < tau_zoom[0]:
        return "zoom out"
    if zoom_in > tau_zoom[1]:
        return "zoom in"
    if ang < 45 or ang >= 315:
        return "pan left"
    if 45 <= ang < 135:
        return "tilt up"
    if 135 <= ang < 225:
        return "pan right"
    if 225 <= ang < 315:
        return "tilt down"
    return "unknown"


def get_video_type(frame_types: list[str]) -> str | None:
    counts: dict[str, int] = {}
    max_count, max_type = 0, None
    for frame_type in frame_types:
        counts[frame_type] = counts.get(frame_type, 0) + 1
        if counts[frame_type] > max_count:
            max_count, max_type = counts[frame_type], frame_type
    if max_count > len(frame_types) / 2:
        return max_type
    if "static" in counts:
        return "unknown"
    if "zoom in" not in counts and "zoom out" not in counts:
        return "pan/tilt"
    return "dynamic"


def grey_frames(path: str, frame_interval: int = 15):
    """Frames 0, 15, 30, ... as grey uint8, decoded straight through with PyAV (one thread)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(container.decode(stream)):
            if index % frame_interval == 0:
                yield frame.to_ndarray(format="gray")


def process(path: str, frame_interval: int = 15, fixed: bool = False) -> str | None:
    """Open-Sora's label for one video (its own words; see TO_CATEGORY). `fixed` moves `prvs` on to each
    sampled frame (what the code meant to do), for comparison only: the baseline is the bug as shipped."""
    prvs = None
    frame_types = []
    for frame in grey_frames(path, frame_interval):
        if prvs is None:
            prvs = frame
            h, w = frame.shape
            ys, xs = np.mgrid[0:h, 0:w]
            empty = np.stack([xs, ys], axis=-1)
            empty_dists = np.sqrt(np.square(xs.ravel() - (w / 2)) + np.square(ys.ravel() - (h / 2)))
            continue
        flow = cv2.calcOpticalFlowFarneback(prvs, frame, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
        mean_mag = np.median(mag)
        mean_ang = np.median(ang)
        flow_coords = flow + empty
        xvals = flow_coords.ravel()[::2] - (w / 2)
        yvals = flow_coords.ravel()[1::2] - (h / 2)
        dists = np.sqrt(np.square(xvals) + np.square(yvals))
        dist_diff = dists >= empty_dists
        zoom_in_factor = np.count_nonzero(dist_diff) / len(dist_diff)
        frame_types.append(get_type(mean_mag, mean_ang, zoom_in_factor))
        if fixed:
            prvs = frame
    return get_video_type(frame_types)


def baseline_label(path: str) -> str:
    """Open-Sora's answer in the 8 categories (or its own word when it has no category: pan/tilt, dynamic)."""
    word = process(path)
    return TO_CATEGORY.get(word, word or "unclassified")


def fixed_label(path: str) -> str:
    """The same with the frame-0 bug fixed (each sampled frame against the previous one)."""
    word = process(path, fixed=True)
    return TO_CATEGORY.get(word, word or "unclassified")
