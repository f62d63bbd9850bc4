"""Captions: K evenly spaced frames of each video (an image's one frame) -> a VLM -> the `text` column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vidcap.engines.base import FRAMES, Result, Sample
from vidcap.tasks.base import FramePlan, Task


@dataclass(frozen=True)
class CaptionSettings:
    prompt_name: str = "video"  # the preset the prompt came from (vidcap.prompts), or "file"
    prompt: str = ""
    num_frames: int = 3
    resize: int | None = 336  # short side in pixels; None keeps the source size
    is_video: bool = True  # the prompt was chosen (and is checked) for videos, else for images

    def __post_init__(self) -> None:
        FramePlan(self.num_frames, self.resize)  # refuses a bad number of frames or size


class CaptionTask(Task):
    name = "caption"
    source = FRAMES
    columns = pa.schema([("text", pa.string())])
    error_values = {"text": ""}
    engines = ("hf", "openai", "noop")
    Settings = CaptionSettings

    def frame_plan(self) -> FramePlan:
        return FramePlan(self.settings.num_frames, self.settings.resize)

    def values(self, sample: Sample, result: Result) -> dict[str, Any]:
        return {"text": result.text}
