"""A send carries an idempotency key: the same key yields the one batch it already made.

A double click or a re-run notebook cell with ``idempotency_key=k`` must not post again; the
messages are counted in the sandbox tenant's chats.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import pandas as pd
import pytest
from support.dbstate import db_snapshot, snapshot_diff
from support.sandbox import SandboxAdmin, colleagues

import crmkit
from crmkit import errors
from crmkit.auth import SignInRequired


def _batches(crm: crmkit.CRM) -> pd.DataFrame:
    return crm.store.df("SELECT id, user_name, idempotency_key FROM outbox_batches ORDER BY created_at")


def _per_chat(crm_tenant: SandboxAdmin) -> dict[str, int]:
    return {c["id"]: c["message_count"] for c in crm_tenant.get("chats")["value"] if c["message_count"]}


@pytest.mark.sandbox
def test_the_same_key_twice_delivers_once_and_returns_the_same_batch(sender: crmkit.CRM,
                                                                   crm_tenant: SandboxAdmin) -> None:
    to = colleagues(crm_tenant, 2)
    first = sender.teams.send([1, 3], to=to, subject="Einmal", idempotency_key="compose-1")
    assert first["status"].tolist() == ["sent"] * 4
    again = sender.teams.send([1, 3], to=to, subject="Einmal", idempotency_key="compose-1")
    pd.testing.assert_frame_equal(again, first)
    assert again.attrs["batch_ids"] == first.attrs["batch_ids"] and len(first.attrs["batch_ids"]) == 1
    assert crm_tenant.get("messages")["count"] == 4
    assert sorted(_per_chat(crm_tenant).values()) == [2, 2]  # one chat per colleague, each record once
    batches = _batches(sender)
    assert batches["idempotency_key"].tolist() == ["compose-1"]
    assert batches["id"].tolist() == first.attrs["batch_ids"]


@pytest.mark.sandbox
def test_the_same_key_with_other_content_returns_the_existing_batch(sender: crmkit.CRM,
                                                                    crm_tenant: SandboxAdmin) -> None:
    to = colleagues(crm_tenant, 2)
    first = sender.teams.send(1, to=to[:1], subject="Erste Fassung", idempotency_key="k")
    before = db_snapshot(sender.store)
    other = sender.teams.send([1, 2, 3], to=to, subject="Zweite Fassung", message="anders", idempotency_key="k")
    pd.testing.assert_frame_equal(other, first)
    assert crm_tenant.get("messages")["count"] == 1
    assert {m["subject"] for m in crm_tenant.get("messages")["value"]} == {"cobra CRM - Erste Fassung"}
    after = db_snapshot(sender.store)
    assert after == before, snapshot_diff(before, after)  # the repeat wrote nothing either


@pytest.mark.sandbox
def test_other_keys_and_no_key_send_again(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = colleagues(crm_tenant, 1)
    sender.teams.send(1, to=to, subject="A", idempotency_key="k1")
    sender.teams.send(1, to=to, subject="A", idempotency_key="k2")
    sender.teams.send(1, to=to, subject="A")
    sender.teams.send(1, to=to, subject="A")
    assert crm_tenant.get("messages")["count"] == 4
    assert sorted(_batches(sender)["idempotency_key"].fillna("-")) == ["-", "-", "k1", "k2"]


@pytest.mark.sandbox
def test_a_key_belongs_to_its_crm_user(sender: crmkit.CRM, crm_tenant: SandboxAdmin, db_location: str) -> None:
    """Another user's key finds nothing of theirs (no results of someone else's send leak)."""
    to = colleagues(crm_tenant, 1)
    sender.teams.send(1, to=to, subject="Admin", idempotency_key="shared")
    sender.add_user("kai", "Kai Klein", roles=["sales"])
    kai = crmkit.open(db_location, user="kai")
    try:
        with pytest.raises(SignInRequired):  # kai's own send: he has no Teams account yet
            kai.teams.send(1, to=to, subject="Kai", idempotency_key="shared")
    finally:
        kai.teams.close()
    assert crm_tenant.get("messages")["count"] == 1


@pytest.mark.sandbox
def test_two_sends_with_one_key_at_the_same_time_deliver_once(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = colleagues(crm_tenant, 2)
    go = threading.Event()
    out: list[Any] = []

    def press() -> None:
        go.wait(10)
        try:
            out.append(sender.teams.send([1, 2], to=to, subject="Doppelklick", idempotency_key="race"))
        except Exception as exc:  # reported by the assertion below
            out.append(exc)

    threads = [threading.Thread(target=press) for _ in range(2)]
    for th in threads:
        th.start()
    go.set()
    for th in threads:
        th.join(120)
    assert all(isinstance(r, pd.DataFrame) for r in out), out
    pd.testing.assert_frame_equal(out[0], out[1])
    assert out[0]["status"].tolist() == ["sent"] * 4
    assert crm_tenant.get("messages")["count"] == 4
    assert len(_batches(sender)) == 1


@pytest.mark.sandbox
def test_a_refused_send_leaves_its_key_unused(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = colleagues(crm_tenant, 1)
    with pytest.raises(errors.ValidationError):
        sender.teams.send(1, to=[f"nobody@{to[0].split('@')[1]}"], subject="Tippfehler", idempotency_key="k")
    result = sender.teams.send(1, to=to, subject="Richtig", idempotency_key="k")  # the corrected form, same key
    assert result["status"].tolist() == ["sent"]
    assert [m["subject"] for m in crm_tenant.get("messages")["value"]] == ["cobra CRM - Richtig"]


@pytest.mark.sandbox
@pytest.mark.parametrize("key", ["", "   ", 42, "k" * 201, "a\x00b", b"bytes"])
def test_a_bad_key_is_refused_before_anything(sender: crmkit.CRM, crm_tenant: SandboxAdmin, key: Any) -> None:
    before = db_snapshot(sender.store)
    with pytest.raises(errors.ValidationError, match="idempotency_key"):
        sender.teams.send(1, to=colleagues(crm_tenant, 1), subject="x", idempotency_key=key)
    after = db_snapshot(sender.store)
    assert after == before, snapshot_diff(before, after)
    assert crm_tenant.get("messages")["count"] == 0


def _duplicate_key_error(backend: str) -> type[Exception]:
    """What each database raises for a second row under a unique index."""
    if backend == "postgresql":
        import psycopg.errors

        return psycopg.errors.UniqueViolation
    return duckdb.ConstraintException


def _keyed(tx: Any, user: str = "admin", key: str | None = "k") -> str:
    from crmkit.teams.outbox import create_batch

    return create_batch(tx, user=user, account=None, channel="teams_manual", trigger="manual", purpose=None,
                        subject="x", options={}, record_contact=False, idempotency_key=key)


@pytest.mark.core
def test_the_store_refuses_a_second_batch_under_one_key(crm: crmkit.CRM, backend: str) -> None:
    """The unique index is what makes two writers racing with one key safe."""
    crm.store.write(_keyed)
    with pytest.raises(_duplicate_key_error(backend), match=r"(?i)duplicate key"):
        crm.store.write(_keyed)
    crm.store.write(lambda tx: _keyed(tx, user="kai"))
    for _ in range(2):  # no key: as many batches as wanted
        crm.store.write(lambda tx: _keyed(tx, key=None))
    assert crm.store.one("SELECT count(*) FROM outbox_batches") == 4


@pytest.mark.core
def test_a_batch_made_under_the_key_meanwhile_is_returned_and_the_staged_rows_go(
        crm: crmkit.CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the unique index decides: another writer made the key's batch after this one's check saw
    none, so the insert hits the index. ``activate`` returns that batch (made here: False) and deletes its
    staged rows, on DuckDB (ConstraintException) and on PostgreSQL (UniqueViolation, after the failed
    transaction was rolled back)."""
    from crmkit.teams import staging
    from crmkit.teams.options import SendOptions
    from crmkit.teams.outbox import STAGED, OutboxMessage, add_messages, staging_id
    from crmkit.teams.planning import SendPlan

    theirs = crm.store.write(_keyed)  # the other writer's batch under "k"
    mine = staging_id()
    message = OutboxMessage(payload={"body": {"content": "x"}}, marker="m", chat_kind="oneOnOne", members=["a", "b"],
                            recipients=[{"id": "b", "name": "B"}], address_ids=[1], field_names={"1": ["company"]})
    crm.store.write(lambda tx: (add_messages(tx, mine, [message]),
                                tx.execute("UPDATE outbox SET status = ? WHERE batch_id = ?", [STAGED, mine])))
    summary = SendPlan(subject="x", text="", options=SendOptions(), channel="teams_manual", trigger="manual", me={},
                       recipients=[{"id": "b", "name": "B"}], messages=[], blocked={}, log=False, purpose=None)
    real = staging.keyed_batch
    checks: list[str | None] = []

    def saw_nothing_yet(tx: Any, user: str, key: str) -> str | None:  # the check inside the write ran too early
        found = real(tx, user, key)
        checks.append(found)
        return None if len(checks) == 1 else found

    monkeypatch.setattr(staging, "keyed_batch", saw_nothing_yet)
    used: list[str | None] = []
    batch_id, made = staging.activate(crm.store, mine, summary, 1, user="admin", account=lambda: None,
                                      mark_used=lambda tx, account: used.append(account), idempotency_key="k")
    assert (batch_id, made) == (theirs, False)
    assert checks == [theirs, theirs]  # the in-write check, then the read after the refused insert
    assert crm.store.one("SELECT count(*) FROM outbox") == 0  # the staged row went
    assert crm.store.df("SELECT id FROM outbox_batches")["id"].tolist() == [theirs]
