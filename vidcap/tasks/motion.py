"""Camera motion: frames first -> last of each video -> the motion engine's numbers -> `cmotion` and numbers.

The engine measures (vidcap.motion.estimate); this task labels, with its threshold, by the formula in
vidcap.motion.labels, so a finished output can be re-thresholded from its numbers (`vidcap motion-relabel`).
Columns: `cmotion` (Open-Sora's name), `cmotion_dx`, `cmotion_dy` (fractions of the short side),
`cmotion_zoom` (scale factor), `cmotion_points`, `cmotion_confidence`, `cmotion_reason` (why unclassified).
A video that cannot be read is an error row (status error, the reason in `error`, these columns empty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vidcap.engines.base import FRAMES, Result, Sample
from vidcap.errors import UserError
from vidcap.motion.labels import DEFAULT_THRESHOLD, UNCLASSIFIED, motion_label
from vidcap.motion.relabel import CONFIDENCE, DX, DY, LABEL, POINTS, REASON, ZOOM
from vidcap.tasks.base import AnswerError, FramePlan, Task

#: fewest frames a plan may take: the estimator calls a video of fewer than 5 frames unclassified, which
#: it can only tell from the frames it gets when the plan asks for at least that many
MIN_PLAN_FRAMES = 5


@dataclass(frozen=True)
class MotionTaskSettings:
    steps: int = 12  # frame pairs from the first frame to the last (the plan reads steps + 1 frames)
    short_side: int = 240  # frames are reduced to this short side (never enlarged) before tracking
    threshold: float = DEFAULT_THRESHOLD  # fraction of the short side; see vidcap.motion.labels

    def __post_init__(self) -> None:
        if self.steps + 1 < MIN_PLAN_FRAMES:
            raise UserError(f"--steps must be at least {MIN_PLAN_FRAMES - 1}, got {self.steps}")
        if self.short_side < 32:
            raise UserError(f"--short-side must be at least 32 pixels, got {self.short_side}")
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold > 0):
            raise UserError(f"--threshold must be a positive fraction of the short side, got {self.threshold}")


class MotionTask(Task):
    name = "motion"
    source = FRAMES
    columns = pa.schema([(LABEL, pa.string()), (DX, pa.float64()), (DY, pa.float64()), (ZOOM, pa.float64()),
                         (POINTS, pa.int64()), (CONFIDENCE, pa.float64()), (REASON, pa.string())])
    engines = ("motion",)
    Settings = MotionTaskSettings

    def frame_plan(self) -> FramePlan:
        return FramePlan(self.settings.steps + 1, self.settings.short_side, reader="vidcap.motion.video:read_span")

    def values(self, sample: Sample, result: Result) -> dict[str, Any]:
        got = result.values
        missing = [name for name in ("dx", "dy", "zoom", "points", "confidence", "reason") if name not in got]
        if missing:
            raise AnswerError(f"the engine gave no motion numbers ({', '.join(missing)} missing)")
        dx, dy, zoom = got["dx"], got["dy"], got["zoom"]
        label = motion_label(dx, dy, zoom, self.settings.threshold)
        return {LABEL: label, DX: dx, DY: dy, ZOOM: zoom, POINTS: int(got["points"]),
                CONFIDENCE: float(got["confidence"]), REASON: got["reason"] if label == UNCLASSIFIED else ""}
