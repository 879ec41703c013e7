"""Deliver outbox rows to Teams: exactly once, near Teams' rate limits, resumable.

The engine is async and runs on the Graph client's own event loop. Database work (claiming rows,
recording outcomes) runs in a worker thread so it never stalls the requests in flight; outcomes
are committed in small groups, each group in one transaction with its transfer-log rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from ..errors import GraphError
from ..store import Store
from . import outbox
from .file_send import FILE_KEY, FileStep
from .outbox import LEASE_S, Delivery, claim, claim_leased, claim_open, finish, open_ids, open_rows, utcnow

if TYPE_CHECKING:
    from ..graph import GraphClient

__all__ = ["Ambiguous", "ChatGateway", "DeliveryEngine", "Progress", "deliver_shared", "progress_after"]

# Statuses that prove the message was not stored; anything else after the request left is ambiguous.
DEFINITE_FAILURES = {400, 401, 403, 404, 409, 413, 422}


class Ambiguous(Exception):  # an outcome to reconcile, never shown to users
    """The request may or may not have reached Teams (time-out, dropped connection, 5xx)."""


class ChatGateway(Protocol):
    """What delivery needs from Microsoft Graph (see :class:`crmkit.teams.gateway.GraphChatGateway`)."""

    async def ensure_chat(self, kind: str, members: list[str], topic: str | None) -> str: ...

    async def post_message(self, chat_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Post once (429 may be retried inside; nothing ambiguous is). Raises Ambiguous or GraphError."""
        ...

    async def find_marker(self, chat_id: str, marker: str, payload: dict[str, Any], since: datetime) -> str | None:
        """The id of a message carrying ``marker`` posted after ``since`` (naive UTC), else None."""
        ...


@dataclass
class Progress:
    done: int
    total: int
    sent: int
    failed: int
    last: Delivery | None = None


