"""A text column of the shard rows (captions to draw tags from, say): no files, no prefetch process."""

from __future__ import annotations

from typing import Any, Iterator

from vidcap.engines.base import TEXT, Sample
from vidcap.errors import UserError
from vidcap.sources.base import Source, chunks


class TextSource(Source):
    kind = TEXT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.column = self.task.text_column()
        if not self.column or self.column not in self.rows.column_names:
            raise UserError(f"the shard rows have no {self.column!r} column: the {self.task.name} task reads "
                            f"each row's text from it")

    def batches(self, size: int) -> Iterator[list[Sample]]:
        texts = self.rows[self.column].to_pylist()
        samples = (Sample(key=key, text=str(text)) if text is not None and str(text).strip()
                   else Sample(key=key, skip=f"no text in column {self.column!r}")
                   for key, text in zip(self.keys, texts))
        return chunks(samples, size)
