"""Captions: K evenly spaced frames of each video (an image's one frame) -> a VLM -> the `text` column.

Every caption is checked as it is turned into its row, whatever the engine (vidcap.checks: empty, loop,
truncated, prompt_echo, wrong_medium, too_short, not_language); the flags go into the `flags` list column.
`on_flag` says what a flag does: "keep" (the row stays ok and carries its flags) or "retry" (the row is an
error, reason `flagged: loop`, that `vidcap resume` retries up to --max-attempts; it keeps its text and flags).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidcap.checks import CaptionChecker, CheckContext, CheckSettings
from vidcap.engines.base import FRAMES, Result, Sample
from vidcap.errors import UserError
from vidcap.schema import lazy_schema
from vidcap.settings import operational
from vidcap.tasks.base import AnswerError, FramePlan, Task

ON_FLAG = ("keep", "retry")


@dataclass(frozen=True)
class CaptionSettings:
    prompt_name: str = "video"  # the preset the prompt came from (vidcap.prompts), or "file"
    prompt: str = ""
    num_frames: int = 3
    resize: int | None = 336  # short side in pixels; None keeps the source size
    is_video: bool = True  # the prompt was chosen (and is checked) for videos, else for images
    checks: CheckSettings = field(default_factory=CheckSettings)  # which caption checks, their thresholds
    on_flag: str = operational("keep")  # what a flag does to the row: keep (ok, flagged) or retry (error)

    def __post_init__(self) -> None:
        FramePlan(self.num_frames, self.resize)  # refuses a bad number of frames or size
        if isinstance(self.checks, dict):  # as stored in RUN/config.json
            object.__setattr__(self, "checks", CheckSettings.from_dict(self.checks))
        if self.on_flag not in ON_FLAG:
            raise UserError(f"--on-flag must be one of {', '.join(ON_FLAG)}, got {self.on_flag!r}")


class CaptionTask(Task):
    name = "caption"
    source = FRAMES
    columns = lazy_schema(lambda pa: pa.schema([("text", pa.string()), ("flags", pa.list_(pa.string()))]))
    error_values = {"text": "", "flags": []}
    engines = ("hf", "pllava", "openai", "noop")
    Settings = CaptionSettings

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        self.checker = CaptionChecker(self.settings.checks)

    def frame_plan(self) -> FramePlan:
        return FramePlan(self.settings.num_frames, self.settings.resize)

    def values(self, sample: Sample, result: Result) -> dict[str, Any]:
        context = CheckContext(prompt=sample.prompt, is_video=sample.is_video, finish_reason=result.finish_reason)
        flags = self.checker.flags(result.text, context)
        values = {"text": result.text, "flags": flags}
        if flags and self.settings.on_flag == "retry":
            raise AnswerError(f"flagged: {', '.join(flags)}", values=values)
        return values
