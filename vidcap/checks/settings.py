"""The thresholds of the caption checks, in one frozen dataclass that is also the documentation.

Each field carries its help text and command-line flag in its metadata, so `vidcap check-captions --help`,
`vidcap caption --help` and the stored run config say the same thing and nobody keeps a second list.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vidcap.errors import UserError

#: every flag, in the order they are reported
FLAGS: tuple[str, ...] = ("empty", "loop", "truncated", "prompt_echo", "wrong_medium", "too_short", "not_language")


def _setting(default: Any, flag: str, help: str) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help})


@dataclass(frozen=True)
class CheckSettings:
    """Which checks run and their thresholds. The defaults were tuned on tiny-model babble and on real
    caption-like prose with near-misses (tests/test_checks.py)."""

    checks: tuple[str, ...] = _setting(
        FLAGS, "--checks", "comma-separated checks to run, or 'all' or 'none' (default: all: "
        + ",".join(FLAGS) + ")")
    min_words: int = _setting(
        5, "--check-min-words", "too_short: a caption with fewer words than this (a CJK character counts as a "
        "word) (default: 5)")
    loop_ngram: int = _setting(
        3, "--check-loop-ngram", "loop: size in words of the n-grams counted (default: 3)")
    loop_repeats: int = _setting(
        2, "--check-loop-repeats", "loop: an n-gram is repeated when it occurs at least this often (default: 2)")
    loop_coverage: float = _setting(
        0.5, "--check-loop-coverage", "loop: flag when repeated n-grams start at this share of the caption's "
        "n-gram positions, in words, or in characters where a run of over --check-loop-long-token characters "
        "without a space hides the loop in one 'word' (default: 0.5)")
    loop_char_ngram: int = _setting(
        10, "--check-loop-char-ngram", "loop: size in characters of the n-grams of the character-level count "
        "(default: 10)")
    loop_long_token: int = _setting(
        20, "--check-loop-long-token", "loop: characters without a space above which the caption is also "
        "counted in characters (default: 20)")
    echo_words: int = _setting(
        8, "--check-echo-words", "prompt_echo: flag a run of this many consecutive words found in the prompt or "
        "the system text (a shorter prompt, of at least 4 words, must appear whole) (default: 8)")
    nonword_share: float = _setting(
        0.25, "--check-nonword-share", "not_language: flag when at least this share of the caption's words are "
        "non-words (odd symbols or case inside a word, letter-digit mixes, tokenizer bytes, no vowel, ...) "
        "(default: 0.25)")
    function_word_share: float = _setting(
        0.08, "--check-function-word-share", "not_language: also flag a caption of 8+ words in Latin script, not "
        "a comma-separated keyword list, when fewer than this share of its words are common function words "
        "(the, of, und, le, ...), as word pieces glued at random are (default: 0.08)")

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in FLAGS]
        if unknown:
            raise UserError(f"unknown check(s) {', '.join(unknown)} (choose from {', '.join(FLAGS)}, all, none)")
        for name in ("min_words", "loop_ngram", "loop_char_ngram", "loop_long_token"):
            if getattr(self, name) < 1:
                raise UserError(f"{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if self.loop_repeats < 2:
            raise UserError(f"{_flag('loop_repeats')} must be at least 2, got {self.loop_repeats}")
        if self.echo_words < 4:
            raise UserError(f"{_flag('echo_words')} must be at least 4, got {self.echo_words}")
        for name in ("loop_coverage", "nonword_share", "function_word_share"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise UserError(f"{_flag(name)} must be a share in (0, 1], got {value}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["checks"] = list(self.checks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CheckSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"caption checks: unknown setting(s) {', '.join(unknown)} (valid: {', '.join(sorted(names))})")
        values = dict(data)
        if "checks" in values:
            values["checks"] = tuple(values["checks"])
        return cls(**values)


def _flag(name: str) -> str:
    return next(f.metadata["flag"] for f in dataclasses.fields(CheckSettings) if f.name == name)


def parse_checks(text: str, option: str = "--checks") -> tuple[str, ...]:
    """'all', 'none', or a comma-separated list of flags, kept in the report order."""
    text = text.strip().lower()
    if text == "all":
        return FLAGS
    if text in ("none", ""):
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FLAGS]
    if unknown:
        raise UserError(f"{option}: unknown flag(s) {', '.join(unknown)} (choose from {', '.join(FLAGS)}, "
                        f"all, none)")
    return tuple(f for f in FLAGS if f in names)


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per setting, help and default taken from the dataclass."""
    group = parser.add_argument_group("caption checks")
    for f in dataclasses.fields(CheckSettings):
        kind = {"checks": str, "int": int, "float": float}.get(f.name if f.name == "checks" else f.type)
        group.add_argument(f.metadata["flag"], dest=f"check_{f.name}", type=kind or str, default=None,
                           metavar="LIST" if f.name == "checks" else "N", help=f.metadata["help"])


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """The settings the user asked for; options not given keep their defaults."""
    given: dict[str, Any] = {}
    for f in dataclasses.fields(CheckSettings):
        value = getattr(args, f"check_{f.name}", None)
        if value is not None:
            given[f.name] = parse_checks(value) if f.name == "checks" else value
    return CheckSettings(**given)
