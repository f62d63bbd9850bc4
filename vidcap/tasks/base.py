"""A task says what a run does: which source feeds the engine, which engines may serve it, and how an engine's
answer for one row becomes that row's output columns. The worker, scheduler, result store and reducers know
nothing else about it.

How to add a task (camera motion, tags, ...):
 1. Write `vidcap/tasks/<name>.py` with a frozen `Settings` dataclass (vidcap.settings: fields are identity
    settings unless made with `operational()`), and a `Task` subclass setting `name`, `source` ("frames" or
    "text"), `columns` (a pyarrow schema of its output columns; lists are `pa.list_(pa.string())`),
    `engines` (known to fit; the first is the default) and `Settings`.
 2. Frames tasks: return a `FramePlan` from `frame_plan()` (K evenly spaced; or your own reader function,
    "module:function" with read_frames' signature). Text tasks: return the column from `text_column()`.
 3. `prompt_for(sample)` gives the engine's prompt; `values(sample, result)` turns one `Result` into the
    row's column values, or raises `AnswerError("reason")` to make that row an error (e.g. unparsable tags;
    `AnswerError("reason", values={...})` keeps some columns on the error row, e.g. a flagged caption).
 4. Add `"<name>": "vidcap.tasks.<name>:<Class>"` to `TASKS` (vidcap/tasks/__init__.py). A new engine the
    same way: `vidcap/engines/<name>.py` (Engine subclass + Settings), one line in `ENGINES`.
 5. The command: `vidcap/commands/<name>.py` builds a `TaskSpec` and calls `commands.runflow.run_task`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from vidcap.engines.base import FRAMES, TEXT, Result, Sample
from vidcap.errors import UserError
from vidcap.schema import lazy_schema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["AnswerError", "FRAMES", "FramePlan", "TEXT", "Task"]


class AnswerError(Exception):
    """Raised by `Task.values`: this row's answer is unusable; the row becomes an `error` row with the reason.

    `values` are column values the error row keeps all the same (a caption flagged as a loop keeps its text and
    flags, so it can be looked at); the other columns get the task's `error_values`."""

    def __init__(self, reason: str, values: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.values = dict(values or {})


@dataclass(frozen=True)
class FramePlan:
    """Which frames a frames task wants from each video: `num_frames` evenly spaced (an image gives its one
    frame), short side resized to `resize` (None: kept). `reader`, "module:function", replaces
    vidcap.frames.read_frames (same signature; it runs in the prefetch processes) for other plans."""

    num_frames: int = 3
    resize: int | None = 336
    reader: str = ""

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise UserError("the number of frames must be at least 1")
        if self.resize is not None and self.resize < 1:
            raise UserError(f"resize must be a positive short side in pixels, got {self.resize}")


class Task(abc.ABC):
    """Base class of every task. Subclasses are small: declarations plus `values`."""

    #: registry name ("caption", "motion", "tag"), also the name stored in RUN/config.json
    name: ClassVar[str] = ""
    #: the source kind it reads: "frames" (videos and images, through the prefetch process) or "text"
    source: ClassVar[str] = FRAMES
    #: its output columns, besides the store's own (key, status, error, seconds, tokens)
    columns: ClassVar[pa.Schema] = lazy_schema(lambda pa: pa.schema([]))  # type: ignore[assignment]
    #: values of its columns on an error row (default: null)
    error_values: ClassVar[dict[str, Any]] = {}
    #: engines known to serve it, the first the default (any engine that `accepts` its source kind may run it)
    engines: ClassVar[tuple[str, ...]] = ()
    #: its frozen settings dataclass
    Settings: ClassVar[type]

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @property
    def reads_media(self) -> bool:
        """Whether rows need a `path` to a video or image file."""
        return self.source == FRAMES

    def frame_plan(self) -> FramePlan | None:
        """Frames tasks: the frames each row gives the engine."""
        return None

    def text_column(self) -> str | None:
        """Text tasks: the manifest column each row's text comes from."""
        return None

    def prompt_for(self, sample: Sample) -> str:
        """The prompt sent with one sample (default: the `prompt` setting)."""
        return getattr(self.settings, "prompt", "")

    @property
    def prompt(self) -> str:
        """The prompt an engine checks at start (that it fits the model's context)."""
        return getattr(self.settings, "prompt", "")

    @property
    def is_video(self) -> bool:
        """What the start-up prompt check assumes each sample is (a video of frame_plan's frames, or an image)."""
        return bool(getattr(self.settings, "is_video", self.source == FRAMES))

    @abc.abstractmethod
    def values(self, sample: Sample, result: Result) -> dict[str, Any]:
        """The row's column values for a good answer; raise `AnswerError` to make the row an error."""
