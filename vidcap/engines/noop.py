"""An engine that runs no model: for benchmarks of the machinery around it (reading, scheduling, writing).

Its text says plainly that no model ran, so it can never be mistaken for a caption.
"""

from __future__ import annotations

import time
from typing import Sequence

from vidcap.engines.base import Caption, Engine, Sample


class NoopEngine(Engine):
    name = "noop"

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s

    @classmethod
    def from_config(cls, config) -> "NoopEngine":  # noqa: ANN001 - EngineConfig, avoids an import cycle
        return cls(latency_s=config.noop_latency_s)

    def caption(self, samples: Sequence[Sample]) -> list[Caption]:
        if self.latency_s:
            time.sleep(self.latency_s)
        return [
            Caption(text=f"[noop engine: no model ran; {len(s.frames)} frames of "
                         f"{s.frames[0].shape[1]}x{s.frames[0].shape[0]}]" if s.frames else "[noop engine]")
            for s in samples
        ]
