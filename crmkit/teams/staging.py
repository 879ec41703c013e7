"""Staging a planned send in the outbox, and making it a batch in one transaction.

A large send is planned chunk by chunk (:func:`crmkit.teams.planning.plan_ids`); :func:`stage` writes each
chunk's rows under a staging id that no batch has (``status = 'staged'``), so delivery cannot see them.
When every chunk is planned, :func:`activate` creates the batch (:func:`enqueue_plan`, with the blocked
addresses' transfer-log rows) and turns the staged rows into its pending rows, in one transaction. A
refusal anywhere deletes what was staged (:func:`unstage`): nothing is sent and the outbox keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

import duckdb

from .. import privacy
from ..errors import StoreError
from .outbox import STAGED, add_messages, create_batch, keyed_batch, staging_id
from .planning import SendPlan

if TYPE_CHECKING:
    from ..store import Store, Tx

__all__ = ["activate", "enqueue_plan", "stage", "unstage"]


def _duplicate_key_errors(store: Store) -> tuple[type[BaseException], ...]:
    """What the store's database raises for a row a unique index refuses (psycopg is loaded on PostgreSQL only)."""
    if store.dialect == "postgresql":
        import psycopg.errors

        return (psycopg.errors.UniqueViolation,)
    return (duckdb.ConstraintException,)


def enqueue_plan(tx: Tx, plan: SendPlan, *, user: str, account: str | None, source: str | None = None,
                 idempotency_key: str | None = None) -> str:
    """Write a planned send to the outbox inside the caller's transaction; returns the batch id.

    Blocked addresses get their ``blocked`` transfer-log rows in the same transaction.
    """
    batch_id = create_batch(
        tx, user=user, account=account, channel=plan.channel, trigger=plan.trigger, purpose=plan.purpose,
        subject=plan.subject, options={**asdict(plan.options), "log": plan.log, "blocked": plan.blocked},
        record_contact=plan.options.record_contact, source=source, idempotency_key=idempotency_key,
    )
    add_messages(tx, batch_id, plan.messages)
    if plan.blocked:
        privacy.log_transfers(tx, [
            privacy.TransferRecord(
                user_name=user, channel=plan.channel, trigger=plan.trigger, address_id=a, fields=[],
                outcome="blocked", recipient_id=r["id"], recipient_name=r["name"], purpose=plan.purpose,
                ms_account=account, message_key=f"{batch_id}:blocked", detail=reason,
            )
            for a, reason in plan.blocked.items() for r in plan.recipients
        ])
    return batch_id


def _stage_rows(tx: Tx, staging: str, plan: SendPlan, first_seq: int) -> None:
    add_messages(tx, staging, plan.messages, first_seq=first_seq)
    tx.execute("UPDATE outbox SET status = ? WHERE batch_id = ? AND status = 'pending'", [STAGED, staging])


def stage(store: Store, chunks: Iterator[SendPlan]) -> tuple[str, SendPlan, int]:
    """Plan chunk by chunk, writing each chunk's rows as ``staged`` under a fresh id no batch has.

    Returns the staging id, a summary plan (no messages; blocked addresses and the log flag of
    the whole send) and the number of rows staged. Any refusal deletes the staged rows and is
    raised: nothing of the send stays.
    """
    staging = staging_id()
    summary: SendPlan | None = None
    seq = 0
    try:
        for plan in chunks:
            if plan.messages:
                store.write(lambda tx, p=plan, first=seq: _stage_rows(tx, staging, p, first))
                seq += len(plan.messages)
            if summary is None:
                summary = SendPlan(
                    subject=plan.subject, text=plan.text, options=plan.options, channel=plan.channel,
                    trigger=plan.trigger, me=plan.me, recipients=plan.recipients, messages=[], blocked={},
                    log=False, purpose=plan.purpose,
                )
            summary.blocked.update(plan.blocked)
            summary.log = summary.log or plan.log  # personal data anywhere in the send: log all of it
    except BaseException:
        unstage(store, staging)
        raise
    assert summary is not None  # plan_chunks yields at least one chunk (it refuses an empty selection)
    return staging, summary, seq


def unstage(store: Store, staging: str) -> None:
    """Delete the rows staged under ``staging``."""
    store.write(lambda tx: tx.execute("DELETE FROM outbox WHERE batch_id = ?", [staging]))


def activate(store: Store, staging: str, summary: SendPlan, staged: int, *, user: str,
             account: Callable[[], str | None], mark_used: Callable[[Tx, str | None], None],
             idempotency_key: str | None = None) -> tuple[str, bool]:
    """One transaction: the batch, its blocked transfer-log rows, and the staged rows made pending.

    ``account()`` names the sending Microsoft 365 account; ``mark_used(tx, account)`` stamps it in the
    same transaction. Returns the batch id and whether it was made here: a batch that already holds
    ``idempotency_key`` (made meanwhile elsewhere) is returned instead, and the staged rows go. Any
    failure deletes the staged rows.
    """
    try:
        sender = account()

        def run(tx: Tx) -> tuple[str, bool]:
            if idempotency_key is not None:
                existing = keyed_batch(tx, user, idempotency_key)
                if existing is not None:
                    tx.execute("DELETE FROM outbox WHERE batch_id = ?", [staging])
                    return existing, False
            batch_id = enqueue_plan(tx, summary, user=user, account=sender, idempotency_key=idempotency_key)
            mark_used(tx, sender)
            tx.execute("UPDATE outbox SET batch_id = ?, status = 'pending' WHERE batch_id = ? AND status = ?",
                       [batch_id, staging, STAGED])
            found = int(tx.one("SELECT count(*) FROM outbox WHERE batch_id = ?", [batch_id]))
            if found != staged:  # rolled back: a partial send must not go out as if it were whole
                raise StoreError(f"The send's planned messages are not all in the outbox ({found} of {staged}); "
                                 "nothing was sent. Send again.")
            return batch_id, True

        try:
            return store.write(run)
        except _duplicate_key_errors(store):
            # The unique index on (user, key): a writer that checked at the same moment won. store.write
            # rolled the failed transaction back (PostgreSQL runs nothing more in it); read in a new one.
            existing = None if idempotency_key is None else store.read(
                lambda tx: keyed_batch(tx, user, idempotency_key))
            if existing is None:
                raise
            unstage(store, staging)
            return existing, False
    except BaseException:
        unstage(store, staging)
        raise
