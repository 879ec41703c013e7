"""The server's clock as seen from here: offset bounds from the ``Date`` header of Graph's responses.

Graph stamps messages with its own clock; crmkit knows its own. To ask Graph for "messages since
this row was first claimed" the client needs the difference. Every response carries ``Date``
(RFC 9110: whole seconds, truncated), produced while the request was in flight. So for a request
sent at local time ``s`` and answered by ``r``, with ``Date`` ``D``, the server's time ``D + f``
(``0 ≤ f < 1``) happened at some local time in ``[s, r]``, and

    D − r  ≤  offset (server − local)  ≤  D + 1 − s.

Each response gives one such interval. The estimate is the median of their lower ends and of their
upper ends over recent responses: the true offset lies in every honest interval, and a few odd
ones (a front end with a wrong clock, a cached ``Date``) do not move a median.
"""

from __future__ import annotations

import email.utils
import statistics
import threading
from collections import deque

__all__ = ["ServerClock"]


class ServerClock:
    """Bounds on (server clock − local clock) in seconds, from recent ``Date`` headers.

    Args:
        window: how many recent responses count (older ones age out, so a corrected clock shows).
        resolution: the ``Date`` header's resolution in seconds (1 by RFC 9110).
    """

    def __init__(self, window: int = 64, resolution: float = 1.0) -> None:
        if window < 1 or resolution < 0:
            raise ValueError("window ≥ 1 and resolution ≥ 0")
        self.resolution = resolution
        self._samples: deque[tuple[float, float]] = deque(maxlen=window)
        self._lock = threading.Lock()

    @property
    def samples(self) -> int:
        """How many responses the estimate rests on."""
        return len(self._samples)

    def observe(self, date: str | None, sent: float, received: float) -> None:
        """Record one response: its ``Date`` value, and local ``time.time()`` before sending and after
        receiving. A missing or unreadable ``Date`` is ignored."""
        if not date:
            return
        try:
            stamp = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError):
            return
        if stamp is None or stamp.tzinfo is None:  # no zone: not an HTTP date we can place
            return
        server = stamp.timestamp()
        with self._lock:
            self._samples.append((server - received, server + self.resolution - sent))

    def bounds(self) -> tuple[float, float] | None:
        """``(low, high)`` for server − local in seconds, or None before any ``Date`` was seen."""
        with self._lock:
            if not self._samples:
                return None
            lows = [s[0] for s in self._samples]
            highs = [s[1] for s in self._samples]
        return statistics.median(lows), statistics.median(highs)

    def offset(self) -> float | None:
        """The middle of :meth:`bounds` (server − local, seconds), or None."""
        b = self.bounds()
        return None if b is None else (b[0] + b[1]) / 2
