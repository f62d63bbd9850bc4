"""An engine that runs no model: for benchmarks of the machinery around it (reading, scheduling, writing).

Its text says plainly that no model ran, so it can never be mistaken for a caption.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from vidcap.engines.base import FRAMES, TEXT, Engine, Result, Sample
from vidcap.settings import operational


@dataclass(frozen=True)
class NoopSettings:
    latency_s: float = operational(0.0)  # seconds slept per batch (to stand in for a model)


class NoopEngine(Engine):
    name = "noop"
    accepts = frozenset({FRAMES, TEXT})
    Settings = NoopSettings

    def run(self, samples: Sequence[Sample]) -> list[Result]:
        if self.settings.latency_s:
            time.sleep(self.settings.latency_s)
        return [Result(text=_describe(s), finish_reason="stop") for s in samples]


def _describe(sample: Sample) -> str:
    if sample.frames:
        frame = sample.frames[0]
        return f"[noop engine: no model ran; {len(sample.frames)} frames of {frame.shape[1]}x{frame.shape[0]}]"
    if sample.text is not None:
        return f"[noop engine: no model ran; a text of {len(sample.text)} characters]"
    return "[noop engine]"
