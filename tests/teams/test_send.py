"""Sending records through the sandbox tenant: what arrives, what is logged, what is refused."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
from support.sandbox import SandboxAdmin, colleagues

import crmkit
from crmkit import privacy
from crmkit.sandbox import SANDBOX_DOMAIN

pytestmark = pytest.mark.sandbox

def _two_colleagues(crm_tenant: SandboxAdmin) -> list[str]:
    return colleagues(crm_tenant, 2)


def test_send_one_record_to_two_people_with_contact(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = _two_colleagues(crm_tenant)
    result = sender.teams.send(1, to=to, subject="Neuer Lead", message="Bitte <b>heute</b> anrufen",
                               record_contact=True)
    assert result["status"].tolist() == ["sent", "sent"]
    assert sorted(result["recipient_name"]) == sorted(result["recipient_name"].unique())
    delivered = crm_tenant.get("messages")["value"]
    assert len(delivered) == 2
    for m in delivered:
        assert m["subject"] == "cobra CRM - Neuer Lead"
        assert "cobra CRM - Neuer Lead" not in m["body"]["content"]  # the subject is Teams' heading, once
        card = json.loads(m["attachments"][0]["content"])
        facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
        assert "Müller & Söhne GmbH" in json.dumps(card, ensure_ascii=False)
        assert any("Berlin" in v for v in facts.values())
    contacts = sender.contacts(1)
    assert contacts["type_code"].tolist() == ["TS"]
    assert contacts["message_id"].iloc[0] in {m["id"] for m in delivered}
    log = privacy.transfer_log(sender)
    assert len(log) == 2 and set(log["outcome"]) == {"sent"}
    assert set(log["message_id"]) == {m["id"] for m in delivered}
    assert "company" in list(log["fields"].iloc[0])


def test_script_in_a_field_arrives_escaped_in_card_and_table(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = _two_colleagues(crm_tenant)[:1]
    sender.teams.send(2, to=to, subject="Card")
    sender.teams.send(2, to=to, subject="Table", record_format="table")
    for m in crm_tenant.get("messages")["value"]:
        raw = m["body"]["content"] + "".join(a["content"] for a in m.get("attachments") or [])
        assert "<script>" not in raw
    table = next(m for m in crm_tenant.get("messages")["value"] if m["subject"].endswith("Table"))
    assert "&lt;script&gt;" in table["body"]["content"]


def test_blocked_address_is_never_sent_and_logged_blocked(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    privacy.set_flag(sender, 3, "no_transfer")
    result = sender.teams.send([1, 3], to=_two_colleagues(crm_tenant)[:1], subject="Zwei")
    assert dict(zip(result["record"], result["status"], strict=True)) == {1: "sent", 3: "blocked"}
    assert len(crm_tenant.get("messages")["value"]) == 1
    log = privacy.transfer_log(sender)
    assert sorted(log["outcome"]) == ["blocked", "sent"]


@pytest.mark.parametrize(("to", "match"), [
    ([], "at least one recipient"),
    ([f"nobody@{SANDBOX_DOMAIN}"], "not in the organisation's directory"),
])
def test_bad_recipients_fail_before_anything_is_sent(sender: crmkit.CRM, crm_tenant: SandboxAdmin, to: list[str],
                                                     match: str) -> None:
    before = sender.store.df("SELECT count(*) AS n FROM outbox")["n"][0]
    with pytest.raises(crmkit.ValidationError, match=match):
        sender.teams.send(1, to=to, subject="x")
    assert crm_tenant.get("messages")["count"] == 0
    assert sender.store.df("SELECT count(*) AS n FROM outbox")["n"][0] == before


def test_oversized_message_fails_before_anything_is_sent(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    with pytest.raises(crmkit.MessageTooLarge):
        sender.teams.send(1, to=_two_colleagues(crm_tenant)[:1], subject="x", message="Text " * 7000)
    assert crm_tenant.get("messages")["count"] == 0


def test_preview_sends_and_logs_nothing(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    preview = sender.teams.preview([1, 2], to=_two_colleagues(crm_tenant), subject="Vorschau")
    assert len(preview) == 4 and (preview["subject"] == "cobra CRM - Vorschau").all()
    assert crm_tenant.get("messages")["count"] == 0
    assert sender.store.df("SELECT count(*) AS n FROM transfer_log")["n"][0] == 0


def test_the_same_group_and_subject_reuse_one_group_chat(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = _two_colleagues(crm_tenant)
    for subject in ("Gruppe", "Gruppe", "Andere Gruppe"):
        result = sender.teams.send([1], to=to, subject=subject, chat="group")
        assert set(result["status"]) == {"sent"}
    groups = [c for c in crm_tenant.get("chats")["value"] if c["chat_type"] == "group"]
    by_topic = {c["topic"]: c["message_count"] for c in groups}
    assert len(groups) == 2 and by_topic == {"cobra CRM - Gruppe": 2, "cobra CRM - Andere Gruppe": 1}
    outbox = sender.store.df("SELECT chat_id FROM outbox ORDER BY batch_id")
    assert outbox["chat_id"].nunique() == 2


def test_an_unanswered_post_is_looked_for_from_its_first_claim(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    person = _two_colleagues(crm_tenant)[:1]
    # the first post of a message gets no answer (connection dropped): the engine reads the chat back
    crm_tenant.put("faults", {"drop_rate": 1.0, "paths": ["/v1.0/chats/"], "methods": ["POST"], "count": 1})
    result = sender.teams.send([1], to=person, subject="Erster Versuch")
    assert result["status"].tolist() == ["sent"]
    row = sender.store.df("SELECT o.first_attempt_at, b.created_at, o.message_id FROM outbox o "
                          "JOIN outbox_batches b ON b.id = o.batch_id").iloc[0]
    posted = next(m for m in crm_tenant.get("messages")["value"] if m["id"] == row["message_id"])
    created = pd.Timestamp(posted["createdDateTime"]).tz_convert(None)
    # naive UTC like Graph's timestamps; the read-back window starts here, not at the batch's start
    assert row["created_at"] <= row["first_attempt_at"] <= created


def test_the_first_claim_time_survives_later_claims(crm: crmkit.CRM) -> None:
    from datetime import datetime

    from crmkit.teams.outbox import OutboxMessage, add_messages, claim, create_batch

    def make(tx: Any) -> str:
        batch = create_batch(tx, user="admin", account=None, channel="teams_manual", trigger="manual", purpose=None,
                             subject="x", options={}, record_contact=False)
        add_messages(tx, batch, [OutboxMessage(payload={}, marker="m", chat_kind="oneOnOne", members=["a", "b"],
                                               recipients=[], address_ids=[1], field_names={})])
        return batch

    crm.store.write(make)
    ids = [r[0] for r in crm.store.read(lambda tx: tx.rows("SELECT id FROM outbox"))]
    claim(crm.store, ids, at=datetime(2026, 11, 29, 9, 0))
    claim(crm.store, ids, at=datetime(2026, 11, 29, 10, 0))  # a resume claims it again
    first, attempts = crm.store.read(lambda tx: tx.rows("SELECT first_attempt_at, attempts FROM outbox"))[0]
    assert (first, attempts) == (datetime(2026, 11, 29, 9, 0), 2)


def test_disabled_integration_refuses(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    sender.set_setting("teams.enabled", False)
    with pytest.raises(crmkit.IntegrationDisabled):
        sender.teams.send(1, to=_two_colleagues(crm_tenant)[:1], subject="x")


def test_digest_and_group_chat(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    to = _two_colleagues(crm_tenant)
    result = sender.teams.send([1, 2, 3], to=to, subject="Digest", mode="digest", chat="group")
    assert len(result) == 6 and set(result["status"]) == {"sent"}
    messages = crm_tenant.get("messages")["value"]
    assert len(messages) == 1
    assert messages[0]["body"]["content"].count("<tr>") == 4  # header + three records
