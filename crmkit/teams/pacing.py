"""Teams' limits shared by every process that posts for one CRM (PostgreSQL).

Teams counts 20 chat-message requests per second per app per tenant and 1 per second per chat, whoever
sends them. :class:`~crmkit.graph.RateLimiter` paces one process; with several workers each would take
the whole budget. :class:`SharedPacer` keeps the pacing in the database instead (table ``teams_pacing``,
migration 12), on the database server's clock, so every process on every machine takes its turns from
the same schedule:

- the tenant row (key ``tenant``) holds the next free start time. A request reserves a start with one
  atomic ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (a row lock: callers queue, none share a slot),
  ``1 / (rate × headroom)`` seconds after the previous one; idle time earns no credit. Then, awake, it
  records its actual start in the row's ``starts`` only while fewer than ``floor(rate × headroom)`` starts
  fall in the last second (one atomic ``UPDATE … WHERE``), else waits for the oldest to leave the window:
  callers that woke late (a busy machine) cannot bunch up past the cap, the server counts a sliding second.
- a chat row (key ``chat:<id>``) is taken by one request at a time across all processes (its
  ``next_at`` set a request time-out ahead), and freed when the answer is in: ``next_at`` = the answer's
  time + the chat's gap (or a 429's Retry-After, if longer), as the in-process limiter measures it.

The statements run on a connection of the pacer's own in autocommit mode (READ COMMITTED): each is its
own short transaction, never part of the outbox's. They run in one thread of the pacer's own (one
statement at a time), so the event loop never waits for the database. DuckDB keeps the in-process
limiter (one process writes a DuckDB file at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from ..graph import TEAMS_CHAT_RATE, TEAMS_TENANT_RATE, RateLimiter

__all__ = ["SharedPacer"]

_NOW = "extract(epoch from clock_timestamp())"
_TAKE_TENANT = (
    f"INSERT INTO teams_pacing (key, next_at) VALUES (%(key)s, {_NOW} + %(step)s) "
    f"ON CONFLICT (key) DO UPDATE SET next_at = greatest(teams_pacing.next_at, {_NOW}) + %(step)s "
    f"RETURNING next_at - %(step)s - {_NOW}"
)
_TAKE_CHAT = (
    f"INSERT INTO teams_pacing (key, next_at) VALUES (%(key)s, {_NOW} + %(busy)s) "
    f"ON CONFLICT (key) DO UPDATE SET next_at = {_NOW} + %(busy)s WHERE teams_pacing.next_at <= {_NOW} "
    "RETURNING 1"
)
_CHAT_WAIT = f"SELECT next_at - {_NOW} FROM teams_pacing WHERE key = %(key)s"
_RECENT = f"FROM unnest(coalesce(starts, '{{}}'::double precision[])) s WHERE s > {_NOW} - 1"
_START = (
    f"UPDATE teams_pacing SET starts = array_append(ARRAY(SELECT s {_RECENT}), CAST({_NOW} AS double precision)) "
    f"WHERE key = %(key)s AND (SELECT count(*) {_RECENT}) < %(cap)s RETURNING 1"
)
_START_WAIT = f"SELECT min(s) + 1 - {_NOW} FROM teams_pacing, unnest(starts) s WHERE key = %(key)s AND s > {_NOW} - 1"
_FREE_CHAT = f"UPDATE teams_pacing SET next_at = {_NOW} + %(gap)s WHERE key = %(key)s"


class SharedPacer(RateLimiter):
    """A :class:`~crmkit.graph.RateLimiter` whose tenant and chat turns come from the database.

    Args:
        url: the CRM's PostgreSQL URL (the pacer opens one connection of its own, on first use).
        tenant_rate, chat_rate, headroom: as for RateLimiter.
        busy_s: how long a chat stays taken by a request whose process died before freeing it
            (longer than a request may take: the Graph time-out, ``CRMKIT_GRAPH_TIMEOUT``, plus a margin).
    """

    def __init__(self, url: str, tenant_rate: float = TEAMS_TENANT_RATE, chat_rate: float = TEAMS_CHAT_RATE, *,
                 headroom: float = 0.95, busy_s: float | None = None, key: str = "tenant") -> None:
        super().__init__(tenant_rate, chat_rate, headroom=headroom)
        self.url = url
        self.key = key
        self.busy_s = busy_s if busy_s is not None else float(os.environ.get("CRMKIT_GRAPH_TIMEOUT") or 30) + 5
        self.capped = 0  # starts held back by the per-second cap (for tests and benches)
        self._box: list[Any] = [None]  # the connection, opened in the pacer's thread on first use
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmkit-pacing")
        # Closed with the pacer (its Graph client closed, the service gone): no connection is left to the GC.
        self._closer = weakref.finalize(self, _close, self._box, self._thread)

    def _run(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        import psycopg

        for attempt in (1, 2):  # a broken connection is replaced once
            if self._box[0] is None or self._box[0].closed:
                self._box[0] = psycopg.connect(self.url, autocommit=True, application_name="crmkit-pacing",
                                               options="-c TimeZone=UTC")
            try:
                cur = self._box[0].execute(sql, params)
                return cur.fetchone() if cur.description else None
            except psycopg.OperationalError:
                with contextlib.suppress(psycopg.Error):
                    self._box[0].close()
                self._box[0] = None
                if attempt == 2:
                    raise
        return None

    async def _query(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """One statement on the pacer's connection, in the pacer's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, sql, params)

    async def _tenant_turn(self) -> None:
        row = await self._query(_TAKE_TENANT, {"key": self.key, "step": self.tenant_interval})
        assert row is not None
        if (wait := float(row[0])) > 0:
            await self._sleep(wait)
        while await self._query(_START, {"key": self.key, "cap": self.window_cap}) is None:
            self.capped += 1
            row = await self._query(_START_WAIT, {"key": self.key})
            wait = float(row[0]) if row is not None and row[0] is not None else 0.0
            await self._sleep(min(max(wait, 0.002), 1.0))

    async def _take_chat(self, chat_id: str) -> None:
        key = f"chat:{chat_id}"
        while True:
            if await self._query(_TAKE_CHAT, {"key": key, "busy": self.busy_s}) is not None:
                return
            row = await self._query(_CHAT_WAIT, {"key": key})
            wait = float(row[0]) if row is not None else 0.0
            await self._sleep(min(max(wait, 0.01), 0.25))  # another process's request may free it early

    @asynccontextmanager
    async def slot(self, chat_id: str | None = None) -> AsyncIterator[None]:
        """One request slot: the chat taken (across processes), then the tenant's next start."""
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.max_in_flight)
        if chat_id is None:
            await self._tenant_turn()
            async with self._in_flight:
                yield
            return
        lock = self._chat_locks.setdefault(chat_id, asyncio.Lock())
        async with lock:  # this process's requests into the chat queue here, not in the database
            while (wait := self.ready_at(chat_id) - self._clock()) > 0:
                await self._sleep(wait)  # a 429's Retry-After
            await self._take_chat(chat_id)
            try:
                await self._tenant_turn()
                async with self._in_flight:
                    yield
            finally:
                gap = max(self.chat_gap, self.ready_at(chat_id) - self._clock())
                await self._query(_FREE_CHAT, {"key": f"chat:{chat_id}", "gap": gap})

    def close(self) -> None:
        """Close the pacer's connection and thread (for good)."""
        self._closer()


def _close(box: list[Any], thread: ThreadPoolExecutor) -> None:
    thread.shutdown(wait=True)
    if box[0] is not None:
        with contextlib.suppress(Exception):
            box[0].close()
        box[0] = None
