"""Tags: a caption (any text column) -> a chat LLM or an API -> lists of `objects` and/or `actions`.

The answer is parsed by vidcap.tags.parse: a row whose answer holds no list is an `error` row with the
reason (so `resume` retries it up to --max-attempts), never a NONE_FOUND tag as Open-Sora wrote. The raw
answer is kept in the `tag_answer` column of every answered row, good or not, to audit the parse. A row with
an empty caption is `skipped` by the text source and never sent. With two keys one request per row asks for
both (a JSON object).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from vidcap.engines.base import TEXT, Result, Sample
from vidcap.errors import UserError
from vidcap.tags.parse import TagParseError, parse_answer
from vidcap.tags.prompts import PLACEHOLDER, check_keys, fill, instruction
from vidcap.tasks.base import AnswerError, Task

ANSWER_COLUMN = "tag_answer"


@dataclass(frozen=True)
class TagSettings:
    keys: tuple[str, ...] = ("objects",)
    prompt: str = ""  # the instruction, `{text}` where the caption goes (empty: the built-in one for `keys`)
    prompt_name: str = "built-in"  # or "file"
    text_column: str = "text"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", check_keys(list(self.keys)))  # a stored config gives a list
        if not self.prompt:
            object.__setattr__(self, "prompt", instruction(self.keys))
        if not self.text_column:
            raise UserError("--text-column must name a column")


def tag_columns(keys: tuple[str, ...]) -> pa.Schema:
    return pa.schema([*((key, pa.list_(pa.string())) for key in keys), (ANSWER_COLUMN, pa.string())])


class TagTask(Task):
    name = "tag"
    source = TEXT
    columns = tag_columns(("objects",))
    engines = ("hf-text", "openai")
    Settings = TagSettings

    def __init__(self, settings: TagSettings | None = None) -> None:
        super().__init__(settings)
        self.keys: tuple[str, ...] = self.settings.keys
        self.columns = tag_columns(self.keys)  # the keys asked for, in order
        self.error_values = {key: None for key in self.keys}

    def text_column(self) -> str:
        return self.settings.text_column

    def prompt_for(self, sample: Sample) -> str:
        return fill(self.settings.prompt, sample.text or "")

    @property
    def prompt(self) -> str:
        """The instruction with an empty caption: what an engine checks fits its context at start."""
        return self.settings.prompt.replace(PLACEHOLDER, "")

    @property
    def is_video(self) -> bool:
        return False

    def values(self, sample: Sample, result: Result) -> dict[str, Any]:
        try:
            tags = parse_answer(result.text, self.keys)
        except TagParseError as exc:
            cut = " (the answer was cut at --max-new-tokens)" if result.finish_reason == "length" else ""
            raise AnswerError(f"unparsable answer: {exc.reason}{cut}", values={ANSWER_COLUMN: result.text}) from None
        return {**tags, ANSWER_COLUMN: result.text}
