"""The one error a reader raises for a file that cannot give its frames."""

from __future__ import annotations


class FrameError(Exception):
    """A video or image that cannot give the frames asked for.

    `reason` is short and on one line (no path: the row already names the file), fit to become the
    row's `error` column: "missing file", "not a video", "no video stream", "truncated or corrupt: ...",
    "too few frames: 2 < 3", "resolution over limit: ...". `str(exc) == exc.reason`.
    """

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)
