"""A model's answer -> a list of tags, or an error that says why.

Open-Sora wrote NONE_FOUND into the tag column whenever it could not parse an answer, so a failed row looked
like a row with one odd tag and was never retried. Here an answer either yields a list, normalised (trimmed,
lowercase, inner whitespace collapsed, duplicates dropped, first-seen order kept), or raises `TagParseError`
with the reason; the caller keeps the raw text beside it and the row is retried by `resume`.

Accepted shapes, tried in this order:
  1. JSON: a list of strings (`["dog", "red car"]`), or an object holding one (`{"objects": [...]}`), also
     inside a ```json fence or after a short preface ("Here are the objects: [...]");
  2. a bracketed list that is not JSON (`[dog, red car]`, `['dog', 'red car']`);
  3. a bulleted or numbered list, one tag per line (`- dog`, `* dog`, `1. dog`, `2) dog`), preface lines dropped;
  4. a bare comma-separated line (`dog, red car, and a lamp`), maybe after a preface ending in a colon, or
     one short tag per line.
An explicit "none" (`[]`, `none`, `NONE_FOUND`, `n/a`) is an empty list, and such words are never tags.
Everything else is an error: an empty answer, JSON that is not a list of strings, prose (an item longer
than `MAX_TAG_WORDS` words reads like a sentence, not a tag).
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

#: an item longer than this many words is a sentence, not a tag
MAX_TAG_WORDS = 8
#: in a bare comma-separated line (no brackets, no bullets) items must be shorter: prose has commas too
PLAIN_MAX_WORDS = 5
#: answers (and items) that mean "nothing found": an empty list, never a tag
NONE_WORDS = frozenset({"none", "none_found", "none found", "n/a", "na", "nothing", "no objects", "no actions",
                        "null", "empty"})

_QUOTES = "\"'`\u2018\u2019\u201c\u201d"
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.S)
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2023\u25e6+]|\(?\d{1,3}[.):]|\(?[a-z][.)])\s+(.*)$")
_EMPHASIS = re.compile(r"(\*\*|__|\*|_)(.+?)\1")
_LEADING_AND = re.compile(r"^(?:and|or)\s+", re.I)
_SPACES = re.compile(r"\s+")
#: how prose starts; a bare line starting so is not a list
_PROSE_OPENER = re.compile(r"^(?:the|this|in|there|it|i|sure|here|a|an) (?:video|image|clip|scene|shows?|is|are|"
                           r"the|a|an|can|see|think|would)\b", re.I)


class TagParseError(ValueError):
    """The answer holds no list of tags; `reason` says why (the caller keeps the raw answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_tags(answer: str | None, key: str = "") -> list[str]:
    """The normalised tags in `answer`; `key` ("objects") picks that field out of a JSON object."""
    text = (answer or "").strip()
    if not text:
        raise TagParseError("empty answer")
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if _is_none(text):
        return []
    for attempt in (_from_json, _from_brackets, _from_bullets, _from_plain):
        items = attempt(text, key)
        if items is not None:
            return normalise(items)
    raise TagParseError(f"no list of tags in the answer ({_describe(text)})")


def parse_answer(answer: str | None, keys: tuple[str, ...]) -> dict[str, list[str]]:
    """Tags per key. One key: any accepted shape. Several: a JSON object holding a list for each key."""
    if len(keys) == 1:
        return {keys[0]: parse_tags(answer, keys[0])}
    text = (answer or "").strip()
    if not text:
        raise TagParseError("empty answer")
    found = None
    for candidate in _json_candidates(_FENCE.sub(r"\1", text)):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            found = value
            break
    if found is None:
        raise TagParseError(f"no JSON object with {' and '.join(map(repr, keys))} lists in the answer "
                            f"({_describe(text)})")
    missing = [key for key in keys if key not in found]
    if missing:
        raise TagParseError(f"the answer's JSON object has no {' or '.join(map(repr, missing))} list "
                            f"(keys: {', '.join(map(str, found)) or 'none'})")
    return {key: normalise(_list_in(found[key], key)) for key in keys}


def normalise(tags: Iterable[str]) -> list[str]:
    """Trim, lowercase, collapse whitespace, strip quotes and end punctuation, split on commas (a comma is the
    CSV separator), drop none-words, empties and duplicates; keep first-seen order. Refuse sentence-long items."""
    seen: dict[str, None] = {}
    for tag in tags:
        for piece in str(tag).split(","):
            clean = _clean(piece)
            if not clean or clean in NONE_WORDS:
                continue
            if len(clean.split()) > MAX_TAG_WORDS:
                raise TagParseError(f"{_describe(clean)} reads like a sentence, not a tag "
                                    f"(more than {MAX_TAG_WORDS} words)")
            seen.setdefault(clean)
    return list(seen)


# -- the shapes ------------------------------------------------------------------------------------
def _from_json(text: str, key: str) -> list[str] | None:
    """A JSON list or object, the whole answer or its first bracketed part; None when there is no JSON."""
    for candidate in _json_candidates(text):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        return _list_in(value, key)
    return None


def _json_candidates(text: str) -> list[str]:
    found = [text]
    for opener, closer in ("[]", "{}"):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            found.append(text[start:end + 1])
    return found


def _list_in(value: Any, key: str) -> list[str]:
    if isinstance(value, dict):
        if key and key in value:
            value = value[key]
        else:
            lists = [v for v in value.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise TagParseError(f"a JSON object without {'a ' + repr(key) + ' list' if key else 'one list'} "
                                    f"(keys: {', '.join(map(str, value)) or 'none'})")
            value = lists[0]
    if isinstance(value, str):
        return [value]
    if value is None:
        return []
    if not isinstance(value, list):
        raise TagParseError(f"JSON {type(value).__name__} where a list of tags was expected")
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise TagParseError(f"a JSON list holding {type(bad[0]).__name__} values, not tag strings")
    return value


def _from_brackets(text: str, key: str) -> list[str] | None:
    """`[dog, red car]` or `['dog', 'red car']`: the first bracketed part, split on commas."""
    match = re.search(r"\[([^\[\]]*)\]", text)
    if match is None:
        return None
    return match.group(1).split(",")


def _from_bullets(text: str, key: str) -> list[str] | None:
    """One tag per bulleted or numbered line; lines without a bullet (a preface, a closing remark) dropped,
    but at least two bullets, or a single bullet on its own, must be there."""
    lines = [line for line in text.splitlines() if line.strip()]
    items = [m.group(1) for m in map(_BULLET.match, lines) if m]
    if not items or (len(items) == 1 and len(lines) > 2):
        return None
    return [_head(item) for item in items]


def _from_plain(text: str, key: str) -> list[str] | None:
    """`dog, red car, and a lamp` (maybe after "Objects:"), or one short tag per line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and all(line.endswith(":") for line in lines[:-1]):
        lines = lines[-1:]  # "The objects are:\n dog, cat"
    if len(lines) > 1:
        if any(line.endswith(":") for line in lines):
            lines = [line for line in lines if not line.endswith(":")]
        if any("," in line or len(line.split()) > MAX_TAG_WORDS or _is_sentence(line) for line in lines):
            return None
        return lines
    line = lines[0]
    if ":" in line:
        head, _, rest = line.rpartition(":")
        if rest.strip() and len(head.split()) <= MAX_TAG_WORDS:
            line = rest.strip()
    items = [_LEADING_AND.sub("", item.strip()) for item in re.split(r",|;", line)]
    if len(items) > 1 and " and " in items[-1]:  # "car, road and lamp"
        items[-1:] = items[-1].split(" and ")
    if (len(items) == 1 and _is_sentence(line)) or _PROSE_OPENER.match(line):
        return None
    if any(len(_clean(item).split()) > PLAIN_MAX_WORDS for item in items):
        return None
    return items


# -- helpers ---------------------------------------------------------------------------------------
def _clean(tag: str) -> str:
    tag = _EMPHASIS.sub(r"\2", tag)
    tag = _SPACES.sub(" ", tag).strip().strip(_QUOTES).strip()
    tag = tag.rstrip(".;:!?").strip().strip(_QUOTES).strip()
    return tag.lower()


def _head(item: str) -> str:
    """`**Dog**: a brown dog on the grass` -> `Dog`: the tag before a description."""
    item = _EMPHASIS.sub(r"\2", item).strip()
    for separator in (": ", " - ", " \u2013 ", " \u2014 "):
        if separator in item:
            return item.split(separator, 1)[0]
    return item


def _is_none(text: str) -> bool:
    return _clean(text) in NONE_WORDS or re.fullmatch(r"\[\s*\]", text) is not None


def _is_sentence(line: str) -> bool:
    """A line that ends like a sentence and has more than two words (`A car drives on the road.`)."""
    return line.rstrip().endswith((".", "!", "?")) and len(line.split()) > 2


def _describe(text: str, limit: int = 60) -> str:
    flat = _SPACES.sub(" ", text).strip()
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")
