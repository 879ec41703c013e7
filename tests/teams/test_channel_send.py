"""Issue 17.1, client side: a record to a team's channel on the send path (plan, outbox, exactly once, transfer
log), with @mentions, against the session's sandbox (its Vertrieb team: Anna Schmidt, the sender, is in it and
in its General and Leads channels, not in the private Key Accounts; not in the Finanzen team at all)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from support.sandbox import SandboxAdmin

import crmkit
from crmkit.errors import InvalidRecipient
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams import recipients
from crmkit.teams.channels import add_mentions

pytestmark = pytest.mark.sandbox

MENTIONED = "jonas.becker@"  # a Vertrieb member (owner) named for the @mention


def _channel(sb: SandboxAdmin, team: str, channel: str) -> tuple[str, str]:
    t = next(t for t in sb.get("teams")["value"] if t["displayName"] == team)
    return t["id"], next(c["id"] for c in t["channels"] if c["displayName"] == channel)


def _posts(sb: SandboxAdmin, team_id: str, channel_id: str) -> list[dict[str, Any]]:
    """The channel's messages read back over Graph as the sender (newest first)."""
    with sb.graph() as g:
        r = g.get(f"teams/{team_id}/channels/{channel_id}/messages", params={"$top": 50})
        r.raise_for_status()
        return r.json()["value"]


def _upn(sb: SandboxAdmin, prefix: str) -> str:
    return next(u["userPrincipalName"] for u in sb.get("users")["value"] if u["userPrincipalName"].startswith(prefix))


@pytest.fixture
def quick_channels(crm_tenant: SandboxAdmin, monkeypatch: pytest.MonkeyPatch) -> SandboxAdmin:
    """Teams' per-channel limit raised on both sides (tests of bookkeeping, not pacing)."""
    crm_tenant.put("limits", {"channel_post_per_channel_per_s": 100, "chat_post_per_app_per_s": 400})
    monkeypatch.setenv("CRMKIT_TEAMS_TENANT_RPS", "300")
    monkeypatch.setenv("CRMKIT_TEAMS_CHAT_RPS", "80")
    return crm_tenant


