"""Issue 17.1 in campaign actions: a team's channel (with an @mention) is a recipient the action's one check
accepts when it is saved; a recorded reaction posts the record to the channel once (the campaign account is a
member of the sandbox's Vertrieb team)."""

from __future__ import annotations

import pytest
from support.dbstate import db_snapshot, snapshot_diff
from support.sandbox import SandboxAdmin

from crmkit.errors import InvalidRecipient

from .conftest import Setup

pytestmark = pytest.mark.sandbox


def _channel(sb: SandboxAdmin, team: str, channel: str) -> tuple[str, str]:
    t = next(t for t in sb.get("teams")["value"] if t["displayName"] == team)
    return t["id"], next(c["id"] for c in t["channels"] if c["displayName"] == channel)


def test_a_campaign_action_posts_to_a_channel_with_its_mention(setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    setup.set_campaign_account()
    team_id, leads = _channel(fast_crm_tenant, "Vertrieb", "Leads")
    jonas = next(u for u in fast_crm_tenant.get("users")["value"] if u["userPrincipalName"].startswith("jonas.becker@"))
    act = setup.camp.add_teams_action(setup.reaction, "Kanal informieren",
                                      recipients=[{"team": team_id, "channel": leads, "mention": [jonas["id"]]}])
    key = f"channel:{team_id}/{leads}"
    assert setup.camp.action(act).recipients == [{"id": key, "name": "Vertrieb / Leads", "mention": [jonas["id"]]}]
    outcomes = setup.camp.record_reaction(setup.reaction, [1]).outcomes
    assert [o.status for o in outcomes] == ["done"], outcomes
    with fast_crm_tenant.graph() as g:
        posts = g.get(f"teams/{team_id}/channels/{leads}/messages").json()["value"]
    assert len(posts) == 1 and posts[0]["mentions"][0]["mentioned"]["user"]["id"] == jonas["id"]
    assert fast_crm_tenant.get("messages")["count"] == 0  # no chat: the channel was the recipient
    log = setup.crm.store.df("SELECT recipient_id, recipient_name, channel, outcome FROM transfer_log")
    assert log.values.tolist() == [[key, "Vertrieb / Leads", "teams_campaign", "sent"]]


def test_a_channel_the_campaign_account_has_not_joined_is_refused_when_saved(
        setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    setup.set_campaign_account()
    team_id, general = _channel(fast_crm_tenant, "Finanzen", "General")
    setup.action()  # one action saved first: the campaign account's first sign-in stores its account
    before = db_snapshot(setup.crm.store)
    with pytest.raises(InvalidRecipient) as info:
        setup.camp.add_teams_action(setup.reaction, "Kanal", recipients=[f"channel:{team_id}/{general}"])
    assert "not a channel of a team you have joined" in str(info.value)
    after = db_snapshot(setup.crm.store)
    assert after == before, snapshot_diff(before, after)  # nothing saved
