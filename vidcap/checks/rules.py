"""One small pure function per flag: (caption, context, settings) -> flagged or not.

Each function reads a `Text` (the caption with its splits computed once and shared) and a `CheckContext`
(what the run knows about how the caption was made). None of them guesses what it cannot know: `truncated`
needs the engine's finish reason or token counts, `wrong_medium` needs to know whether the input was a video,
`prompt_echo` needs the prompt; without them the check says nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from vidcap.checks.language import FUNCTION_WORDS, count_function_words, count_nonwords, looks_latin
from vidcap.checks.settings import CheckSettings

# ASCII and common typographic punctuation -> space (one C call; a regex over words is several times slower)
_PUNCTUATION = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…–—、，。！？：；（）"})
# CJK ideographs, kana, hangul: scripts written without spaces, where one character is about one word
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_SHOWN = r"(?:shows?|showing|depicts?|depicting|captures?|features?|displays?|showcases?|portrays?|presents?|illustrates?|contains?)"
# (searched in the lower-cased caption) a caption describing its own medium: "The image shows...", "In this picture, ...", "this photo captures"
_IMAGE_SELF = re.compile(
    rf"\b(?:the|this) (?:still )?(?:image|picture|photo|photograph|snapshot) {_SHOWN}\b"
    r"|(?:^|[.!?:]\s+)in (?:the|this) (?:still )?(?:image|picture|photo|photograph)\b"
    r"|\b(?:this|the) (?:image|picture|photo|photograph) (?:is|was) (?:taken|shot|captured)\b",
)
_VIDEO_SELF = re.compile(
    rf"\b(?:the|this) (?:video|clip|footage|video clip|animation|sequence|frames) {_SHOWN}\b"
    r"|(?:^|[.!?:]\s+)(?:in|throughout) (?:the|this) (?:video|clip|footage)\b"
    r"|\b(?:the|this) (?:video|clip|footage) (?:begins|starts|ends|opens|was filmed)\b",
)


_IMAGE_WORDS = ("image", "picture", "photo", "snapshot")
_VIDEO_WORDS = ("video", "clip", "footage", "animation", "sequence", "frames")


@dataclass(frozen=True)
class CheckContext:
    """What is known about how a caption was made. None: unknown, and the check that needs it stays silent."""

    prompt: str = ""
    system: str = ""  # system text, or anything else the model saw and must not repeat
    is_video: bool | None = None  # True: the input was video frames; False: an image
    finish_reason: str | None = None  # the engine's, e.g. "stop" or "length" (OpenAI's word for max tokens)
    generated_tokens: int | None = None
    max_new_tokens: int | None = None


class Text:
    """A caption and the splits every check shares, computed once (plain attributes: cheaper than
    cached properties on the hot path)."""

    __slots__ = ("raw", "stripped", "lower", "tokens", "words")

    def __init__(self, raw: str | None) -> None:
        self.raw = raw or ""
        self.stripped = self.raw.strip()
        self.lower = self.stripped.lower()
        #: whitespace-separated tokens, as written
        self.tokens = self.stripped.split()
        #: lower-case words, punctuation dropped: what loops, echoes and lengths are counted in
        self.words = self.lower.translate(_PUNCTUATION).split()

    @property
    def word_count(self) -> int:
        """Words; a CJK character counts as one word (those scripts use no spaces)."""
        if self.stripped.isascii() or not _CJK.search(self.stripped):
            return len(self.words)
        return len(_CJK.findall(self.stripped)) + len(_CJK.sub(" ", self.lower).translate(_PUNCTUATION).split())


Check = Callable[[Text, CheckContext, CheckSettings], bool]


def empty(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """Nothing left after trimming white space (blank output when weights did not load, say)."""
    return not text.stripped


def truncated(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """Generation stopped at the token limit: the engine says so, or it generated max_new_tokens tokens."""
    if ctx.finish_reason is not None and ctx.finish_reason.lower() == "length":
        return True
    return (ctx.generated_tokens is not None and ctx.max_new_tokens is not None and ctx.max_new_tokens > 0
            and ctx.generated_tokens >= ctx.max_new_tokens)


def repeated_share(units: list | str, n: int, repeats: int) -> float:
    """Share of the n-gram positions of `units` (words, or the characters of a string) whose n-gram occurs at
    least `repeats` times. A phrase looped to the token limit scores near 1; prose that repeats itself once
    or twice ("again and again") scores low, because one repeated n-gram covers only its own few positions."""
    positions = len(units) - n + 1
    if positions < repeats:
        return 0.0
    if isinstance(units, str):
        grams = Counter(units[i:i + n] for i in range(positions))
    else:
        grams = Counter(zip(*(units[i:] for i in range(n))))
    return sum(filter(repeats.__le__, grams.values())) / positions


def _max_repeated_share(words: list[str], n: int, repeats: int) -> float:
    """Upper bound of `repeated_share(words, ...)`, cheaper: the first word of a repeated n-gram occurs at least
    `repeats` times, so if such words are few the n-gram share cannot be high. With D distinct words among N,
    the words occurring `repeats`+ times fill at most (N - D) * r / (r - 1) positions (each other distinct word
    takes one at least); only when that does not settle it are the words counted."""
    positions = len(words) - n + 1
    if positions < repeats:
        return 0.0
    distinct = len(set(words))
    bound = (len(words) - distinct) * repeats / (repeats - 1)
    if bound < positions:
        return bound / positions
    counts = Counter(words)
    return sum(filter(repeats.__le__, counts.values())) / positions


def loop(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """A repeated n-gram covers most of the caption ("the the the", a phrase repeated to max_new_tokens)."""
    words = text.words
    if _max_repeated_share(words, s.loop_ngram, s.loop_repeats) >= s.loop_coverage:
        if repeated_share(words, s.loop_ngram, s.loop_repeats) >= s.loop_coverage:
            return True
    if text.tokens and max(map(len, text.tokens)) > s.loop_long_token:  # a loop without spaces: one long 'word'
        return repeated_share(text.stripped.lower(), s.loop_char_ngram, s.loop_repeats) >= s.loop_coverage
    return False


@lru_cache(maxsize=64)
def _echo_grams(prompt: str, system: str, n: int) -> tuple[int, frozenset[str], frozenset[tuple[str, ...]]]:
    """The word n-grams of the prompt and system text (n shrinks to a short prompt's length, at least 4)."""
    sources = [Text(source).words for source in (prompt, system)]
    size = min([n] + [len(words) for words in sources if len(words) >= 4])
    grams = {gram for words in sources for gram in zip(*(words[i:] for i in range(size)))}
    return size, frozenset(w for words in sources for w in words), frozenset(grams)


def prompt_echo(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """The caption repeats a long stretch of the prompt or the system text (PLLaVA's system prompt, say)."""
    if not (ctx.prompt or ctx.system):
        return False
    size, vocabulary, grams = _echo_grams(ctx.prompt, ctx.system, s.echo_words)
    words = text.words
    if not grams or len(words) < size:
        return False
    # cheap screen first: an echo needs `size` consecutive caption words that all occur in the prompt
    if b"\x01" * size not in bytes(map(vocabulary.__contains__, words)):
        return False
    return not grams.isdisjoint(zip(*(words[i:] for i in range(size))))


def wrong_medium(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """A video caption that describes itself as an image ("The image shows ..."), or the reverse. Only a
    caption speaking of its own medium counts: a picture hanging in the scene is not the caption's medium."""
    if ctx.is_video is None:
        return False
    lower = text.lower
    if ctx.is_video:
        if not any(word in lower for word in _IMAGE_WORDS):
            return False
        return _IMAGE_SELF.search(lower) is not None
    if not any(word in lower for word in _VIDEO_WORDS):
        return False
    return _VIDEO_SELF.search(lower) is not None


def too_short(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """Fewer than `min_words` words (an empty caption is `empty`, not also `too_short`)."""
    return bool(text.stripped) and text.word_count < s.min_words


def not_language(text: Text, ctx: CheckContext, s: CheckSettings) -> bool:
    """Mostly non-words: random-weight noise, bytes of a broken tokenizer (see vidcap.checks.language)."""
    tokens = len(text.tokens)
    nonwords = min(count_nonwords(text.stripped), tokens)
    if nonwords and nonwords >= s.nonword_share * tokens:
        return True
    words = text.words
    if len(words) < 8 or not looks_latin(text.stripped):
        return False
    keyword_list = text.stripped.count(",") * 3 >= tokens
    return not keyword_list and count_function_words(words) < s.function_word_share * len(words)


#: flag name -> check, in report order
CHECKS: dict[str, Check] = {
    "empty": empty,
    "loop": loop,
    "truncated": truncated,
    "prompt_echo": prompt_echo,
    "wrong_medium": wrong_medium,
    "too_short": too_short,
    "not_language": not_language,
}

__all__ = ["CHECKS", "CheckContext", "Text", "FUNCTION_WORDS"]
