"""Teams and channels in the sandbox tenant: joined teams, channels, members, channel messages and replies with
Graph's documented shapes, scopes, refusals, mention rules, paging, throttling and faults; the admin hooks that
post replies as a directory user (a chat reply with its messageReference attachment, a reply in a channel
thread); and the Teams view showing a channel's posts and replies."""

from __future__ import annotations

import json

import httpx
import pytest

from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN
from tests.support.sandbox import one_on_one_chat

from .shapes import (
    CHANNEL_ENTITY,
    CHANNEL_MESSAGE,
    CHANNEL_MESSAGE_ENTITY,
    CHANNEL_MESSAGES,
    CHANNELS,
    GRAPH_ERROR,
    MEMBERS,
    MESSAGE,
    MESSAGE_REFERENCE,
    TEAMS,
    assert_shape,
)
from .test_graph import assert_error

pytestmark = pytest.mark.sandbox

ANNA, JONAS, CLARA, MIA = SANDBOX_DEFAULT_UPN, "jonas.becker@contoso.example", "clara.krueger@contoso.example", \
    "mia.klein@contoso.example"
GUEST = "kim.berg_partner.example#EXT#@contoso.example"


def _teams(g: httpx.Client) -> dict[str, str]:
    r = g.get("me/joinedTeams")
    assert r.status_code == 200, r.text
    assert_shape(r.json(), TEAMS)
    return {t["displayName"]: t["id"] for t in r.json()["value"]}


def _channels(g: httpx.Client, team_id: str) -> dict[str, str]:
    r = g.get(f"teams/{team_id}/channels")
    assert r.status_code == 200, r.text
    assert_shape(r.json(), CHANNELS)
    return {c["displayName"]: c["id"] for c in r.json()["value"]}


def _sales(sandbox_admin, upn: str = ANNA) -> tuple[httpx.Client, str, dict[str, str]]:
    """A Graph client for ``upn``, the Vertrieb team's id and its channels as ``upn`` sees them."""
    g = sandbox_admin.graph(upn=upn)
    team = _teams(g)["Vertrieb"]
    return g, team, _channels(g, team)


def _mention(user: dict, n: int = 0) -> dict:
    return {"id": n, "mentionText": user["displayName"],
            "mentioned": {"user": {"id": user["id"], "displayName": user["displayName"],
                                   "userIdentityType": "aadUser"}}}


def test_joined_teams_differ_per_signed_in_user(sandbox_admin):
    assert set(_teams(sandbox_admin.graph(upn=ANNA))) == {"Vertrieb"}
    assert set(_teams(sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN))) == {"Vertrieb"}
    assert set(_teams(sandbox_admin.graph(upn=CLARA))) == {"Finanzen"}  # without the demo's sender and the admin
    assert _teams(sandbox_admin.graph(upn=MIA)) == {}  # Marketing: no team
    body = sandbox_admin.graph().get("me/joinedTeams").json()
    assert body["value"][0]["isArchived"] is False and body["value"][0]["description"]


