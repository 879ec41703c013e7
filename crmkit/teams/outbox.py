"""The durable outbox: every Teams message has a row before it is sent.

States of a message row::

    pending ──claim──▶ sending ──201──────────────▶ sent
       ▲                  │ ──definite 4xx──────▶ failed
       │                  │ ──no answer / 5xx──▶ sending (ambiguous: reconcile before retry)
       └──cancel──▶ cancelled

A row in ``sending`` may or may not have reached Teams (the process died, the answer got lost).
Before posting it again the sender reads the chat back and looks for the row's marker (the
adaptive-card attachment id, which crmkit chose): found means delivered, so it is never posted
twice. Delivery state, transfer-log rows and contacts commit in one transaction.

The tables ``outbox_batches`` and ``outbox`` are made by migrations 4, 7 and 8 (crmkit/migrations.py);
this module only queries them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from ..processes import HOST, process_gone
from ..store import Store, Tx

__all__ = [
    "STAGED", "Delivery", "OutboxMessage", "claim", "create_batch", "finish", "keyed_batch", "open_ids", "open_rows",
    "pending_batches",
    "purge_abandoned_staging", "staging_id",
]

OPEN_STATES = ("pending", "sending")


@dataclass
class OutboxMessage:
    """One message to post: who gets it, in which chat, about which addresses."""

    payload: dict[str, Any]
    marker: str  # client-chosen id found again in the chat (the card's attachment id)
    chat_kind: str  # oneOnOne | group | channel
    members: list[str]  # Entra object ids, the sender included
    recipients: list[dict[str, str]]  # [{id, name}] - the people the record goes to
    address_ids: list[int]
    field_names: dict[str, list[str]]  # per address id (as text): the display fields it shows
    topic: str | None = None
    contact_subject: str | None = None
    contact_notes: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    chat_id: str | None = None  # known before sending: a channel post's channel key (chat_kind 'channel')


@dataclass
class Delivery:
    """The outcome of one attempt, as the sender hands it to :func:`finish`."""

    id: str
    status: str  # sent | failed | cancelled | sending (still ambiguous)
    chat_id: str | None = None
    message_id: str | None = None
    error: str | None = None
    at: datetime | None = None


def create_batch(
    tx: Tx, *, user: str, account: str | None, channel: str, trigger: str, purpose: str | None,
    subject: str, options: dict[str, Any], record_contact: bool, source: str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """A new batch row; ``idempotency_key`` is unique per user (a second batch under it is a constraint error)."""
    batch_id = uuid.uuid4().hex
    tx.execute(
        "INSERT INTO outbox_batches (id, created_at, user_name, account, channel, trigger, purpose, subject, options, "
        "record_contact, source, status, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)",
        [batch_id, utcnow(), user, account, channel, trigger, purpose, subject, json.dumps(options), record_contact,
         source, idempotency_key],
    )
    return batch_id


def keyed_batch(tx: Tx, user: str, idempotency_key: str) -> str | None:
    """The batch ``user`` made under ``idempotency_key``, or None."""
    rows = tx.rows("SELECT id FROM outbox_batches WHERE user_name = ? AND idempotency_key = ?",
                   [user, idempotency_key])
    return str(rows[0][0]) if rows else None


def add_messages(tx: Tx, batch_id: str, messages: Sequence[OutboxMessage], *, first_seq: int = 0) -> None:
    """Write message rows (status pending) in one statement."""
    if not messages:
        return
    frame = pd.DataFrame({
        "id": [m.id for m in messages],
        "batch_id": batch_id,
        "seq": range(first_seq, first_seq + len(messages)),
        "marker": [m.marker for m in messages],
        "chat_kind": [m.chat_kind for m in messages],
        "members": [json.dumps(m.members) for m in messages],
        "topic": [m.topic for m in messages],
        "recipients": [json.dumps(m.recipients, ensure_ascii=False) for m in messages],
        "address_ids": [json.dumps(m.address_ids) for m in messages],
        "field_names": [json.dumps(m.field_names) for m in messages],
        "payload": [json.dumps(m.payload, ensure_ascii=False) for m in messages],
        "contact_subject": [m.contact_subject for m in messages],
        "contact_notes": [m.contact_notes for m in messages],
        "chat_id": pd.Series([m.chat_id for m in messages], dtype=object),
    })
    tx.register("_outbox_new", frame)
    try:
        tx.execute(
            "INSERT INTO outbox (id, batch_id, seq, marker, chat_kind, members, topic, recipients, address_ids, "
            "field_names, payload, contact_subject, contact_notes, chat_id, status, attempts) "
            "SELECT id, batch_id, seq, marker, chat_kind, members, topic, recipients, address_ids, field_names, "
            "payload, contact_subject, contact_notes, CAST(chat_id AS VARCHAR), 'pending', 0 FROM _outbox_new"
        )
    finally:
        tx.unregister("_outbox_new")


def utcnow() -> datetime:
    """Naive UTC, comparable with Graph's ``createdDateTime`` whatever the machine's time zone."""
    return datetime.now(UTC).replace(tzinfo=None)


_OPEN = "FROM outbox o JOIN outbox_batches b ON b.id = o.batch_id WHERE o.status IN ('pending', 'sending') AND "
# Unconfirmed rows first: reconciling them early keeps their messages near the top of the chat. Then
# the chats take turns (each chat's rows in send order): rows are loaded in chunks, and a chunk holding
# one chat's rows only could go no faster than that one chat (Teams: 1/s), the other chats idle.
_ORDER = (" ORDER BY o.status = 'sending' DESC, b.created_at, row_number() OVER (PARTITION BY o.batch_id, "
          "o.chat_kind, CAST(o.members AS VARCHAR) ORDER BY o.seq), o.seq")


def open_ids(store: Store, batch_ids: Sequence[str]) -> list[str]:
    """Ids of the rows of these batches still to deliver (pending or ambiguous): unconfirmed first, then
    the chats in turn, each chat's rows in send order."""
    if not batch_ids:
        return []
    sql = f"SELECT o.id {_OPEN}o.batch_id IN ({', '.join('?' * len(batch_ids))}){_ORDER}"
    return [r[0] for r in store.read(lambda tx: tx.rows(sql, list(batch_ids)))]


