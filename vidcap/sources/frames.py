"""Frames of each row's video or image, read ahead in the prefetch process (vidcap.prefetch) by the
task's frame plan. Video or image is decided by the readers from the file's content, per row."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from vidcap.engines.base import FRAMES, Sample
from vidcap.errors import UserError
from vidcap.prefetch import Prefetcher
from vidcap.sources.base import Source


def resolve_paths(values: list[str], data_root: str, manifest_path: str) -> list[str]:
    """Relative manifest paths are taken from `data_root`, else from the manifest's own folder."""
    root = Path(data_root) if data_root else Path(manifest_path).parent
    return [v if os.path.isabs(v) else str(root / v) for v in values]


def sample_is_video(paths: list[str], limit: int = 50) -> bool:
    """Whether a run of these files captions videos, told from the content of the first `limit` readable
    files (vidcap.frames.probe.sniff, as the readers do), never from their names: images only -> False."""
    from vidcap.frames.errors import FrameError
    from vidcap.frames.probe import sniff

    images = others = 0
    for path in paths:
        try:
            kind = sniff(path)
        except FrameError:  # missing or empty: the reader will say so on its row
            continue
        if kind == "image":
            images += 1
        else:
            others += 1
        if images + others >= limit:
            break
    return not (images and not others)


def load_reader(target: str) -> Any:
    module_name, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"frame reader {target!r} not found: {exc}") from None


class FrameSource(Source):
    kind = FRAMES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        column = self.settings.path_column
        if column not in self.rows.column_names:
            raise UserError(f"the shard rows have no {column!r} column: the {self.task.name} task reads each "
                            f"row's video from it")
        plan = self.task.frame_plan()
        if plan is None:
            raise UserError(f"the {self.task.name} task gives no frame plan")
        paths = resolve_paths(self.rows[column].cast(pa.string()).to_pylist(), self.settings.data_root,
                              self.manifest_path)
        options: dict[str, Any] = {}
        if plan.reader:
            options["reader"] = load_reader(plan.reader)
        self.prefetch = Prefetcher(paths, plan.num_frames, resize=plan.resize, backend=self.settings.backend,
                                   ahead=self.settings.ahead, workers=self.settings.readers, **options)

    def batches(self, size: int) -> Iterator[list[Sample]]:
        for items in self.prefetch.batches(size):
            yield [Sample(key=self.keys[i.index], frames=i.frames.frames, is_video=i.frames.is_video)
                   if i.frames is not None else Sample(key=self.keys[i.index], error=i.error or "unreadable")
                   for i in items]

    def figures(self) -> dict[str, Any]:
        return {"read_wait_s": self.prefetch.wait_seconds}

    def close(self) -> None:
        self.prefetch.close()
