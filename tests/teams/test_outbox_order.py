"""Delivery order of open outbox rows: unconfirmed first, then the chats in turn, each in send order.

Rows are loaded in chunks (``send.DELIVER_CHUNK``); the engine runs one request per chat at a time.
A send planned recipient by recipient must not hand the engine a chunk of one chat only.
"""

from __future__ import annotations

from typing import Any

import pytest

import crmkit
from crmkit.teams.outbox import OutboxMessage, add_messages, claim, create_batch, open_ids, open_rows

pytestmark = pytest.mark.core


def _batch(crm: crmkit.CRM, chats: int, per_chat: int) -> list[tuple[str, str]]:
    """Rows planned chat after chat (as a send to several people is), as (id, members) in seq order."""
    messages = [OutboxMessage(payload={}, marker=f"m{c}-{i}", chat_kind="oneOnOne", members=["me", f"p{c}"],
                              recipients=[], address_ids=[i], field_names={})
                for c in range(chats) for i in range(per_chat)]

    def make(tx: Any) -> None:
        batch = create_batch(tx, user="admin", account=None, channel="teams_manual", trigger="manual",
                             purpose=None, subject="x", options={}, record_contact=False)
        add_messages(tx, batch, messages)

    crm.store.write(make)
    return [(m.id, m.members[1]) for m in messages]


def test_chats_take_turns_each_in_send_order(crm: crmkit.CRM) -> None:
    planned = _batch(crm, chats=3, per_chat=4)
    batch = crm.store.one("SELECT batch_id FROM outbox LIMIT 1")
    chat_of = dict(planned)
    ids = open_ids(crm.store, [batch])
    assert [chat_of[i] for i in ids[:3]] == ["p0", "p1", "p2"]  # a chunk of three holds every chat
    for person in ("p0", "p1", "p2"):
        assert [i for i in ids if chat_of[i] == person] == [i for i, p in planned if p == person]
    rows = open_rows(crm.store, ids[:6])
    assert rows["id"].tolist() == ids[:6]


def test_unconfirmed_rows_come_first(crm: crmkit.CRM) -> None:
    planned = _batch(crm, chats=2, per_chat=3)
    batch = crm.store.one("SELECT batch_id FROM outbox LIMIT 1")
    late = planned[-1][0]
    claim(crm.store, [late])  # left 'sending' by a run that died
    assert open_ids(crm.store, [batch])[0] == late