def open_rows(store: Store, ids: Sequence[str]) -> pd.DataFrame:
    """Those of ``ids`` still to deliver, with their batch's columns, in the order of :func:`open_ids`."""
    return store.df(
        "SELECT o.*, b.channel, b.trigger, b.purpose, b.account, b.user_name, b.record_contact, b.source, "
        f"b.created_at AS batch_created_at {_OPEN}o.id IN (SELECT unnest(?::VARCHAR[])){_ORDER}", [list(ids)],
    )


def pending_batches(store: Store, *, user: str | None = None, channels: Sequence[str] | None = None) -> list[str]:
    """Batches with rows still to deliver; ``channels`` keeps a sender to its own (manual vs campaign)."""
    sql = "SELECT DISTINCT o.batch_id FROM outbox o JOIN outbox_batches b ON b.id = o.batch_id " \
          "WHERE o.status IN ('pending', 'sending')"
    params: list[Any] = []
    if user is not None:
        sql += " AND b.user_name = ?"
        params.append(user)
    if channels is not None:
        sql += f" AND b.channel IN ({', '.join('?' * len(channels))})" if channels else " AND FALSE"
        params.extend(channels)
    return [r[0] for r in store.read(lambda tx: tx.rows(sql, params))]


STAGED = "staged"  # status of rows written by a send still being planned: no batch yet, never delivered
STAGING_ABANDONED_S = 24 * 3600  # staged rows this old are abandoned whoever staged them


def staging_id() -> str:
    """A fresh batch id for a send's staged rows, naming who stages them and since when."""
    return f"staging:{HOST}:{os.getpid()}:{int(time.time())}:{uuid.uuid4().hex}"


def _staging_abandoned(batch_id: str, now: float) -> bool:
    try:
        _, host, pid, since, _ = batch_id.split(":")
        started, owner = float(since), int(pid)
    except ValueError:
        return True  # not made by staging_id(): no process can be planning under it
    return process_gone(host, owner) or now - started > STAGING_ABANDONED_S


def purge_abandoned_staging(store: Store) -> int:
    """Delete staged rows left by a send whose planning never finished (its process died); returns
    how many. Rows of a send still being planned, here or on another machine, are kept."""
    staged = [r[0] for r in store.read(lambda tx: tx.rows(
        "SELECT DISTINCT batch_id FROM outbox WHERE status = ?", [STAGED]))]
    now = time.time()
    dead = [b for b in staged if _staging_abandoned(b, now)]
    if not dead:
        return 0

    def run(tx: Tx) -> int:
        marks = ", ".join("?" * len(dead))
        where = f"FROM outbox WHERE status = ? AND batch_id IN ({marks})"
        count = int(tx.one(f"SELECT count(*) {where}", [STAGED, *dead]))
        tx.execute(f"DELETE {where}", [STAGED, *dead])
        return count

    return store.write(run)


def claim(store: Store, ids: Sequence[str], *, at: datetime | None = None) -> None:
    """Mark rows as being sent *before* the request leaves, so a crash leaves them ambiguous, not lost.

    ``first_attempt_at`` (naive UTC, ``at``) is set on the first claim only: every post of the row
    happens after it, so reconciling an unanswered post reads the chat back no further than that.
    """
    if not ids:
        return
    store.write(lambda tx: tx.execute(
        "UPDATE outbox SET status = 'sending', attempts = attempts + 1, last_attempt_at = current_timestamp, "
        f"first_attempt_at = coalesce(first_attempt_at, ?) WHERE id IN ({', '.join('?' * len(ids))}) "
        "AND status IN ('pending', 'sending')",
        [at or utcnow(), *ids],
    ))


