"""Teams' limits shared by every process that posts for one CRM (PostgreSQL).

Teams counts 20 chat-message requests per second per app per tenant and 1 per second per chat, whoever
sends them. :class:`~crmkit.graph.RateLimiter` paces one process; with several workers each would take
the whole budget. :class:`SharedPacer` keeps the pacing in the database instead (table ``teams_pacing``,
migration 12), on the database server's clock, so every process on every machine takes its turns from
the same schedule:

- the tenant row (key ``tenant``) holds the next free start time. A request reserves a start with one
  atomic ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (a row lock: callers queue, none share a slot),
  ``1 / (rate × spacing)`` seconds after the previous one (18.6/s at Teams' 20/s); idle time earns no credit.
  Then, awake, it records its actual start in the row's ``starts`` (one atomic ``UPDATE … WHERE``) only
  while fewer than ``floor(rate × headroom)`` = 19 starts fall in the last second *and* fewer than
  ``floor(rate)`` = 20 in the last ``1 + tolerance_s`` seconds, else it waits until they would:
  callers that woke late (a busy machine) cannot bunch up past the caps.
  Why the two numbers differ: Teams counts a request when it handles it, some time after its start was
  recorded here (the way back from the database, the event loop, the network). 21 requests land in one of
  its seconds only if the first of them took longer, by more than their starts' span less 1 s, than the
  21st. Starts spaced exactly at the cap (19/s) left ~0 s of that: on any jitter the cap held starts
  back until the oldest left the window, so each second copied the previous one's bunches (measured:
  21 starts within 1.002–1.044 s, 5 × 429 in 1,000 posts). Spaced at 18.6/s an on-time 21 span 1.075 s,
  and the second window keeps any 21 recorded starts at least ``1 + tolerance_s`` apart.
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
import math
import os
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
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
_RECENT = "FROM unnest(coalesce(starts, '{}'::double precision[])) s"
# Record a start only while both windows have room: < cap in the last second, < limit in the last `span` s.
_START = (
    f"UPDATE teams_pacing SET starts = array_append(ARRAY(SELECT s {_RECENT} WHERE s > {_NOW} - %(span)s), "
    f"CAST({_NOW} AS double precision)) "
    f"WHERE key = %(key)s AND (SELECT count(*) {_RECENT} WHERE s > {_NOW} - 1) < %(cap)s "
    f"AND (SELECT count(*) {_RECENT} WHERE s > {_NOW} - %(span)s) < %(limit)s RETURNING starts[cardinality(starts)]"
)
# How long until both windows have room: the start that must leave each (the cap-th, limit-th newest).
_START_WAIT = (
    f"SELECT greatest((SELECT s + 1 {_RECENT} ORDER BY s DESC OFFSET %(cap)s - 1 LIMIT 1), "
    f"(SELECT s + %(span)s {_RECENT} ORDER BY s DESC OFFSET %(limit)s - 1 LIMIT 1)) - {_NOW} "
    "FROM teams_pacing WHERE key = %(key)s"
)
_FREE_CHAT = f"UPDATE teams_pacing SET next_at = {_NOW} + %(gap)s WHERE key = %(key)s"


class SharedPacer(RateLimiter):
    """A :class:`~crmkit.graph.RateLimiter` whose tenant and chat turns come from the database.

    Args:
        url: the CRM's PostgreSQL URL (the pacer opens one connection of its own, on first use).
        tenant_rate, chat_rate, headroom: as for RateLimiter (``headroom`` sets the per-second cap).
        spacing: the share of ``tenant_rate`` the schedule spends (0.93: 18.6/s at 20/s), below the cap,
            so that on-time starts never meet it and any 21 of them span more than 1 s + ``tolerance_s``.
        tolerance_s: at most ``floor(tenant_rate)`` recorded starts in any ``1 + tolerance_s`` seconds: how much
            later than its successors a request may reach Teams before a second holds one too many.
        busy_s: how long a chat stays taken by a request whose process died before freeing it
            (longer than a request may take: the Graph time-out, ``CRMKIT_GRAPH_TIMEOUT``, plus a margin).
    """

    def __init__(self, url: str, tenant_rate: float = TEAMS_TENANT_RATE, chat_rate: float = TEAMS_CHAT_RATE, *,
                 headroom: float = 0.95, spacing: float = 0.93, tolerance_s: float = 0.06,
                 busy_s: float | None = None, key: str = "tenant") -> None:
        super().__init__(tenant_rate, chat_rate, headroom=headroom)
        if not 0 < spacing <= headroom or not 0 <= tolerance_s < 1:
            raise ValueError("spacing must be positive and at most headroom; tolerance_s between 0 and 1 s")
        self.tenant_interval = 1.0 / (tenant_rate * spacing)
        self.limit = max(1, math.floor(tenant_rate))
        self.span_s = 1.0 + tolerance_s
        self.url = url
        self.key = key
        self.busy_s = busy_s if busy_s is not None else float(os.environ.get("CRMKIT_GRAPH_TIMEOUT") or 30) + 5
        self.capped = 0  # starts held back by the caps (for tests and benches)
        self.recorded: deque[float] = deque(maxlen=10_000)  # this pacer's recorded starts, database clock (same)
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
        windows = {"key": self.key, "cap": self.window_cap, "limit": self.limit, "span": self.span_s}
        while (row := await self._query(_START, windows)) is None:
            self.capped += 1
            row = await self._query(_START_WAIT, windows)
            wait = float(row[0]) if row is not None and row[0] is not None else 0.0
            await self._sleep(min(max(wait, 0.002), 1.0))
        self.recorded.append(float(row[0]))

    async def _take_chat(self, chat_id: str) -> None:
        """The chat's row taken for this request, across processes (this process's own queue at the chat's
        lock in :meth:`RateLimiter.slot`)."""
        key = f"chat:{chat_id}"
        while True:
            if await self._query(_TAKE_CHAT, {"key": key, "busy": self.busy_s}) is not None:
                return
            row = await self._query(_CHAT_WAIT, {"key": key})
            wait = float(row[0]) if row is not None else 0.0
            await self._sleep(min(max(wait, 0.01), 0.25))  # another process's request may free it early

    async def _free_chat(self, chat_id: str, started: bool) -> None:
        """Freed whether or not the request started (the row was taken): the gap from now, or a 429's
        Retry-After if longer."""
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
