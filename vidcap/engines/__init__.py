"""Engines: one module per engine, created by name from an `EngineConfig`.

Modules are imported only when their engine is asked for, so the API engine never imports torch and the
Hugging Face engine never imports openai.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

from vidcap.engines.base import Caption, Engine, Sample
from vidcap.errors import UserError

__all__ = ["Caption", "Engine", "EngineConfig", "Sample", "ENGINES", "create_engine"]

#: engine name -> "module:Class"; the class has `from_config(EngineConfig)`
ENGINES: dict[str, str] = {
    "hf": "vidcap.engines.hf:HFEngine",
    "openai": "vidcap.engines.openai_api:OpenAIEngine",
    "noop": "vidcap.engines.noop:NoopEngine",
    "pllava": "vidcap.engines.pllava:PllavaEngine",
}


@dataclass
class EngineConfig:
    """Everything an engine needs, frozen into the run config. Never holds a secret (keys come from the
    environment or from the file named by `api_key_file`)."""

    engine: str = "hf"
    model: str = ""
    prompt_name: str = "video"
    prompt: str = ""
    num_frames: int = 3
    max_new_tokens: int = 256
    # Hugging Face engine
    dtype: str | None = None
    attn: str | None = None
    device: str | None = None
    tp_size: int = 1
    tp_backend: str = "deepspeed"
    # PLLaVA engine: pooling T-H-W (None: the checkpoint's), LoRA alpha (scale alpha/r), crop or pad frames
    pooling_shape: list[int] | None = None
    lora_alpha: float = 4.0
    frame_fit: str = "crop"
    # OpenAI-compatible engine
    api_base: str | None = None
    api_key_file: str | None = None
    concurrency: int = 8
    requests_per_minute: float | None = None
    request_timeout_s: float = 120.0
    max_request_attempts: int = 6
    image_detail: str = "low"
    jpeg_quality: int = 85
    jpeg_max_side: int = 768
    prices: dict[str, Any] = field(default_factory=dict)
    # no-op engine (benchmarks of the machinery around the model)
    noop_latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EngineConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def engine_class(name: str) -> type[Engine]:
    try:
        target = ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r} (choose from {', '.join(sorted(ENGINES))})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_engine(config: EngineConfig) -> Engine:
    """Build the engine named by `config.engine`."""
    return engine_class(config.engine).from_config(config)  # type: ignore[attr-defined]
