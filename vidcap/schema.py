"""Pyarrow schemas declared on classes but built on first use: cheap imports for commands that only describe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pyarrow as pa


class lazy_schema:  # noqa: N801 - used like a value: `columns = lazy_schema(...)`
    """A class attribute holding a pyarrow schema built (and pyarrow imported) on first use: `vidcap status`
    describes a run through its task class, and importing pyarrow and numpy for that was a tenth of a cold
    status of 100,000 shards. An instance may still set its own `columns` (a plain attribute wins)."""

    def __init__(self, build: Callable[[Any], "pa.Schema"]) -> None:
        self.build = build
        self.schema: pa.Schema | None = None

    def __get__(self, obj: object, owner: type | None = None) -> "pa.Schema":
        if self.schema is None:
            import pyarrow

            self.schema = self.build(pyarrow)
        return self.schema
