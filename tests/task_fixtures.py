"""A small text task and a meddling engine, written the way a new task is (vidcap/tasks/base.py), to test
the framework without any model: the worker, the store and the reducers must carry them unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from vidcap.engines.base import TEXT, Engine, Result, Sample
from vidcap.tasks.base import AnswerError, Task


@dataclass(frozen=True)
class WordsSettings:
    text_column: str = "text"
    prompt: str = "List the words."


class WordsTask(Task):
    """Splits the engine's answer into words: a list<string> column and a count."""

    name = "words"
    source = TEXT
    columns = pa.schema([("words", pa.list_(pa.string())), ("count", pa.int64())])
    engines = ("echo", "noop")
    Settings = WordsSettings

    def text_column(self) -> str:
        return self.settings.text_column

    def values(self, sample: Sample, result: Result) -> dict[str, Any]:
        words = result.text.split()
        if "refuse" in words:
            raise AnswerError("the answer contains 'refuse'")
        return {"words": words, "count": len(words)}


@dataclass(frozen=True)
class EchoSettings:
    upper: bool = False


class EchoEngine(Engine):
    """Answers with the sample's text; its per-row figures try to overwrite the store's and the task's columns."""

    name = "echo"
    accepts = frozenset({TEXT})
    Settings = EchoSettings
    columns = pa.schema([("cost_usd", pa.float64())])

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        return [Result(text=s.text.upper() if self.settings.upper else s.text, prompt_tokens=len(s.prompt.split()),
                       generated_tokens=len(s.text.split()), finish_reason="stop",
                       extra={"status": "error", "error": "meddled", "key": "other", "seconds": -1.0,
                              "words": ["meddled"], "count": -1, "cost_usd": 0.25})
                for s in samples]
