"""The engine contract: a batch of samples in, one caption per sample out, in order.

An engine knows nothing of files, shards, run folders or Slurm. The worker hands it samples whose frames
were already read; the engine returns exactly one `Caption` per sample, in the same order. A sample the
engine could not caption (a refusal from an API, say) comes back as a `Caption` with `error` set, never
as a missing or shifted entry.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass
class Sample:
    """One item to caption: K RGB uint8 frames (H, W, 3) of one video or one image, and the prompt text."""

    key: str
    frames: list[np.ndarray]
    prompt: str
    is_video: bool = True


@dataclass
class Caption:
    """The engine's answer for one sample. `error` is empty when the caption is good."""

    text: str = ""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


class Engine(abc.ABC):
    """Base class of every captioning engine."""

    #: name used by `--engine`
    name: str = ""

    @abc.abstractmethod
    def caption(self, samples: Sequence[Sample]) -> list[Caption]:
        """Caption a batch. Must return `len(samples)` captions, in order."""

    def check_prompt(self, prompt: str, num_frames: int, is_video: bool) -> None:
        """Raise `UserError` at start if this prompt cannot work with this model (e.g. too long)."""

    def stats(self) -> dict[str, Any]:
        """Engine-specific figures for the shard stats (peak GPU memory, cost, ...)."""
        return {}

    def close(self) -> None:
        """Release what the engine holds (processes, connections, GPU memory)."""
