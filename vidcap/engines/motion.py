"""The camera-motion engine: frames first -> last of each sample -> motion numbers, with OpenCV on a CPU.

It measures and does not label: the task applies its threshold (vidcap.tasks.motion). A sample that is an
image, too short, blank, cut or too flat to track gets numbers of None and a reason (the task labels it
`unclassified`); an OpenCV failure on one sample is that sample's error, never the batch's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Sequence

from vidcap.engines.base import FRAMES, Engine, Needs, Result, Sample
from vidcap.errors import UserError

if TYPE_CHECKING:
    from vidcap.tasks.spec import TaskSpec


@dataclass(frozen=True)
class MotionEngineSettings:
    """The estimator's tuning (see vidcap.motion.estimate.MotionSettings); identity settings: they change the
    numbers. How many frames and at what size comes from the task's frame plan."""

    min_frames: int = 5
    max_points: int = 400
    min_points: int = 12
    max_fb_error: float = 1.0
    ransac_px: float = 1.5
    min_correlation: float = 0.3
    blank_std: float = 3.0


class MotionEngine(Engine):
    name = "motion"
    accepts = frozenset({FRAMES})
    Settings = MotionEngineSettings

    @classmethod
    def needs(cls, settings: Any) -> Needs:
        return Needs(ranks=1, gpus_per_rank=0, cpus=1)

    @classmethod
    def preflight(cls, settings: Any, spec: "TaskSpec | None" = None) -> None:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise UserError("the motion engine needs OpenCV: pip install 'vidcap[motion]'") from None
        cls._estimator_settings(settings, spec)

    def open(self, spec: "TaskSpec | None" = None) -> None:
        import cv2

        cv2.setNumThreads(1)  # one shard task, one core: parallelism comes from shards
        self.motion_settings = self._estimator_settings(self.settings, spec)
        self.measured = self.unclassified = 0

    @staticmethod
    def _estimator_settings(settings: MotionEngineSettings, spec: "TaskSpec | None") -> Any:
        from vidcap.motion.estimate import MotionSettings

        task = getattr(spec, "settings", None)
        plan = {"steps": task.steps, "short_side": task.short_side} if hasattr(task, "steps") else {}
        try:
            return MotionSettings(**plan, **{f.name: getattr(settings, f.name) for f in fields(settings)})
        except ValueError as exc:
            raise UserError(f"motion engine settings: {exc}") from None

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        import cv2

        from vidcap.motion.estimate import estimate_motion

        results = []
        for sample in samples:
            if not sample.is_video or not sample.frames:
                results.append(_numbers(None, None, None, 0, 0.0, "an image, not a video"))
                self.unclassified += 1
                continue
            try:
                motion = estimate_motion(sample.frames, self.motion_settings)
            except cv2.error as exc:
                results.append(Result(error=" ".join(f"OpenCV failed: {exc}".split())[:300]))
                continue
            self.measured += motion.dx is not None
            self.unclassified += motion.dx is None
            results.append(_numbers(motion.dx, motion.dy, motion.zoom, motion.points, motion.confidence,
                                    motion.reason))
        return results

    def figures(self) -> dict[str, Any]:
        return {"motion_measured": getattr(self, "measured", 0),
                "motion_unclassified": getattr(self, "unclassified", 0)}


def _numbers(dx: float | None, dy: float | None, zoom: float | None, points: int, confidence: float,
             reason: str) -> Result:
    return Result(values={"dx": dx, "dy": dy, "zoom": zoom, "points": points, "confidence": confidence,
                          "reason": reason}, finish_reason="stop")
