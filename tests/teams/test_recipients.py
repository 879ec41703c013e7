"""Recipients through the sandbox tenant: one person named in several spellings gets one message, and a
recipient that cannot be a directory user is refused by name before anything is looked up or written."""

from __future__ import annotations

from typing import Any

import pytest
from support.dbstate import db_snapshot, snapshot_diff
from support.sandbox import SandboxAdmin, colleagues

import crmkit
from crmkit.errors import GraphError, InvalidRecipient, ValidationError
from crmkit.sandbox import SANDBOX_GUEST_UPN

pytestmark = pytest.mark.sandbox


def user(crm_tenant: SandboxAdmin, upn: str) -> dict[str, Any]:
    return next(u for u in crm_tenant.get("users")["value"] if u["userPrincipalName"] == upn)


def spellings(crm_tenant: SandboxAdmin, case: str) -> tuple[list[str], str]:
    """The recipient list of a case and the one person it names (their object id)."""
    if case == "mail-and-upn":  # the guest: mail and UPN differ, as they often do
        guest = user(crm_tenant, SANDBOX_GUEST_UPN)
        assert guest["mail"] != guest["userPrincipalName"]
        return [guest["mail"], guest["userPrincipalName"]], guest["id"]
    person = user(crm_tenant, colleagues(crm_tenant, 1)[0])
    upn = person["userPrincipalName"]
    other = {"upn-and-upper": upn.upper(), "upn-and-id": person["id"], "id-upper-and-mail": person["mail"].upper()}
    first = person["id"].upper() if case == "id-upper-and-mail" else upn
    return [first, other[case]], person["id"]


def chat_messages(crm_tenant: SandboxAdmin, person_id: str) -> list[dict[str, Any]]:
    chats = [c for c in crm_tenant.get("chats")["value"] if person_id in c["members"]]
    return [m for c in chats for m in crm_tenant.get("messages", chat_id=c["id"])["value"]]


def user_lookups(crm_tenant: SandboxAdmin) -> int:
    return sum(n for key, n in crm_tenant.counters().items() if "/v1.0/users" in key)


CASES = ["upn-and-upper", "upn-and-id", "mail-and-upn", "id-upper-and-mail"]


@pytest.mark.parametrize("case", CASES)
def test_one_person_in_two_spellings_gets_one_message(sender: crmkit.CRM, crm_tenant: SandboxAdmin, case: str) -> None:
    to, person_id = spellings(crm_tenant, case)
    result = sender.teams.send(1, to=to, subject="Einmal")
    assert result["status"].tolist() == ["sent"] and result["recipient"].tolist() == [person_id]
    assert len(chat_messages(crm_tenant, person_id)) == 1
    assert crm_tenant.get("messages")["count"] == 1
    assert sender.store.one("SELECT count(*) FROM transfer_log") == 1


def test_the_same_person_twice_next_to_another_in_a_group_chat(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    one, two = (user(crm_tenant, u) for u in colleagues(crm_tenant, 2))
    preview = sender.teams.preview(1, [one["userPrincipalName"], two["id"], one["id"], two["mail"].upper()],
                                   "Gruppe", chat="group")
    assert len(preview) == 1 and preview["recipients"].iloc[0] == f"{one['displayName']}, {two['displayName']}"
    sender.teams.send(1, [one["userPrincipalName"], one["id"], two["userPrincipalName"]], "Gruppe", chat="group")
    [chat] = [c for c in crm_tenant.get("chats")["value"] if c["chat_type"] == "group"]
    assert len(chat["members"]) == 3 and chat["message_count"] == 1


BAD = {
    "markup": "<script>alert(1)</script>@x.de",
    "slash": "a/b@contoso.example",
    "five-kb": "x" * 5000 + "@contoso.example",
    "nul": "bernd\x00@contoso.example",
    "space-inside": "bernd weber@contoso.example",
    "no-at": "not-an-email",
    "query": "a?b=c@contoso.example",
    "two-at": "a@b@contoso.example",
    "dot-dot": "../../me",
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_recipient_that_cannot_be_a_directory_user_is_refused_by_name(
        sender: crmkit.CRM, crm_tenant: SandboxAdmin, case: str) -> None:
    bad = BAD[case]
    good = colleagues(crm_tenant, 1)
    before = db_snapshot(sender.store)
    lookups = user_lookups(crm_tenant)
    for call in (sender.teams.send, sender.teams.preview):
        with pytest.raises(InvalidRecipient) as info:
            call(1, [*good, bad], "x")
        error = info.value
        assert isinstance(error, ValidationError) and not isinstance(error, GraphError)
        text = str(error)
        assert len(text) < 400, text  # a 5 KB recipient is cut, not repeated
        assert bad[:20].encode("unicode_escape").decode() in text, text
        assert "\x00" not in text and "not a user name" in text
        assert "ist kein Benutzername" in error.text("de")
        assert error.recipients == [bad]
    assert user_lookups(crm_tenant) == lookups  # refused before any look-up
    assert crm_tenant.get("messages")["count"] == 0
    after = db_snapshot(sender.store)
    assert after == before, snapshot_diff(before, after)


def test_a_look_up_graph_refuses_is_the_recipient_error_naming_it(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    """Well-formed but unknown (404), or a key Graph's path parser rejects (400): 'not in the directory'."""
    before = db_snapshot(sender.store)
    unknown = "nobody." + "y" * 50 + "@contoso-" + "z" * 40 + ".example"
    with pytest.raises(InvalidRecipient, match="not in the organisation's directory") as info:
        sender.teams.send(1, [unknown, "00000000-0000-0000-0000-000000000000"], "x")
    text = str(info.value)
    assert unknown[:60] in text and unknown not in text and "…" in text and len(text) < 400
    assert "00000000-0000-0000-0000-000000000000" in text
    after = db_snapshot(sender.store)
    assert after == before, snapshot_diff(before, after)
