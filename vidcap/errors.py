"""User-facing errors.

A `UserError` is a mistake in what the user gave us (a file, a row, a flag). The CLI prints it as one line
and exits non-zero without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: printed as one line by the CLI, exit code 2."""

    exit_code = 2