def test_channels_members_and_private_channel_visibility(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    assert set(chans) == {"General", "Leads"}  # Key Accounts is private, Anna is not in it
    gj, _, chans_j = _sales(sandbox_admin, JONAS)
    assert set(chans_j) == {"General", "Leads", "Key Accounts"}
    private = gj.get(f"teams/{team}/channels", params={"$filter": "membershipType eq 'private'"}).json()["value"]
    assert [c["displayName"] for c in private] == ["Key Accounts"]
    assert gj.get(f"teams/{team}/channels", params={"$filter": "startswith(displayName,'K')"}).status_code == 400
    r = g.get(f"teams/{team}/channels/{chans['General']}")
    assert r.status_code == 200
    assert_shape(r.json(), CHANNEL_ENTITY)
    assert r.json()["membershipType"] == "standard" and r.json()["webUrl"].startswith("http")
    sel = g.get(f"teams/{team}/channels/{chans['Leads']}", params={"$select": "id,displayName"}).json()
    assert set(sel) == {"@odata.context", "id", "displayName"}
    members = g.get(f"teams/{team}/channels/{chans['General']}/members")
    assert members.status_code == 200
    assert_shape(members.json(), MEMBERS)
    roles = {m["email"]: m["roles"] for m in members.json()["value"]}
    assert roles[JONAS] == ["owner"] and roles[ANNA] == [] and roles["kim.berg@partner.example"] == ["guest"]
    assert CLARA not in roles and "disabled.user@contoso.example" not in roles
    key = gj.get(f"teams/{team}/channels/{chans_j['Key Accounts']}/members").json()["value"]
    assert sorted(m["email"] for m in key) == [JONAS, "marie.fischer@contoso.example", "noah.richter@contoso.example"]


def test_each_route_needs_its_documented_scope(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    gen = f"teams/{team}/channels/{chans['General']}"
    root = g.post(f"{gen}/messages", json={"body": {"content": "scope check"}}).json()["id"]
    calls = [("Team.ReadBasic.All", "GET", "me/joinedTeams"),
             ("Channel.ReadBasic.All", "GET", f"teams/{team}/channels"),
             ("Channel.ReadBasic.All", "GET", gen), ("ChannelMember.Read.All", "GET", f"{gen}/members"),
             ("ChannelMessage.Read.All", "GET", f"{gen}/messages"),
             ("ChannelMessage.Read.All", "GET", f"{gen}/messages/{root}/replies"),
             ("ChannelMessage.Send", "POST", f"{gen}/messages"),
             ("ChannelMessage.Send", "POST", f"{gen}/messages/{root}/replies")]
    sandbox_admin.put("limits", {"enabled": False})
    for scope, method, url in calls:
        without = sandbox_admin.graph(sandbox_admin.token(ANNA, scopes=["User.Read", "ChatMessage.Send"]))
        err = assert_error(without.request(method, url, json={"body": {"content": "x"}}), 403, "Forbidden")
        assert scope in err["message"], (url, err)
        with_it = sandbox_admin.graph(sandbox_admin.token(ANNA, scopes=[scope]))
        r = with_it.request(method, url, json={"body": {"content": "x"}} if method == "POST" else None)
        assert r.status_code in (200, 201), (scope, url, r.text)


def test_non_members_and_unknown_ids_are_refused(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})  # a refused post still takes its place in the channel's window
    g, team, chans = _sales(sandbox_admin)
    gj, _, chans_j = _sales(sandbox_admin, JONAS)
    key = f"teams/{team}/channels/{chans_j['Key Accounts']}"
    gc = sandbox_admin.graph(upn=CLARA)
    assert_error(gc.get(f"teams/{team}/channels"), 403, "Forbidden")  # not in the team
    assert_error(gc.post(f"teams/{team}/channels/{chans['General']}/messages", json={"body": {"content": "x"}}),
                 403, "Forbidden")
    assert_error(g.get(key), 403, "Forbidden")  # a private channel Anna is not in
    assert_error(g.get(f"{key}/messages"), 403, "Forbidden")
    assert_error(g.post(f"{key}/messages", json={"body": {"content": "x"}}), 403, "Forbidden")
    assert gj.post(f"{key}/messages", json={"body": {"content": "x"}}).status_code == 201
    assert_error(g.get("teams/00000000-0000-0000-0000-000000000000/channels"), 404, "NotFound")
    assert_error(g.get(f"teams/{team}/channels/19:{'0' * 32}@thread.tacv2"), 404, "NotFound")
    assert_error(g.get(f"teams/{team}/channels/{chans['General']}/messages/123"), 404, "NotFound")
    app = sandbox_admin.graph(sandbox_admin.admin.post("/_sandbox/token", json={"app_only": True}).json()
                              ["access_token"])
    assert_error(app.post(f"teams/{team}/channels/{chans['General']}/messages", json={"body": {"content": "x"}}),
                 401, "Unauthorized")
    assert_error(app.get("me/joinedTeams"), 400, "BadRequest")


def test_post_with_mentions_documented_shape_and_body_rules(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    sandbox_admin.put("limits", {"enabled": False})
    url = f"teams/{team}/channels/{chans['Leads']}/messages"
    jonas = g.get(f"users/{JONAS}").json()
    body = {"body": {"contentType": "html", "content": f"Neuer Lead für <at id=\"0\">{jonas['displayName']}</at>"},
            "mentions": [_mention(jonas)], "subject": "cobra CRM - Lead", "importance": "high"}
    r = g.post(url, json=body)
    assert r.status_code == 201, r.text
    posted = r.json()
    assert_shape(posted, CHANNEL_MESSAGE_ENTITY)
    assert posted["channelIdentity"] == {"teamId": team, "channelId": chans["Leads"]}
    assert posted["mentions"][0]["mentioned"]["user"]["id"] == jonas["id"] and posted["replyToId"] is None
    got = g.get(f"{url}/{posted['id']}")
    assert got.status_code == 200 and got.json()["body"] == posted["body"]
    # an <at> without its mentions entry, a mentioned user without displayName, a mention without its <at>
    at_only = {"body": {"contentType": "html", "content": "Hallo <at id=\"1\">Jonas</at>"}}
    assert "id 1" in assert_error(g.post(url, json=at_only), 400, "BadRequest")["message"]
    no_name = {**body, "mentions": [{"id": 0, "mentionText": "Jonas", "mentioned": {
        "user": {"id": jonas["id"], "userIdentityType": "aadUser"}}}]}
    assert "displayName" in assert_error(g.post(url, json=no_name), 400, "BadRequest")["message"]
    no_at = {**body, "body": {"contentType": "html", "content": "Hallo"}}
    assert_error(g.post(url, json=no_at), 400, "BadRequest")
    assert_error(g.post(url, json={"body": {"content": "x" * (29 * 1024)}}), 413, "RequestEntityTooLarge")
    assert_error(g.post(url, json={"body": {"contentType": "markdown", "content": "x"}}), 400, "BadRequest")


def test_a_file_in_a_channel_post_must_be_shared_with_its_members(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})
    gj, team, chans = _sales(sandbox_admin, JONAS)
    url = f"teams/{team}/channels/{chans['Key Accounts']}/messages"
    item = gj.put("me/drive/root:/Key Accounts.xlsx:/content", content=b"x").json()
    aid = item["eTag"].split("{")[1].split("}")[0].lower()
    post = {"body": {"contentType": "html", "content": f'Liste <attachment id="{aid}"></attachment>'},
            "attachments": [{"id": aid, "contentType": "reference", "contentUrl": item["webUrl"],
                             "name": item["name"]}]}
    assert "not shared" in assert_error(gj.post(url, json=post), 403, "Forbidden")["message"]
    gj.post(f"me/drive/items/{item['id']}/invite", json={
        "recipients": [{"email": "marie.fischer@contoso.example"}, {"email": "noah.richter@contoso.example"}],
        "roles": ["read"], "requireSignIn": True, "sendInvitation": False}).raise_for_status()
    sent = gj.post(url, json=post)
    assert sent.status_code == 201, sent.text
    assert sent.json()["attachments"][0]["contentType"] == "reference"


def test_messages_and_replies_page_newest_first(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    sandbox_admin.put("limits", {"enabled": False})
    url = f"teams/{team}/channels/{chans['General']}/messages"
    ids = [g.post(url, json={"body": {"content": f"m{i}"}}).json()["id"] for i in range(5)]
    replies = [g.post(f"{url}/{ids[0]}/replies", json={"body": {"content": f"r{i}"}}) for i in range(3)]
    assert all(r.status_code == 201 for r in replies), replies[0].text
    assert [r.json()["replyToId"] for r in replies] == [ids[0]] * 3
    seen, link, pages = [], f"{url}?$top=2", 0
    while link:
        page = g.get(link)
        assert page.status_code == 200, page.text
        assert_shape(page.json(), CHANNEL_MESSAGES)
        seen += [m["id"] for m in page.json()["value"]]
        link, pages = page.json().get("@odata.nextLink"), pages + 1
    assert seen == ids[::-1] and pages == 3  # replies are not top-level messages
    listed = g.get(f"{url}/{ids[0]}/replies")
    assert_shape(listed.json(), CHANNEL_MESSAGES)
    assert [m["body"]["content"] for m in listed.json()["value"]] == ["r2", "r1", "r0"]
    expanded = g.get(url, params={"$expand": "replies", "$top": "5"}).json()["value"]
    assert [m["body"]["content"] for m in expanded[-1]["replies"]] == ["r2", "r1", "r0"]
    assert expanded[-1]["id"] == ids[0] and all(m["replies"] == [] for m in expanded[:-1])
    assert_error(g.get(url, params={"$expand": "members"}), 400, "BadRequest")
    r1 = replies[1].json()["id"]
    assert g.get(f"{url}/{ids[0]}/replies/{r1}").json()["body"]["content"] == "r1"
    assert_error(g.get(f"{url}/{ids[1]}/replies/{r1}"), 404)
    assert_error(g.get(url, params={"$top": "51"}), 400, "BadRequest")
    assert_error(g.post(f"{url}/999/replies", json={"body": {"content": "x"}}), 404, "NotFound")
    batch = g.post("$batch", json={"requests": [{"id": "1", "method": "GET", "url": f"/{url}?$top=1"}]}).json()
    assert batch["responses"][0]["status"] == 200 and len(batch["responses"][0]["body"]["value"]) == 1


def test_channel_posts_are_throttled_per_channel(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    gen, leads = (f"teams/{team}/channels/{chans[n]}/messages" for n in ("General", "Leads"))
    assert g.post(gen, json={"body": {"content": "1"}}).status_code == 201
    r = g.post(gen, json={"body": {"content": "2"}})  # 1 per second per channel
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert_shape(r.json(), GRAPH_ERROR)
    root = g.post(leads, json={"body": {"content": "another channel"}})
    assert root.status_code == 201  # another channel has its own window
    assert g.post(f"{leads}/{root.json()['id']}/replies", json={"body": {"content": "x"}}).status_code == 429
    assert sandbox_admin.get("limits")["channel_post_per_app_per_s"] == 50.0


def test_faults_target_channel_posts(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    url = f"teams/{team}/channels/{chans['General']}/messages"
    sandbox_admin.put("faults", {"rate": 1.0, "statuses": [503], "paths": ["/v1.0/teams/"], "methods": ["POST"]})
    r = g.post(url, json={"body": {"content": "lost"}})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    assert g.get(url).status_code == 200 and g.get(url).json()["value"] == []  # reads pass, nothing was stored
    assert g.get("me/chats").status_code == 200
    sandbox_admin.put("faults", {"timeout_after_commit_rate": 1.0, "paths": ["/v1.0/teams/"], "hang_s": 2})
    with pytest.raises(httpx.ReadTimeout):
        sandbox_admin.graph(timeout=1.0).post(url, json={"body": {"content": "did it arrive?"}})
    sandbox_admin.put("faults", {})
    assert [m["body"]["content"] for m in g.get(url).json()["value"]] == ["did it arrive?"]
    counters = sandbox_admin.counters()
    assert counters["POST /v1.0/teams/{team}/channels/{channel}/messages 201 timeout_after_commit"] == 1


def test_admin_chat_reply_carries_the_message_reference_and_is_polled(sandbox_admin):
    g = sandbox_admin.graph()
    chat = one_on_one_chat(g, JONAS)
    sent = g.post(f"chats/{chat}/messages", json={
        "subject": "cobra CRM - Firma Keller",
        "body": {"contentType": "html", "content": "<p>Bitte <b>anrufen</b></p>"}})
    assert sent.status_code == 201
    sent = sent.json()
    hook = f"/_sandbox/chats/{chat}/replies"
    r = sandbox_admin.admin.post(hook, json={"from": JONAS, "reply_to": sent["id"], "content": "Erledigt <ok>"})
    assert r.status_code == 201, r.text
    window = {"$orderby": "lastModifiedDateTime desc",
              "$filter": f"lastModifiedDateTime gt {sent['lastModifiedDateTime']}"}
    polled = g.get(f"chats/{chat}/messages", params=window).json()["value"]
    assert [m["id"] for m in polled] == [r.json()["id"]]
    reply = polled[0]
    assert_shape(reply, MESSAGE)
    assert reply["from"]["user"]["displayName"] == "Jonas Becker" and reply["chatId"] == chat
    assert reply["body"] == {"contentType": "html",
                             "content": f"<attachment id=\"{sent['id']}\"></attachment>\nErledigt &lt;ok&gt;"}
    (ref,) = reply["attachments"]
    assert (ref["id"], ref["contentType"], ref["contentUrl"]) == (sent["id"], "messageReference", None)
    content = json.loads(ref["content"])
    assert_shape(content, MESSAGE_REFERENCE)
    assert content["messageId"] == sent["id"] and content["messagePreview"] == "Bitte anrufen"
    assert content["messageSender"]["user"]["id"] == sent["from"]["user"]["id"]
    assert g.get(f"chats/{chat}/messages/{reply['id']}").json()["attachments"] == [ref]
    view = httpx.get(f"{sandbox_admin.url}/teams", params={"chat": chat, "as": ANNA, "refresh": "0"}).text
    assert 'data-testid="quoted-message"' in view and "Bitte anrufen" in view and "Erledigt &lt;ok&gt;" in view
    not_member = sandbox_admin.admin.post(hook, json={"from": CLARA, "reply_to": sent["id"], "content": "x"})
    assert not_member.status_code == 403
    assert sandbox_admin.admin.post(hook, json={"from": JONAS, "reply_to": "1", "content": "x"}).status_code == 404
    assert sandbox_admin.admin.post(hook, json={"from": JONAS, "content": "x"}).status_code == 400


def test_admin_channel_reply_shows_in_replies(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    url = f"teams/{team}/channels/{chans['Leads']}/messages"
    root = g.post(url, json={"body": {"content": "Lead Keller GmbH"}}).json()
    hook = f"/_sandbox/teams/{team}/channels/{chans['Leads']}/messages/{root['id']}/replies"
    r = sandbox_admin.admin.post(hook, json={"from": JONAS, "content": "<p>Übernehme ich</p>", "content_type": "html"})
    assert r.status_code == 201, r.text
    (reply,) = g.get(f"{url}/{root['id']}/replies").json()["value"]
    assert_shape(reply, CHANNEL_MESSAGE)
    assert (reply["replyToId"], reply["from"]["user"]["displayName"]) == (root["id"], "Jonas Becker")
    assert sandbox_admin.admin.post(hook, json={"from": CLARA, "content": "x"}).status_code == 403
    post = f"/_sandbox/teams/{team}/channels/{chans['Leads']}/messages"
    assert sandbox_admin.admin.post(post, json={"from": JONAS, "content": "Neuer Beitrag"}).status_code == 201
    listed = sandbox_admin.get("teams")["value"]
    leads = next(c for t in listed for c in t["channels"] if c["id"] == chans["Leads"])
    assert leads["message_count"] == 3 and ANNA in leads["members"]


def test_teams_view_shows_channel_posts_and_replies_inert(sandbox_admin):
    g, team, chans = _sales(sandbox_admin)
    url = f"teams/{team}/channels/{chans['General']}/messages"
    root = g.post(url, json={"body": {"contentType": "html",
                                      "content": "<p>Angebot <script>alert(1)</script>Keller</p>"}}).json()
    sandbox_admin.admin.post(f"/_sandbox/teams/{team}/channels/{chans['General']}/messages/{root['id']}/replies",
                             json={"from": JONAS, "content": "<img src=x onerror=alert(2)>Danke",
                                   "content_type": "html"})
    view = f"{sandbox_admin.url}/teams"
    q = {"team": team, "channel": chans["General"], "as": ANNA, "refresh": "0"}
    for lang, replies_text in (("de", "Antworten: 1"), ("en", "Replies: 1")):
        page = httpx.get(view, params={**q, "ui_locales": lang})
        assert page.status_code == 200
        html = page.text
        assert "Vertrieb › General" in html and "<p>Angebot Keller</p>" in html and "Danke" in html
        assert replies_text in html
        assert "<script" not in html.replace("<script nonce", "") and "onerror" not in html and "<img" not in html
        assert 'data-testid="channel-link"' in html and "Key Accounts" not in html and "Finanzen" not in html
    key = next(c["id"] for t in sandbox_admin.get("teams")["value"] for c in t["channels"]
               if c["displayName"] == "Key Accounts")
    refused = httpx.get(view, params={**q, "channel": key})
    assert "Angebot" not in refused.text and "Sie sind nicht Mitglied" not in refused.text  # English by default
    assert "not a member" in refused.text