def cancel(store: Store, batch_id: str) -> int:
    """Stop a batch: its pending rows will never be sent (ambiguous rows are still reconciled)."""
    def run(tx: Tx) -> int:
        n = tx.one("SELECT count(*) FROM outbox WHERE batch_id = ? AND status = 'pending'", [batch_id])
        tx.execute("UPDATE outbox SET status = 'cancelled' WHERE batch_id = ? AND status = 'pending'", [batch_id])
        return int(n)

    return store.write(run)


def finish(store: Store, deliveries: Sequence[Delivery], *, write_side_effects: Any) -> None:
    """Record outcomes in one transaction with their transfer-log rows and contacts.

    ``write_side_effects(tx, row, delivery)`` writes the transfer log and contacts for a row
    whose outcome is final; it runs inside the same transaction. A row another resumer already
    finished is skipped, so a delivery is never logged twice.
    """
    if not deliveries:
        return
    by_id = {d.id: d for d in deliveries}

    def run(tx: Tx) -> None:
        ids = list(by_id)
        frame = tx.df(
            "SELECT o.*, b.channel, b.trigger, b.purpose, b.account, b.user_name, b.record_contact, b.source, "
            "b.options FROM outbox o JOIN outbox_batches b ON b.id = o.batch_id "
            f"WHERE o.id IN ({', '.join('?' * len(ids))})", ids,
        )
        for row in frame.itertuples(index=False):
            d = by_id[row.id]
            if row.status in ("sent", "failed", "cancelled"):
                continue
            if d.status == "sending":
                tx.execute("UPDATE outbox SET chat_id = coalesce(?, chat_id), error = ? WHERE id = ?",
                           [d.chat_id, d.error, d.id])
                continue
            tx.execute(
                "UPDATE outbox SET status = ?, chat_id = coalesce(?, chat_id), message_id = ?, error = ?, "
                "finished_at = coalesce(?, current_timestamp) WHERE id = ?",
                [d.status, d.chat_id, d.message_id, d.error, d.at, d.id],
            )
            if d.status != "cancelled":  # a cancelled row transferred nothing
                write_side_effects(tx, row, d)

    store.write(run)


# -- several delivering processes (PostgreSQL): rows claimed under a lease ------------------------------
#
# On PostgreSQL any number of processes (workers, senders, on any machine) deliver from one outbox. A process
# claims rows for itself (claimed_by = its holder id, claim_expires_at = a lease it renews while it lives);
# the claim is taken with FOR UPDATE SKIP LOCKED, so concurrent claimers never get the same row and never
# wait for each other. Only the holder marks a row 'sending' and posts it (claim_leased). A row whose lease
# ran out, or whose holder's process is gone on this machine, is taken over by the next claimer; if it was
# left 'sending', the engine reads the chat back before posting again, as after any crash.

LEASE_S = 60.0  # a holder renews its leases every LEASE_S / 3 while it delivers


def holder_process(holder: str) -> tuple[str | None, int | None]:
    """The (host, pid) a holder id ``role:host:pid:tag`` (campaigns' Claimer.here) names; (None, None) else."""
    parts = holder.split(":")
    if len(parts) < 4 or not parts[-2].isdigit():
        return None, None
    return ":".join(parts[1:-2]), int(parts[-2])


def _dead_holders(tx: Tx, holder: str, now: datetime) -> list[str]:
    """Other holders with live-looking leases on open rows whose process is known gone (this machine only)."""
    rows = tx.rows("SELECT DISTINCT claimed_by FROM outbox WHERE status IN ('pending', 'sending') "
                   "AND claimed_by IS NOT NULL AND claimed_by <> ? AND claim_expires_at >= ?", [holder, now])
    return [r[0] for r in rows if process_gone(*holder_process(r[0]))]


PER_CHAT = 5  # rows of one chat a claim takes at most: the chats (1/s each) spread over the claimers


