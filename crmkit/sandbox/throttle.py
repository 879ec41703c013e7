"""Teams throttling for posting chat and channel messages, as Microsoft documents it.

Chat posts: two sliding one-second windows, per app per tenant (default 20 requests/s) and per app
per chat (default 1 request/s).  Channel posts (top-level and replies): per app per tenant (50/s),
per app per channel (1/s) and per user per channel (1/s, "at most 1 rps per user for POST message
in a given chat or channel").  Only accepted requests count, so a client that honours
``Retry-After`` gets exactly the documented rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Limits:
    enabled: bool = True
    chat_post_per_app_per_s: float = 20.0
    chat_post_per_chat_per_s: float = 1.0
    channel_post_per_app_per_s: float = 50.0
    channel_post_per_channel_per_s: float = 1.0  # per app and per user, each
    window_s: float = 1.0

    def update(self, data: dict[str, Any]) -> None:
        for k, v in data.items():
            if k not in self.__dataclass_fields__:
                raise ValueError(f"unknown limit {k!r}")
            setattr(self, k, bool(v) if k == "enabled" else float(v))
        if any(getattr(self, k) <= 0 for k in self.__dataclass_fields__ if k != "enabled"):
            raise ValueError("limits must be positive")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Throttle:
    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._lock = threading.Lock()
        self._app: dict[str, deque[float]] = {}
        self._chat: dict[tuple[str, str], deque[float]] = {}
        self._channel: dict[tuple[str, str], deque[float]] = {}  # (app/tenant or user, channel); "app" rows too

    def reset(self) -> None:
        with self._lock:
            self._app.clear()
            self._chat.clear()
            self._channel.clear()

    @staticmethod
    def _shape(rate: float, window: float) -> tuple[int, float]:
        # Rates below one per window (e.g. 0.5/s) widen the window instead of rounding to zero.
        window = max(window, 1.0 / rate)
        return max(1, round(rate * window)), window

    @staticmethod
    def _wait(q: deque[float], cap: int, window: float, now: float) -> float:
        while q and q[0] <= now - window:
            q.popleft()
        if len(q) < cap:
            return 0.0
        return q[len(q) - cap] + window - now

    def check_chat_post(self, app_id: str, tenant_id: str, chat_id: str) -> int | None:
        """Record a POST chat message; return ``None`` if allowed, else Retry-After seconds."""
        lim = self.limits
        if not lim.enabled:
            return None
        app_cap, app_w = self._shape(lim.chat_post_per_app_per_s, lim.window_s)
        chat_cap, chat_w = self._shape(lim.chat_post_per_chat_per_s, lim.window_s)
        now = time.monotonic()
        with self._lock:
            qa = self._app.setdefault(f"{app_id}/{tenant_id}", deque())
            qc = self._chat.setdefault((f"{app_id}/{tenant_id}", chat_id), deque())
            wait = max(self._wait(qa, app_cap, app_w, now), self._wait(qc, chat_cap, chat_w, now))
            if wait > 0:
                return max(1, math.ceil(wait))
            qa.append(now)
            qc.append(now)
            return None

    def check_channel_post(self, app_id: str, tenant_id: str, channel_key: str, user_id: str) -> int | None:
        """Record a POST channel message or reply; ``None`` if allowed, else Retry-After seconds."""
        lim = self.limits
        if not lim.enabled:
            return None
        app_cap, app_w = self._shape(lim.channel_post_per_app_per_s, lim.window_s)
        ch_cap, ch_w = self._shape(lim.channel_post_per_channel_per_s, lim.window_s)
        now = time.monotonic()
        app = f"{app_id}/{tenant_id}"
        with self._lock:
            qa = self._channel.setdefault((app, ""), deque())
            qc = self._channel.setdefault((app, channel_key), deque())
            qu = self._channel.setdefault((f"user:{user_id}", channel_key), deque())
            wait = max(self._wait(qa, app_cap, app_w, now), self._wait(qc, ch_cap, ch_w, now),
                       self._wait(qu, ch_cap, ch_w, now))
            if wait > 0:
                return max(1, math.ceil(wait))
            qa.append(now)
            qc.append(now)
            qu.append(now)
            return None