class DeliveryEngine:
    """Sends a frame of outbox rows (from :func:`outbox.open_rows`).

    Args:
        store: the record store.
        gateway: the Graph side.
        side_effects: ``(tx, row, delivery)`` writing transfer log and contacts for final outcomes.
        concurrency: requests in flight; the gateway's rate limiter does the pacing.
        max_attempts: posts per message before it is left for a later resume.
        holder: the lease holder whose rows these are (:func:`outbox.claim_open`, several processes on
            PostgreSQL): a row is marked sending only while its lease is still ours, else skipped, and the
            leases are renewed while the engine runs. None: the single sender of a DuckDB file.
    """

    def __init__(
        self, store: Store, gateway: ChatGateway, side_effects: Callable[..., None], *,
        concurrency: int = 12, max_attempts: int = 6, commit_every: float = 0.2, holder: str | None = None,
    ) -> None:
        self.holder = holder
        self.store = store
        self.gateway = gateway
        self.side_effects = side_effects
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.commit_every = commit_every
        self._chats: dict[tuple[str, tuple[str, ...]], str] = {}
        self._chat_locks: defaultdict[tuple[str, tuple[str, ...]], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._files: FileStep | None = None

    def _file_step(self) -> FileStep:
        if self._files is None:
            self._files = FileStep(self.store, self.gateway.aio)  # type: ignore[attr-defined]
        return self._files

    async def run(
        self, rows: pd.DataFrame, *, progress: Callable[[Progress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Delivery]:
        total = len(rows)
        results: list[Delivery] = []
        if not total:
            return results
        lanes = Lanes(rows)
        pending: list[Delivery] = []
        state = Progress(0, total, 0, 0)
        lock = asyncio.Lock()
        flush_lock = asyncio.Lock()

        async def flush() -> None:
            async with flush_lock:
                batch, pending[:] = pending[:], []
                if batch:
                    await asyncio.to_thread(finish, self.store, batch, write_side_effects=self.side_effects)

        async def worker() -> None:
            while (taken := await lanes.take(cancel)) is not None:
                lane, row = taken
                try:
                    claimed_at = utcnow()
                    if self.holder is None:
                        await asyncio.to_thread(claim, self.store, [row["id"]], at=claimed_at)
                    elif not await asyncio.to_thread(claim_leased, self.store, row["id"], self.holder,
                                                     at=claimed_at):
                        continue  # another process took the row over (our lease ran out): never post it
                    delivery = await self._deliver(row, _first_attempt(row, claimed_at), cancel)
                finally:
                    await lanes.release(lane)
                async with lock:
                    pending.append(delivery)
                    results.append(delivery)
                    state.done += 1
                    state.sent += delivery.status == "sent"
                    state.failed += delivery.status == "failed"
                    state.last = delivery
                    if progress is not None:
                        progress(state)

        stopping = asyncio.Event()

        async def committer() -> None:
            # Never cancelled mid-flush: a cancelled flush would drop outcomes already taken from `pending`.
            renewed = time.monotonic()
            while not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.commit_every)
                await flush()
                if self.holder is not None and time.monotonic() - renewed > LEASE_S / 3:
                    await asyncio.to_thread(outbox.renew_leases, self.store, self.holder)  # we are alive: keep our rows
                    renewed = time.monotonic()

        ticker = asyncio.create_task(committer())
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, total))))
        finally:
            stopping.set()
            await ticker
            await flush()
        return results

    async def _chat_for(self, row: Mapping[str, Any]) -> str:
        if row.get("chat_id"):
            return str(row["chat_id"])
        members = tuple(sorted(json.loads(row["members"])))
        key = (row["chat_kind"] if row["chat_kind"] == "oneOnOne" else row["batch_id"], members)
        async with self._chat_locks[key]:
            if key not in self._chats:
                self._chats[key] = await self.gateway.ensure_chat(row["chat_kind"], list(members), row.get("topic"))
        return self._chats[key]

    async def _deliver(self, row: Mapping[str, Any], first_attempt: datetime,
                       cancel: threading.Event | None = None) -> Delivery:
        """Post ``row`` once; an unanswered post is looked for in the chat back to ``first_attempt``
        (naive UTC, the row's first claim: none of its posts can be older), not to the batch's start."""
        payload = json.loads(row["payload"])
        marker = row["marker"]
        chat_id: str | None = None
        ambiguous = row["status"] == "sending"  # a previous run may have posted it
        last_error = "not attempted"
        for attempt in range(self.max_attempts):
            posting = False
            try:
                chat_id = await self._chat_for(row)
                if FILE_KEY in payload and (ambiguous or cancel is None or not cancel.is_set()):
                    # A set sent as one file: the file once in OneDrive and shared, then attached; the
                    # read-back looks for its attachment id (crmkit/teams/file_send.py).
                    payload, marker = await self._file_step().complete(row, payload)
                if ambiguous:
                    found = await self.gateway.find_marker(chat_id, marker, payload, first_attempt)
                    if found:
                        return Delivery(row["id"], "sent", chat_id, found, at=_now())
                if cancel is not None and cancel.is_set():
                    # Nothing of this row can be in Teams (fresh, or reconciled as absent): safe to drop.
                    return Delivery(row["id"], "cancelled", chat_id, error="cancelled before sending")
                posting = True
                result = await self.gateway.post_message(chat_id, payload)
                return Delivery(row["id"], "sent", chat_id, str(result.get("id")), at=_now())
            except Ambiguous as exc:
                ambiguous, last_error = True, str(exc) or "no answer from Teams"
            except GraphError as exc:
                last_error = _describe(exc)
                # A definite refusal proves nothing was stored only for a fresh post, or before any post;
                # a failed read-back of an unconfirmed message proves nothing, so it stays unconfirmed.
                if exc.status in DEFINITE_FAILURES and (posting or not ambiguous):
                    return Delivery(row["id"], "failed", chat_id, error=last_error, at=_now())
                if exc.status is None or exc.status >= 500:
                    ambiguous = ambiguous or posting
            await asyncio.sleep(min(0.5 * 2 ** attempt, 8.0))
        # Still unknown: leave it in 'sending' for the next resume, which reconciles first.
        return Delivery(row["id"], "sending", chat_id, error=last_error)


def _first_attempt(row: Mapping[str, Any], claimed_at: datetime) -> datetime:
    """When the row was first claimed: as loaded if an earlier run claimed it, else this claim. A row
    left 'sending' by a version that did not record it falls back to its batch's start."""
    first = row.get("first_attempt_at")
    if first is not None and not pd.isna(first):
        return first  # type: ignore[no-any-return]
    return row["batch_created_at"] if row.get("status") == "sending" else claimed_at


def _describe(exc: GraphError) -> str:
    parts = [str(exc)]
    if exc.code:
        parts.append(f"code={exc.code}")
    if exc.request_id:
        parts.append(f"request-id={exc.request_id}")
    return "; ".join(parts)


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


