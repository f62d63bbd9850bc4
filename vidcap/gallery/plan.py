"""How a run's model saw each video, read from the run's frozen config.

This is the only gallery code that knows the config's layout: when the run config changes shape, only
`frame_plan_of` and `paths_of` change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FramePlan:
    """K evenly spaced frames, short side resized to `resize` (None: as decoded), read with `backend`."""

    num_frames: int = 3
    resize: int | None = 336
    backend: str = "pyav"
    origin: str = "defaults"  # where the settings came from, shown on the page

    def describe(self) -> str:
        size = f"short side {self.resize} px" if self.resize else "full size"
        return f"{self.num_frames} frame(s) per video, {size}, {self.backend} ({self.origin})"


def frame_plan_of(config: dict[str, Any]) -> FramePlan | None:
    """The frame sampling frozen in a run config, or None when the run has no job yet."""
    job = config.get("job")
    if not job:
        return None
    resize = job.get("resize")
    return FramePlan(num_frames=int(job.get("num_frames", 3)), resize=int(resize) if resize else None,
                     backend=str(job.get("backend", "pyav")), origin="the run's config")


@dataclass(frozen=True)
class PathRules:
    """Which column holds the media path, and where relative paths start."""

    column: str
    root: Path

    def resolve(self, value: str) -> str:
        path = Path(value)
        return str(path if path.is_absolute() else self.root / path)


def paths_of(config: dict[str, Any]) -> PathRules:
    """Path column and root of relative paths of a run (as its worker resolves them)."""
    job = config.get("job") or {}
    root = job.get("data_root") or str(Path(config["manifest"]["path"]).parent)
    return PathRules(column=str(job.get("path_column", "path")), root=Path(root))