def claim_open(store: Store, holder: str, batch_ids: Sequence[str], *, limit: int = 50, per_chat: int = PER_CHAT,
               ttl: float = LEASE_S) -> list[str]:
    """Claim up to ``limit`` open rows of ``batch_ids`` for ``holder``; returns their ids (PostgreSQL).

    Claimable are rows nobody holds, rows whose lease expired, rows of holders whose process is gone on
    this machine, and ``holder``'s own. A claim takes whole chats' turns: at most ``per_chat`` rows of a chat,
    and none of a chat another live holder has rows of (Teams takes one message a second per chat, so two
    processes in one chat would only wait for each other). Unconfirmed rows come first, then the chats in the
    order of their first rows, each chat's rows in send order. Statuses are left as they are.
    """
    if not batch_ids or limit <= 0:
        return []

    def run(tx: Tx) -> list[str]:
        now = utcnow()
        dead = _dead_holders(tx, holder, now)
        marks = ", ".join("?" * len(dead))
        gone = f" OR o.claimed_by IN ({marks})" if dead else ""
        free = f"(o.claimed_by IS NULL OR o.claimed_by = ? OR o.claim_expires_at < ?{gone})"
        batches = f"o.batch_id IN ({', '.join('?' * len(batch_ids))})"
        chat = "o.batch_id, o.chat_kind, CAST(o.members AS VARCHAR)"
        # Chats other live holders are delivering.
        held = (f"SELECT DISTINCT {chat} FROM outbox o WHERE o.status IN ('pending', 'sending') AND {batches} "
                "AND o.claimed_by IS NOT NULL AND o.claimed_by <> ? AND o.claim_expires_at >= ?"
                + (f" AND o.claimed_by NOT IN ({marks})" if dead else ""))
        # The free rows ranked in a subquery (a locking query cannot hold window functions). The outer WHERE
        # repeats the lease test, so a row another claimer took since this statement began is re-checked
        # (READ COMMITTED) and passed over.
        ranked = (f"SELECT o.id, o.status = 'sending' AS unconfirmed, b.created_at, o.seq, "
                  f"row_number() OVER (PARTITION BY {chat} ORDER BY o.seq) AS lap, "
                  f"min(o.seq) OVER (PARTITION BY {chat}) AS chat_first {_OPEN}{batches} AND {free} "
                  f"AND ({chat}) NOT IN ({held})")
        ids = [r[0] for r in tx.rows(
            f"SELECT o.id FROM outbox o JOIN ({ranked}) c ON c.id = o.id WHERE o.status IN ('pending', 'sending') "
            f"AND {free} AND c.lap <= ? ORDER BY c.unconfirmed DESC, c.created_at, c.chat_first, c.lap "
            "LIMIT ? FOR UPDATE OF o SKIP LOCKED",
            [*batch_ids, holder, now, *dead, *batch_ids, holder, now, *dead, holder, now, *dead, per_chat, limit])]
        if ids:
            taken = ", ".join("?" * len(ids))
            tx.execute(f"UPDATE outbox SET claimed_by = ?, claim_expires_at = ? WHERE id IN ({taken})",
                       [holder, now + timedelta(seconds=ttl), *ids])
        return ids

    # READ COMMITTED: a row another claimer committed meanwhile is re-checked against the WHERE instead of
    # failing the whole claim (REPEATABLE READ); SKIP LOCKED passes over rows a claim transaction holds.
    return store.write(run, isolation="read committed")


def claim_leased(store: Store, row_id: str, holder: str, *, at: datetime | None = None,
                 ttl: float = LEASE_S) -> bool:
    """:func:`claim` for a row ``holder`` leased (:func:`claim_open`): False when the lease is no longer its
    own (another process took the row over), and then nothing is changed and the row must not be posted."""
    now = at or utcnow()
    done = store.write(lambda tx: tx.rows(
        "UPDATE outbox SET status = 'sending', attempts = attempts + 1, last_attempt_at = current_timestamp, "
        "first_attempt_at = coalesce(first_attempt_at, ?), claim_expires_at = ? "
        "WHERE id = ? AND claimed_by = ? AND status IN ('pending', 'sending') RETURNING id",
        [now, now + timedelta(seconds=ttl), row_id, holder]))
    return bool(done)


def renew_leases(store: Store, holder: str, *, ttl: float = LEASE_S) -> int:
    """Extend ``holder``'s leases on its open rows; returns how many it still holds."""
    return int(store.write(lambda tx: tx.one(
        "WITH r AS (UPDATE outbox SET claim_expires_at = ? WHERE claimed_by = ? AND status IN ('pending', 'sending') "
        "RETURNING 1) SELECT count(*) FROM r", [utcnow() + timedelta(seconds=ttl), holder])))


def release_leases(store: Store, holder: str, ids: Sequence[str] | None = None) -> None:
    """Give up ``holder``'s leases (of ``ids``, else all): another process may take the rows at once."""
    where = f" AND id IN ({', '.join('?' * len(ids))})" if ids else ""
    if ids is not None and not ids:
        return
    store.write(lambda tx: tx.execute(
        f"UPDATE outbox SET claimed_by = NULL, claim_expires_at = NULL WHERE claimed_by = ?{where} "
        "AND status IN ('pending', 'sending')", [holder, *(ids or [])]))


def new_holder(role: str) -> str:
    """A lease holder id for this process, ``role:host:pid:tag`` (the form campaigns' Claimer.here makes)."""
    return f"{role}:{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