class Lanes:
    """Outbox rows grouped by chat, handed out one chat at a time.

    Teams takes one message per second per chat, so a second request into a busy chat would only
    wait in the pacer (and could no longer be cancelled). Workers take the next row of a chat that
    has nothing in flight, round-robin, so consecutive requests go to different chats.
    """

    def __init__(self, rows: pd.DataFrame) -> None:
        clean = rows.astype(object).where(rows.notna(), None)  # NaN/NA would read as truthy chat ids
        self._rows: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        for row in clean.to_dict("records"):
            self._rows[row.get("chat_id") or f"{row['chat_kind']}:{row['members']}"].append(row)
        self._order = deque(self._rows)
        self._busy: set[str] = set()
        self._changed = asyncio.Condition()

    async def take(self, cancel: threading.Event | None) -> tuple[str, dict[str, Any]] | None:
        """The next row of an idle chat; None when all are handed out (or cancelled)."""
        async with self._changed:
            while True:
                if cancel is not None and cancel.is_set():
                    return None
                for _ in range(len(self._order)):
                    lane = self._order[0]
                    self._order.rotate(-1)
                    if lane not in self._busy and self._rows[lane]:
                        self._busy.add(lane)
                        return lane, self._rows[lane].popleft()
                if not any(self._rows.values()):
                    return None
                # Wake up now and then to notice a cancel even while every chat is busy.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.5)

    async def release(self, lane: str) -> None:
        async with self._changed:
            self._busy.discard(lane)
            self._changed.notify_all()


SHARED_CHUNK = 50  # rows a process claims at a time when several share the outbox
MAX_IDLE_PASSES = 5  # claims in a row that brought no final outcome before delivery gives up for now


def deliver_shared(
    store: Store, graph: GraphClient, gateway: ChatGateway, batch_ids: list[str], *, holder: str,
    side_effects: Callable[..., None], progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None, until: threading.Event | None = None, chunk: int = SHARED_CHUNK,
) -> list[Delivery]:
    """Deliver the open rows of ``batch_ids`` that this process can claim, beside any other processes doing
    the same (PostgreSQL): :data:`SHARED_CHUNK` rows at a time under ``holder``'s lease (outbox.claim_open,
    ``FOR UPDATE SKIP LOCKED``), until none is left to claim. Rows other live processes hold are theirs;
    those of a dead or expired holder are taken over (read back first if they were left sending).

    ``cancel`` cancels the batches' pending rows (a user's stop); ``until`` only ends this process's part
    after the chunk in hand (a worker stopping), the rest left to the others. Without ``until`` (a sender)
    it also waits for the rows other live processes hold, so the send's results are final when it returns.
    Returns this process's outcomes; rows still unconfirmed are released for a later pass (or process).
    """
    engine = DeliveryEngine(store, gateway, side_effects, holder=holder)
    total = len(open_ids(store, batch_ids)) if progress is not None else 0
    counts = Progress(0, total, 0, 0)
    outcomes: list[Delivery] = []
    idle = 0
    try:
        while not any(e is not None and e.is_set() for e in (cancel, until)) and idle < MAX_IDLE_PASSES:
            ids = claim_open(store, holder, batch_ids, limit=chunk)
            if not ids:
                if until is not None or not _held_by_others(store, holder, batch_ids):
                    break
                time.sleep(0.5)  # their rows end sent, failed or released (a lease ends with its process)
                continue
            rows = open_rows(store, ids)
            done = graph.submit(engine.run(rows, progress=progress_after(progress, counts), cancel=cancel)).result() \
                if len(rows) else []
            outcomes += done
            counts.done += len(done)
            counts.sent += sum(d.status == "sent" for d in done)
            counts.failed += sum(d.status == "failed" for d in done)
            unconfirmed = [d.id for d in done if d.status == "sending"]
            if unconfirmed:
                outbox.release_leases(store, holder, unconfirmed)  # reconciled by the next claim, ours or another's
            idle = 0 if any(d.status != "sending" for d in done) else idle + 1
        if cancel is not None and cancel.is_set():
            for b in batch_ids:
                outbox.cancel(store, b)
    finally:
        outbox.release_leases(store, holder)  # whatever we still hold: another process may go on at once
    return outcomes


def _held_by_others(store: Store, holder: str, batch_ids: list[str]) -> bool:
    """Whether other processes hold live leases on open rows of these batches."""
    return bool(store.one(
        "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending') AND claimed_by <> ? AND "
        f"claim_expires_at >= ? AND batch_id IN ({', '.join('?' * len(batch_ids))})", [holder, utcnow(), *batch_ids]))


def progress_after(progress: Callable[[Progress], None] | None, before: Progress) -> Callable[[Progress], None] | None:
    """A chunk's progress reported as progress of the whole delivery (the counts of earlier chunks added)."""
    if progress is None:
        return None

    def report(p: Progress) -> None:
        progress(Progress(before.done + p.done, before.total, before.sent + p.sent, before.failed + p.failed,
                          p.last))

    return report
