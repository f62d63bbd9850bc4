"""Sources: what a row gives the engine. `SOURCES` maps a task's source kind to "module:Class"."""

from __future__ import annotations

import importlib

from vidcap.errors import UserError
from vidcap.sources.base import Source

__all__ = ["SOURCES", "Source", "source_class"]

SOURCES: dict[str, str] = {
    "frames": "vidcap.sources.frames:FrameSource",
    "text": "vidcap.sources.text:TextSource",
}


def source_class(kind: str) -> type[Source]:
    try:
        module_name, class_name = SOURCES[kind].split(":")
    except KeyError:
        raise UserError(f"unknown source kind {kind!r} (known: {', '.join(sorted(SOURCES))})") from None
    return getattr(importlib.import_module(module_name), class_name)
