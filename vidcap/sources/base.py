"""The source contract: a shard's rows in, batches of `Sample`s out, one per row, in row order.

A source knows how to get each row's input (frames of a video through the prefetch process, or a text
column), nothing of engines or of what a task computes. A row it cannot read is a sample with `error` set,
in its place, so the worker writes it as an error row and never shifts another row's answer onto it.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import pyarrow as pa

from vidcap.engines.base import Sample

if TYPE_CHECKING:
    from vidcap.tasks.base import Task
    from vidcap.tasks.spec import SourceSettings


class Source(abc.ABC):
    """Base class of the sources. Use as a context manager: `close()` ends any reader process."""

    #: "frames" or "text": the tasks it serves declare the same kind
    kind: ClassVar[str] = ""

    def __init__(self, settings: "SourceSettings", task: "Task", rows: pa.Table, keys: list[str],
                 manifest_path: str) -> None:
        self.settings, self.task, self.rows, self.keys = settings, task, rows, keys
        self.manifest_path = manifest_path

    @abc.abstractmethod
    def batches(self, size: int) -> Iterator[list[Sample]]:
        """Samples of every row, in row order, `size` at a time (the last batch may be shorter)."""

    def figures(self) -> dict[str, Any]:
        """Source figures for the shard stats."""
        return {}

    def close(self) -> None:
        """Stop reading (idempotent)."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chunks(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
