"""Camera motion: Open-Sora's 8 labels (pan_left/right, tilt_up/down, zoom_in/out, static, unclassified), on CPU.

Rooms: `labels` (numbers + threshold -> label, the documented formula), `estimate` (frames -> numbers,
OpenCV tracking), `video` (a file -> frames through vidcap's readers -> numbers), `relabel` (re-threshold
a finished output without rerunning). Clips of known motion for tests and bench/motion.py:
vidcap.fixtures.motion_clips. The run task and engine: vidcap.tasks.motion, vidcap.engines.motion.
"""

from vidcap.motion.estimate import Motion, MotionSettings, estimate_motion
from vidcap.motion.labels import CATEGORIES, DEFAULT_THRESHOLD, STATIC, UNCLASSIFIED, motion_label
from vidcap.motion.video import measure_video, motion_of, read_motion_frames

__all__ = ["CATEGORIES", "DEFAULT_THRESHOLD", "STATIC", "UNCLASSIFIED", "Motion", "MotionSettings",
           "estimate_motion", "measure_video", "motion_label", "motion_of", "read_motion_frames"]
