"""How a run's model saw each video, read from the run's frozen config.

This is the only gallery code that knows the config's layout (vidcap.tasks.spec.TaskSpec, which also
reads run folders from before tasks): when the run config changes shape, only `frame_plan_of` and
`paths_of` change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FramePlan:
    """K evenly spaced frames, short side resized to `resize` (None: as decoded), read with `backend`;
    `reader` ("module:function") is a task's own frame reader in place of vidcap.frames.read_frames."""

    num_frames: int = 3
    resize: int | None = 336
    backend: str = "pyav"
    reader: str = ""
    origin: str = "defaults"  # where the settings came from, shown on the page

    def describe(self) -> str:
        size = f"short side {self.resize} px" if self.resize else "full size"
        how = f", read by {self.reader}" if self.reader else ""
        return f"{self.num_frames} frame(s) per video, {size}, {self.backend}{how} ({self.origin})"


def _spec(config: dict[str, Any]):  # noqa: ANN202 - TaskSpec, imported lazily (it loads the registries)
    if "task" not in config and "job" not in config:
        return None
    from vidcap.tasks.spec import TaskSpec

    return TaskSpec.from_config(config)


def frame_plan_of(config: dict[str, Any]) -> FramePlan | None:
    """The frame sampling frozen in a run config; None when the run has no task yet or its task reads
    no frames (a text task such as tags: the gallery then shows frames by the defaults)."""
    spec = _spec(config)
    if spec is None:
        return None
    plan = spec.make_task().frame_plan()
    if plan is None:
        return None
    return FramePlan(num_frames=plan.num_frames, resize=plan.resize, backend=spec.source.backend,
                     reader=plan.reader, origin=f"the run's {spec.task} task")


@dataclass(frozen=True)
class PathRules:
    """Which column holds the media path, and where relative paths start."""

    column: str
    root: Path

    def resolve(self, value: str) -> str:
        return value if os.path.isabs(value) else os.path.join(self.root, value)  # os.path: 10x pathlib


def paths_of(config: dict[str, Any]) -> PathRules:
    """Path column and root of relative paths of a run (as its frame source resolves them)."""
    spec = _spec(config)
    data_root, column = (spec.source.data_root, spec.source.path_column) if spec else ("", "path")
    return PathRules(column=column, root=Path(data_root or Path(config["manifest"]["path"]).parent))
