"""Frozen settings dataclasses: what a task, a source or an engine stores in the run config.

Every settings class is a frozen dataclass. A field is an *identity* setting by default: changing it changes
what a row's answer is (model, prompt, frames), so a run refuses the change. A field made with `operational()`
does not (batch size, concurrency, device): it may differ between submissions of one run. The marker lives
in the field's metadata, next to the field, so nobody keeps a second list by hand.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from vidcap.errors import UserError

T = TypeVar("T")

OPERATIONAL = "operational"
SECRET_SHOWN_AS = "(prompt text)"


def operational(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A field that may change between submissions of one run without changing any answer."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={OPERATIONAL: True})
    return dataclasses.field(default=default, metadata={OPERATIONAL: True})


def is_operational(field: dataclasses.Field) -> bool:
    return bool(field.metadata.get(OPERATIONAL))


def to_dict(settings: Any) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build `cls` from stored values; unknown keys are refused with the valid names (a typo is not ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where or cls.__name__}: unknown setting(s) {', '.join(unknown)} "
                        f"(valid: {', '.join(sorted(names))})")
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where or cls.__name__}: {exc}") from None


def changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The identity fields that differ between two settings of one class, as 'name: old -> new'."""
    if type(old) is not type(new):
        return [f"{prefix or 'settings'}: {type(old).__name__} -> {type(new).__name__}"]
    found = []
    for field in dataclasses.fields(old):
        if is_operational(field):
            continue
        a, b = getattr(old, field.name), getattr(new, field.name)
        if a != b:
            shown = SECRET_SHOWN_AS if field.name == "prompt" else f"{a!r} -> {b!r}"
            found.append(f"{prefix}{field.name}: {shown}")
    return found
