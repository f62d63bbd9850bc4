"""Engines: one module per engine, created by name from its own settings.

Modules are imported only when their engine is asked for, so the API engine never imports torch and the
Hugging Face engine never imports openai. Adding an engine: a module with an `Engine` subclass (its
`Settings` dataclass, `accepts`, `run`), and one line in `ENGINES`.
"""

from __future__ import annotations

import importlib
from typing import Any

from vidcap.engines.base import Caption, Engine, Needs, Result, Sample
from vidcap.errors import UserError
from vidcap.settings import from_dict

__all__ = ["Caption", "Engine", "Needs", "Result", "Sample", "ENGINES", "create_engine", "engine_class",
           "engine_settings"]

#: engine name -> "module:Class"
ENGINES: dict[str, str] = {
    "hf": "vidcap.engines.hf:HFEngine",
    "hf-text": "vidcap.engines.hf_text:HFTextEngine",
    "openai": "vidcap.engines.openai_api:OpenAIEngine",
    "noop": "vidcap.engines.noop:NoopEngine",
}


def engine_class(name: str) -> type[Engine]:
    try:
        target = ENGINES[name]
    except KeyError:
        raise UserError(f"unknown engine {name!r} (choose from {', '.join(sorted(ENGINES))})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def engine_settings(name: str, values: dict[str, Any]) -> Any:
    """The engine's settings dataclass from stored or given values (unknown names refused)."""
    return from_dict(engine_class(name).Settings, values, where=f"engine {name!r} settings")


def create_engine(name: str, settings: Any = None) -> Engine:
    """The engine `name` with its settings, not opened (call `open(spec)` to load it)."""
    return engine_class(name)(settings)
