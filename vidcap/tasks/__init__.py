"""Tasks: what a run computes (captions, camera motion, tags), one module each, created by name.

`TASKS` maps a task name to "module:Class", imported only when asked for. See vidcap.tasks.base for how to
add one; vidcap.tasks.spec for what a run freezes (task, source and engine settings).
"""

from __future__ import annotations

import importlib
from typing import Any

from vidcap.errors import UserError
from vidcap.settings import from_dict
from vidcap.tasks.base import AnswerError, FramePlan, Task

__all__ = ["AnswerError", "FramePlan", "TASKS", "Task", "task_class", "task_settings"]

#: task name -> "module:Class"
TASKS: dict[str, str] = {
    "caption": "vidcap.tasks.caption:CaptionTask",
    "tag": "vidcap.tasks.tag:TagTask",
}


def task_class(name: str) -> type[Task]:
    try:
        target = TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def task_settings(name: str, values: dict[str, Any]) -> Any:
    return from_dict(task_class(name).Settings, values, where=f"task {name!r} settings")
