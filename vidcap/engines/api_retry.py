"""How long to wait before trying an API request again.

Exponential backoff with full jitter (a uniform draw in [0, base * 2^(n-1)], capped) so that many requests
failing together do not come back together. When the server says when to come back (`Retry-After` in
seconds or as an HTTP date, or OpenAI's `retry-after-ms`), that wins, plus a little jitter, up to a cap.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass
from datetime import timezone
from typing import Mapping


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts and backoff delays (small delays in tests, seconds in production)."""

    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    max_retry_after_s: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s) + rng.uniform(0.0, self.base_delay_s)
        return rng.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or None if it did not say (or said something unreadable)."""
    lower = {k.lower(): v for k, v in headers.items()}
    millis = _seconds(lower.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000.0
    value = lower.get("retry-after")
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
