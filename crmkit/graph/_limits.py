"""Client-side pacing for Teams' documented limits, so bulk sends do not provoke 429s.

Teams allows 20 chat-message POSTs per second per app per tenant and 1 per second per chat.
The server counts a request when it *accepts* it, which the client cannot see: it lies somewhere
between sending and the response. So the per-chat gap is measured from the *completion* of the
previous request in that chat (always safe, whatever the latency), and the tenant budget is spent
as evenly spaced start times slightly under the limit (``headroom``), never as a burst, with at
most ``floor(limit * headroom)`` starts in any one-second window. Many chats
sending at once then interleave naturally: whichever chat is ready takes the next tenant slot.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

__all__ = ["TEAMS_CHAT_RATE", "TEAMS_TENANT_RATE", "RateLimiter"]

TEAMS_TENANT_RATE = 20.0  # POST chat message, per app per tenant, per second
TEAMS_CHAT_RATE = 1.0  # per app per tenant per chat, per second


class RateLimiter:
    """Paces requests: a tenant-wide rate plus a minimum gap per chat. Use from one event loop.

    Args:
        tenant_rate: the service's requests/second limit per tenant.
        chat_rate: the service's requests/second limit per chat.
        headroom: the share of each limit actually used (0.95 keeps ~5 % for timing jitter).
        max_in_flight: concurrent requests at most (latency spikes then queue here, not in sockets).
    """

    def __init__(
        self, tenant_rate: float = TEAMS_TENANT_RATE, chat_rate: float = TEAMS_CHAT_RATE, *,
        headroom: float = 0.95, max_in_flight: int = 64,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if tenant_rate <= 0 or chat_rate <= 0 or not 0 < headroom <= 1 or max_in_flight < 1:
            raise ValueError("rates, headroom and max_in_flight must be positive (headroom ≤ 1)")
        self.tenant_interval = 1.0 / (tenant_rate * headroom)
        self.window_cap = max(1, math.floor(tenant_rate * headroom))
        self.min_gap = 0.7 * self.tenant_interval
        self.max_lag = 0.25
        self.chat_gap = 1.0 / (chat_rate * headroom)
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._sleep = sleep
        self._tenant_next = 0.0
        self._chat_next: dict[str, float] = {}
        self._chat_locks: dict[str, asyncio.Lock] = {}
        self._in_flight: asyncio.Semaphore | None = None
        self._tenant_lock: asyncio.Lock | None = None
        self._starts: deque[float] = deque()
        self._last_start = -math.inf

    def ready_at(self, chat_id: str) -> float:
        """Clock time from which ``chat_id`` may send again."""
        return self._chat_next.get(chat_id, 0.0)

    def defer(self, chat_id: str | None, seconds: float) -> None:
        """The server said wait (429 Retry-After): keep this chat quiet for ``seconds``."""
        if chat_id is not None:
            self._chat_next[chat_id] = max(self.ready_at(chat_id), self._clock() + seconds)

    async def _tenant_turn(self) -> None:
        # Starts follow a drift-free schedule one ``tenant_interval`` apart. A caller that was
        # already waiting but woke late (a busy event loop) may catch up, at ``min_gap`` spacing
        # and for at most ``max_lag`` seconds; idle time earns no credit (a caller arriving after
        # its slot starts the schedule afresh). ``window_cap`` starts per sliding second, one below
        # the server's limit, is the hard guard, since the server counts a sliding window.
        arrived = self._clock()
        if self._tenant_lock is None:
            self._tenant_lock = asyncio.Lock()
        async with self._tenant_lock:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - 1.0:
                    self._starts.popleft()
                scheduled = max(self._tenant_next, arrived, now - self.max_lag)
                target = max(scheduled, self._last_start + self.min_gap)
                capped = len(self._starts) >= self.window_cap and self._starts[0] + 1.0 > target
                if capped:
                    target = self._starts[0] + 1.0
                if target <= now:
                    break
                await self._sleep(target - now)
            self._starts.append(now)
            self._last_start = now
            # A wait forced by the window cap restarts the schedule (no catch-up burst after it).
            self._tenant_next = (now if capped else scheduled) + self.tenant_interval

    async def _take_chat(self, chat_id: str) -> None:
        """Hook: hold ``chat_id`` for one request (in-process, the chat's lock in :meth:`slot` is enough)."""

    async def _free_chat(self, chat_id: str, started: bool) -> None:
        """Hook: the request in ``chat_id`` is over (``started``: it had its tenant turn); the chat's gap
        runs from now. In-process, a request that never started leaves the chat as it was."""
        if started:
            self._chat_next[chat_id] = max(self.ready_at(chat_id), self._clock() + self.chat_gap)

    @asynccontextmanager
    async def slot(self, chat_id: str | None = None) -> AsyncIterator[None]:
        """Hold one request slot: waits for the chat's gap and the tenant's next start time.

        One request per chat is in flight at a time; the chat's gap starts when it completes.
        Subclasses keep the turns elsewhere (:class:`~crmkit.teams.pacing.SharedPacer`: in the
        database) by overriding the hooks ``_take_chat``, ``_tenant_turn`` and ``_free_chat``.
        """
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.max_in_flight)
        if chat_id is None:
            await self._tenant_turn()
            async with self._in_flight:
                yield
            return
        lock = self._chat_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:  # this process's requests into the chat queue here
            while (wait := self.ready_at(chat_id) - self._clock()) > 0:
                await self._sleep(wait)  # the gap, or a 429's Retry-After
            await self._take_chat(chat_id)
            started = False
            try:
                await self._tenant_turn()
                started = True
                async with self._in_flight:
                    yield
            finally:
                await self._free_chat(chat_id, started)