def test_the_picker_lists_the_senders_joined_channels_only(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    listed = sender.teams.channels()
    assert sorted(zip(listed["team"], listed["channel"], strict=True)) == [("Vertrieb", "General"),
                                                                          ("Vertrieb", "Leads")]
    team_id, leads = _channel(crm_tenant, "Vertrieb", "Leads")
    assert f"channel:{team_id}/{leads}" in listed["key"].tolist()


def test_a_record_to_a_channel_with_a_mention_arrives_once_and_is_logged_as_a_disclosure(
    sender: crmkit.CRM, quick_channels: SandboxAdmin,
) -> None:
    team_id, leads = _channel(quick_channels, "Vertrieb", "Leads")
    jonas = _upn(quick_channels, MENTIONED)
    result = sender.teams.send([1], to=[{"team": team_id, "channel": leads, "mention": [jonas]}],
                               subject="Neuer Lead", message="Bitte übernehmen", record_contact=True)
    key = f"channel:{team_id}/{leads}"
    assert result[["record", "recipient", "status"]].values.tolist() == [[1, key, "sent"]]
    posts = [p for p in _posts(quick_channels, team_id, leads) if p["subject"].endswith("Neuer Lead")]
    assert len(posts) == 1
    post = posts[0]
    assert post["id"] == result["message_id"].iloc[0]
    assert post["channelIdentity"] == {"teamId": team_id, "channelId": leads}
    assert post["body"]["content"].startswith('<p><at id="0">Jonas Becker</at></p>')
    card = json.loads(post["attachments"][0]["content"])  # the record's card
    assert "Müller & Söhne GmbH" in json.dumps(card, ensure_ascii=False)
    assert post["mentions"][0]["mentioned"]["user"]["displayName"] == "Jonas Becker"
    assert post["mentions"][0]["mentioned"]["user"]["userIdentityType"] == "aadUser"
    # The transfer log: one row for the address and the channel, naming it and its members at send time.
    members = next(c for t in quick_channels.get("teams")["value"] if t["id"] == team_id
                   for c in t["channels"] if c["id"] == leads)["members"]
    guests = sum("#EXT#" in m or m.startswith("kim.berg") for m in members)
    log = sender.store.df("SELECT address_id, recipient_id, recipient_name, outcome, detail, message_id "
                          "FROM transfer_log")
    assert log.values.tolist() == [[1, key, "Vertrieb / Leads", "sent",
                                    f"channel members: {len(members)}, guests: {guests}", post["id"]]]
    assert guests == 1  # the partner guest is a Vertrieb member, so also in Leads
    assert sender.store.df("SELECT chat_kind, chat_id FROM outbox").values.tolist() == [["channel", key]]
    contact = sender.store.df("SELECT recipients, link FROM contacts WHERE source LIKE 'teams:%'")
    assert contact["recipients"].tolist() == ["Vertrieb / Leads"]
    assert f"groupId={team_id}" in contact["link"].iloc[0]


@pytest.mark.parametrize("where", [("Vertrieb", "Key Accounts"), ("Finanzen", "General")])
def test_a_channel_the_sender_has_not_joined_is_refused_before_anything_is_written(
    sender: crmkit.CRM, crm_tenant: SandboxAdmin, where: tuple[str, str],
) -> None:
    team_id, channel_id = _channel(crm_tenant, *where)
    with pytest.raises(InvalidRecipient) as caught:
        sender.teams.send([1], to=f"channel:{team_id}/{channel_id}", subject="Geheim")
    assert "not a channel of a team you have joined" in str(caught.value)
    assert "kein Kanal eines Teams" in caught.value.text("de")
    for table in ("outbox", "outbox_batches", "transfer_log"):
        assert sender.store.one(f"SELECT count(*) FROM {table}") == 0
    counts = {c["id"]: c["message_count"] for t in crm_tenant.get("teams")["value"] for c in t["channels"]}
    assert counts[channel_id] == 0


@pytest.mark.parametrize("fault", [
    {"rate": 1.0, "statuses": [503]},  # refused before Graph stored anything
    {"drop_rate": 1.0},  # no answer at all
    {"timeout_after_commit_rate": 1.0, "hang_s": 1.0},  # stored, then the answer is lost
])
def test_a_fault_on_the_channel_post_still_gives_exactly_one_post(
    sender: crmkit.CRM, quick_channels: SandboxAdmin, fault: dict[str, Any],
) -> None:
    team_id, general = _channel(quick_channels, "Vertrieb", "General")
    quick_channels.put("faults", {**fault, "paths": ["/v1.0/teams/"], "methods": ["POST"], "count": 1})
    result = sender.teams.send([1, 3], to=f"channel:{team_id}/{general}", subject="Trotz Störung")
    quick_channels.put("faults", {"rate": 0.0})
    assert result["status"].tolist() == ["sent", "sent"]
    posts = [p for p in _posts(quick_channels, team_id, general) if p["subject"].endswith("Trotz Störung")]
    assert sorted(p["id"] for p in posts) == sorted(result["message_id"])  # each record once
    assert sender.store.one("SELECT count(*) FROM transfer_log WHERE outcome = 'sent'") == 2


@pytest.mark.duckdb_only  # the read-back reads Graph alone: the same on both stores (7 s each)
def test_the_read_back_of_a_channel_is_bounded_by_the_rows_window(
    sender: crmkit.CRM, quick_channels: SandboxAdmin,
) -> None:
    # 120 older posts (3 pages of 50): a lost answer is looked for in the newest page only, not the history.
    team_id, general = _channel(quick_channels, "Vertrieb", "General")
    for i in range(120):
        r = quick_channels.admin.post(f"/_sandbox/teams/{team_id}/channels/{general}/messages",
                                      json={"from": SANDBOX_DEFAULT_UPN, "content": f"alt {i}"})
        assert r.status_code == 201, r.text
    time.sleep(6)  # older than the read-back's margin (5 s on Graph's clock)
    before = _channel_reads(quick_channels)
    quick_channels.put("faults", {"drop_rate": 1.0, "paths": ["/v1.0/teams/"], "methods": ["POST"], "count": 1})
    result = sender.teams.send([1], to=f"channel:{team_id}/{general}", subject="Nach der Historie")
    assert result["status"].tolist() == ["sent"]
    assert _channel_reads(quick_channels) - before == 1  # one page read back, then posted again
    posts = [p for p in _posts(quick_channels, team_id, general) if (p["subject"] or "").endswith("Nach der Historie")]
    assert len(posts) == 1


def _channel_reads(sb: SandboxAdmin) -> int:
    return sum(n for k, n in sb.counters().items() if k.startswith("GET ") and k.split(" ")[1].endswith("/messages"))


def test_teams_429_on_a_channel_is_waited_out(sender: crmkit.CRM, crm_tenant: SandboxAdmin,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # crmkit paced faster than the channel's 1 post/s (the sandbox keeps Teams' limit): Teams answers 429.
    monkeypatch.setenv("CRMKIT_TEAMS_CHAT_RPS", "50")
    team_id, general = _channel(crm_tenant, "Vertrieb", "General")
    result = sender.teams.send([1, 2, 3], to=f"channel:{team_id}/{general}", subject="Gedrosselt")
    assert result["status"].tolist() == ["sent"] * 3
    throttled = sum(n for k, n in crm_tenant.counters().items()
                    if k.startswith("POST") and "/channels/" in k and k.endswith("429"))
    assert throttled >= 1
    posts = [p for p in _posts(crm_tenant, team_id, general) if p["subject"].endswith("Gedrosselt")]
    assert len(posts) == 3


def test_people_and_a_channel_in_one_send(sender: crmkit.CRM, quick_channels: SandboxAdmin) -> None:
    team_id, leads = _channel(quick_channels, "Vertrieb", "Leads")
    jonas = _upn(quick_channels, MENTIONED)
    result = sender.teams.send([1], to=[jonas, f"channel:{team_id}/{leads}"], subject="Beides")
    assert sorted(result["recipient_name"]) == ["Jonas Becker", "Vertrieb / Leads"]
    assert result["status"].tolist() == ["sent", "sent"]
    assert sorted(sender.store.df("SELECT chat_kind FROM outbox")["chat_kind"]) == ["channel", "oneOnOne"]


@pytest.mark.parametrize("bad", [
    "channel:not-a-guid/19:abc@thread.tacv2", "channel:00000000-0000-0000-0000-000000000000/general",
    {"team": "00000000-0000-0000-0000-000000000000", "channel": 5},
    {"team": "00000000-0000-0000-0000-000000000000", "channel": "19:abc@thread.tacv2",
     "mention": ["channel:00000000-0000-0000-0000-000000000000/19:abc@thread.tacv2"]},
])
def test_a_malformed_channel_is_refused_by_its_form(sender: crmkit.CRM, crm_tenant: SandboxAdmin, bad: Any) -> None:
    # the well-formed ones pass the same check as a channel (a person's forms do not cover them)
    team = "00000000-0000-0000-0000-00000000000A"
    good = recipients.check([f"channel:{team}/19:abc@thread.tacv2", {"team": team, "channel": "19:x_y@thread.skype"}])
    assert [(r.kind, r.key) for r in good] == [("channel", f"channel:{team.lower()}/19:abc@thread.tacv2"),
                                               ("channel", f"channel:{team.lower()}/19:x_y@thread.skype")]
    before = crm_tenant.counters()
    with pytest.raises(InvalidRecipient):
        sender.teams.send([1], to=[bad], subject="x")
    after = crm_tenant.counters()
    assert not any("/teams/" in k and after[k] != before.get(k) for k in after)  # nothing asked of Graph
    assert sender.store.one("SELECT count(*) FROM outbox") == 0


def test_mention_names_are_escaped() -> None:
    payload = {"subject": "s", "body": {"contentType": "html", "content": "<p>x</p>"}}
    out = add_mentions(payload, [{"id": "u1", "displayName": "A <b>&</b>"}, {"id": "u2", "displayName": "B"}])
    assert out["body"]["content"] == '<p><at id="0">A &lt;b&gt;&amp;&lt;/b&gt;</at> <at id="1">B</at></p><p>x</p>'
    assert [m["mentionText"] for m in out["mentions"]] == ["A <b>&</b>", "B"]
    assert out["mentions"][1]["mentioned"]["user"] == {"id": "u2", "displayName": "B", "userIdentityType": "aadUser"}
    assert payload["body"]["content"] == "<p>x</p>"  # the given payload is left as it was
    assert SANDBOX_DEFAULT_UPN  # the sender of the other tests
