"""The engine contract: a batch of samples in, one result per sample out, in order.

An engine knows nothing of files, shards, run folders, Slurm or tasks' columns. The worker hands it samples
(a key, frames already read and/or a text, and a prompt); the engine returns exactly one `Result` per sample,
in the same order. A sample the engine could not answer (a refusal from an API, an input too long) comes back
as a `Result` with `error` set, never as a missing or shifted entry.

Life of an engine (cosmos-curate's stage shape):
    settings = MyEngine.Settings(...)      # frozen dataclass, stored in RUN/config.json ("engine" section)
    MyEngine.preflight(settings)           # cheap checks on the submitting machine (no GPU, no model load)
    MyEngine.needs(settings)               # what each shard task needs: ranks, GPUs per rank
    engine = MyEngine(settings)            # stores only
    engine.open(spec)                      # loads the model; checks the task's prompt/frames fit (UserError)
    engine.run(samples) -> [Result]        # any number of times
    engine.figures(); engine.close()
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Sequence

if TYPE_CHECKING:  # numpy and pyarrow only type things here: `vidcap --help` and `status` need not load them
    import numpy as np
    import pyarrow as pa

    from vidcap.tasks.spec import TaskSpec

#: source kinds (see vidcap.sources)
FRAMES, TEXT = "frames", "text"


@dataclass
class Sample:
    """One row's input: RGB uint8 frames (H, W, 3) of a video or an image, and/or a text, plus the prompt.

    `error` is set by the source when the row could not be read, `skip` (the reason) when it holds nothing to
    do, such as an empty caption: either way the sample never reaches an engine, and its row is an `error` or a
    `skipped` row."""

    key: str
    frames: list[np.ndarray] | None = None
    prompt: str = ""
    is_video: bool = True
    text: str | None = None
    error: str = ""
    skip: str = ""
    attempt: int = 1  # 1 on a row's first try; n after n-1 failed ones (an engine may answer a retry otherwise)


@dataclass
class Result:
    """The engine's answer for one sample. `error` is empty when the answer is good.

    `text` is a generated answer (a caption, a model's raw tag list); `values` holds task columns an engine
    computes directly (motion labels). `finish_reason` is "stop" (the model ended the answer) or "length"
    (cut at max_new_tokens), as the OpenAI API names them; None where it does not apply. `extra` holds
    per-row figures (cost_usd, attempts, latency_s): numbers or short strings, written as extra columns,
    never over the store's or the task's own columns.
    """

    text: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error


#: the name the contract had when every engine was a captioner
Caption = Result


class AttemptLog(Protocol):
    """Where an engine that pays per request writes each request down before it leaves, and its end after
    (vidcap.attempts.AttemptJournal is the worker's, one per shard)."""

    def sent(self, key: str, attempt: int) -> str: ...

    def ended(self, ident: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None: ...


@dataclass(frozen=True)
class Needs:
    """What one shard task of this engine needs from the scheduler."""

    ranks: int = 1  # processes per shard task (tensor parallel)
    gpus_per_rank: int = 0
    cpus: int | None = None


@dataclass(frozen=True)
class NoSettings:
    """For engines without settings."""


class Engine(abc.ABC):
    """Base class of every engine."""

    #: name used by `--engine` and in the registry (vidcap.engines.ENGINES)
    name: ClassVar[str] = ""
    #: source kinds this engine can take (a VLM: frames; a text LLM: text)
    accepts: ClassVar[frozenset[str]] = frozenset({FRAMES})
    #: its frozen settings dataclass (fields marked with vidcap.settings.operational() may change in a run)
    Settings: ClassVar[type] = NoSettings
    #: the per-row figures it puts in `Result.extra` (cost, attempts): declared, so that a merged file has the
    #: same columns whether or not any row has a result yet. The store keeps undeclared ones; merge leaves them out.
    #: (a pyarrow schema; the empty default is a tuple so that importing this module needs no pyarrow)
    columns: ClassVar["pa.Schema | tuple[()]"] = ()

    def __init__(self, settings: Any = None) -> None:
        """Stores the settings only: nothing is loaded, so it is cheap anywhere."""
        self.settings = settings if settings is not None else self.Settings()

    @classmethod
    def loaded(cls, settings: Any = None, spec: "TaskSpec | None" = None) -> "Engine":
        """Made and opened (closed again if opening fails): for callers outside a run, tests, benchmarks."""
        engine = cls(settings)
        try:
            engine.open(spec)
        except BaseException:
            engine.close()
            raise
        return engine

    @classmethod
    def needs(cls, settings: Any) -> Needs:
        return Needs()

    @classmethod
    def preflight(cls, settings: Any, spec: "TaskSpec | None" = None) -> None:
        """Raise `UserError` for what cannot work (a model folder that is not there, a prompt too long for the
        model), on the submitting machine before the run is frozen: no GPU, no weights, no network."""

    def open(self, spec: "TaskSpec | None" = None) -> None:
        """Load what `run` needs, and refuse (UserError) a task it cannot serve, e.g. a prompt too long."""

    @abc.abstractmethod
    def run(self, samples: Sequence[Sample]) -> list[Result]:
        """Answer a batch. Must return `len(samples)` results, in order."""

    def log_attempts(self, log: "AttemptLog | None") -> None:
        """Write each billed request down in `log` before it is sent (None: stop). Only an engine that pays per
        request (an API) does; the others ignore it. The caller owns the log (opens and closes it)."""

    def figures(self) -> dict[str, Any]:
        """Engine-specific figures for the shard stats (peak GPU memory, requests, cost, ...)."""
        return {}

    def close(self) -> None:
        """Release what the engine holds (processes, connections, GPU memory)."""

    # -- the names of the captioning-only contract, kept for callers and tests written against it --------
    def caption(self, samples: Sequence[Sample]) -> list[Result]:
        return self.run(samples)

    def stats(self) -> dict[str, Any]:
        return self.figures()
