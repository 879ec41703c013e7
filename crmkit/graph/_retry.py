"""Retry rules for Microsoft Graph, in one place.

Graph asks clients to wait ``Retry-After`` on 429 and often on 503/504; without it, back off
exponentially with jitter so that many clients do not retry in lock-step. The delays are
computed here and unit-tested apart from the send loop.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass, field

__all__ = ["RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRY_STATUSES = frozenset({429, 503, 504})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None if absent or unreadable.

    Accepts delta-seconds (``"5"``, leniently also ``"1.5"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 7231 dates are GMT; a naive parse means "-0000"
        import datetime as dt

        when = when.replace(tzinfo=dt.UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass
class RetryPolicy:
    """How often and how long to retry.

    Args:
        max_retries: retries after the first attempt (so ``max_retries + 1`` attempts in all).
        backoff_base: first backoff delay in seconds when the server gives no ``Retry-After``.
        backoff_cap: ceiling for one backoff delay.
        max_retry_after: a server ``Retry-After`` above this is not waited for; the error surfaces.
        statuses: HTTP statuses that are retried.
    """

    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 300.0
    statuses: frozenset[int] = RETRY_STATUSES
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("retry bounds must be non-negative")

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): capped exponential, "equal jitter".

        Half of the exponential step is fixed and half random, so the delay never collapses to
        zero (which full jitter allows) yet concurrent clients spread out.
        """
        step = min(self.backoff_cap, self.backoff_base * (2 ** max(0, attempt - 1)))
        return step / 2 + self.rng.uniform(0, step / 2)

    def delay(self, attempt: int, status: int, retry_after: str | None, *, now: float | None = None) -> float | None:
        """Seconds to wait before retry ``attempt``, or None when the request must not be retried."""
        if attempt > self.max_retries or status not in self.statuses:
            return None
        server = parse_retry_after(retry_after, now=now)
        if server is not None:
            if server > self.max_retry_after:
                return None
            return server
        return self.backoff(attempt)
