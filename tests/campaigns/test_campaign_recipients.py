"""A campaign action's recipients are checked and resolved in the directory when it is saved; one who has
left the directory by the time it runs fails the run with a logged reason naming them."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from support.dbstate import db_snapshot, snapshot_diff
from support.sandbox import SandboxAdmin

from crmkit.errors import InvalidRecipient
from crmkit.sandbox import SANDBOX_DOMAIN

from .conftest import Setup

pytestmark = pytest.mark.sandbox


def user(fast_crm_tenant: SandboxAdmin, upn: str) -> dict[str, Any]:
    return next(u for u in fast_crm_tenant.get("users")["value"] if u["userPrincipalName"] == upn)


def chat_messages(fast_crm_tenant: SandboxAdmin, person_id: str) -> list[dict[str, Any]]:
    chats = [c for c in fast_crm_tenant.get("chats")["value"] if person_id in c["members"]]
    return [m for c in chats for m in fast_crm_tenant.get("messages", chat_id=c["id"])["value"]]


BAD = {
    "not-an-email": "not-an-email",
    "markup": "<script>alert(1)</script>@x.de",
    "nul": "bernd\x00@contoso.example",
    "five-kb": "z" * 5000,
    "slash": "a/b@contoso.example",
    "unknown": f"nobody.here@{SANDBOX_DOMAIN}",
}
# A disabled account is refused only where Graph shows accountEnabled: User.ReadBasic.All (the app's scope)
# does not, so that case lives in the offline bad-input corpus.


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipients_are_refused_when_the_action_is_saved(
        setup: Setup, fast_crm_tenant: SandboxAdmin, case: str) -> None:
    setup.set_campaign_account()
    saved = setup.action()
    bad = BAD[case]
    before = db_snapshot(setup.crm.store)
    with pytest.raises(InvalidRecipient) as info:
        setup.camp.add_teams_action(setup.reaction, "Melden", recipients=[setup.people[0], bad])
    text = str(info.value)
    assert text.startswith("Cannot save") and "Nothing was saved" in text and len(text) < 400, text
    assert "\x00" not in text and bad[:20].encode("unicode_escape").decode() in text, text
    assert "Speichern nicht möglich" in info.value.text("de")
    with pytest.raises(InvalidRecipient):
        setup.camp.update_action(saved, recipients=[bad])
    after = db_snapshot(setup.crm.store)
    assert after == before, snapshot_diff(before, after)


def test_one_person_named_three_ways_is_saved_and_messaged_once(setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    setup.set_campaign_account()
    person = user(fast_crm_tenant, setup.people[0])
    upn = person["userPrincipalName"]
    act = setup.camp.add_teams_action(setup.reaction, "Melden", recipients=[upn, upn.upper(), person["id"]])
    assert setup.camp.action(act).recipients == [{"id": person["id"], "name": person["displayName"], "upn": upn}]
    outcomes = setup.camp.record_reaction(setup.reaction, [1]).outcomes
    assert [o.status for o in outcomes] == ["done"], outcomes
    assert len(chat_messages(fast_crm_tenant, person["id"])) == 1 and fast_crm_tenant.get("messages")["count"] == 1


def test_the_action_dialog_saves_a_person_picked_twice_once(setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    from crmkit.widgets.campaign_action import TeamsActionDialog

    setup.set_campaign_account()
    person = user(fast_crm_tenant, setup.people[0])
    dialog = TeamsActionDialog(setup.camp, setup.reaction, description="Melden", lang="de")
    dialog.picker.query.value = person["displayName"]
    dialog.picker.results.value = (person["id"],)
    dialog.picker.add_button.click()
    dialog.picker.recipients.append({"id": person["userPrincipalName"].upper(), "name": "noch einmal"})
    dialog.ok.click()
    assert dialog.error.exc is None and dialog.saved_id is not None, dialog.error.exc
    assert [r["id"] for r in setup.camp.action(dialog.saved_id).recipients] == [person["id"]]


def test_a_recipient_removed_after_saving_fails_the_run_with_a_logged_reason(
        setup: Setup, fast_crm_tenant: SandboxAdmin, caplog: pytest.LogCaptureFixture) -> None:
    setup.set_campaign_account()
    stays, leaves = (user(fast_crm_tenant, u) for u in setup.people[:2])
    act = setup.camp.add_teams_action(setup.reaction, "Melden",
                                      recipients=[stays["userPrincipalName"], leaves["userPrincipalName"]])
    fast_crm_tenant.admin.delete(f"/_sandbox/users/{leaves['userPrincipalName']}").raise_for_status()
    with caplog.at_level(logging.INFO, logger="crmkit.campaigns"):
        [outcome] = setup.camp.record_reaction(setup.reaction, [1]).outcomes
    assert outcome.status == "failed", outcome
    assert leaves["displayName"] in str(outcome.error) and "not in the organisation's directory" in str(outcome.error)
    run = setup.camp.runs(action_id=act).iloc[0]
    assert run["status"] == "failed" and run["error"] == outcome.error
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and leaves["displayName"] in r.getMessage()]
    assert logged and not [r for r in caplog.records if r.exc_info], "a failed run is a warning, not a crash"
    assert fast_crm_tenant.get("messages")["count"] == 0  # nobody is sent half of the action
    # the action can still be changed (here: switched off) without asking the directory about who left
    assert setup.camp.update_action(act, active=False).active is False
