"""Caption checks: flag the broken captions among millions (loops, prompt echoes, cut-offs, wrong medium).

    checker = CaptionChecker(CheckSettings())
    checker.flags("The image shows a dog.", CheckContext(is_video=True))   # ['wrong_medium']

Each flag is one small pure function in `vidcap.checks.rules`; thresholds live in `CheckSettings`
(vidcap.checks.settings), whose fields document themselves as command-line options. The checks are cheap
enough to run in the worker's process on every caption (bench/checks.py measures it), and the same code
serves `vidcap check-captions` on a CSV from any captioner.
"""

from __future__ import annotations

from vidcap.checks.rules import CHECKS, Check, CheckContext, Text
from vidcap.checks.settings import FLAGS, CheckSettings, add_check_arguments, parse_checks, settings_from_args

__all__ = ["CHECKS", "FLAGS", "CaptionChecker", "CheckContext", "CheckSettings", "add_check_arguments",
           "check_caption", "parse_checks", "settings_from_args"]


class CaptionChecker:
    """The checks chosen in `settings`, ready to run on one caption after another."""

    def __init__(self, settings: CheckSettings | None = None) -> None:
        self.settings = settings or CheckSettings()
        self._checks: list[tuple[str, Check]] = [(name, CHECKS[name]) for name in self.settings.checks]
        self._skip_if_empty = [(n, c) for n, c in self._checks if n not in ("empty", "truncated")]

    def flags(self, caption: str | None, context: CheckContext = CheckContext()) -> list[str]:
        """The flags raised by one caption, in report order; [] for a good caption. An empty caption gets
        `empty` (and `truncated` if it was cut off), never also too_short or the like."""
        text = Text(caption)
        s = self.settings
        if not text.stripped:
            return [n for n, check in self._checks if n in ("empty", "truncated") and check(text, context, s)]
        return [name for name, check in self._checks if check(text, context, s)]


def check_caption(caption: str | None, context: CheckContext = CheckContext(),
                  settings: CheckSettings | None = None) -> list[str]:
    """One-off form of `CaptionChecker(settings).flags(caption, context)`."""
    return CaptionChecker(settings).flags(caption, context)
