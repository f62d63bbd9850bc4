"""When the next API request may leave: a requests-per-minute cap and server-requested pauses.

The cap is a token bucket of capacity one, i.e. start times evenly spaced 60/rpm seconds apart: any
minute then holds at most rpm + 1 starts, and no burst at start-up trips a provider's limiter. A
`Retry-After` (on a 429, or a 503 from an overloaded server) pauses every request of the engine, not only
the one refused: the limit belongs to the key or the server, so the others would be refused too.
"""

from __future__ import annotations

import asyncio
import time


class RequestGate:
    """Awaited before each request (retries included); one per engine, used from its event loop only."""

    def __init__(self, requests_per_minute: float | None = None) -> None:
        self._interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._next_start = 0.0
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every request that has not started yet for `seconds` from now."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def wait(self) -> float:
        """Wait for this request's turn; returns the seconds waited."""
        began = time.monotonic()
        while True:
            now = time.monotonic()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            if self._interval:
                start = max(now, self._next_start)
                self._next_start = start + self._interval
                if start > now:
                    await asyncio.sleep(start - now)
                if time.monotonic() < self._paused_until:  # a 429 arrived while we slept
                    continue
            return time.monotonic() - began
