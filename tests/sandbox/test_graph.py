"""Graph v1.0 subset: documented keys/types for every endpoint, query options, auth errors."""

from __future__ import annotations

import json
import uuid

import pytest

from crmkit.sandbox import (
    GRAPH_BASE,
    SANDBOX_ADMIN_UPN,
    SANDBOX_DAEMON_CLIENT_ID,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_GUEST_UPN,
    SANDBOX_TENANT_ID,
)
from crmkit.sandbox.graph import APP_ONLY_POST_MESSAGE

from .shapes import (
    ATTACHMENT,
    CHAT,
    CHAT_CREATED,
    CHAT_ITEM,
    COLLECTION,
    COLLECTION_WITH_COUNT,
    GRAPH_ERROR,
    MEMBER,
    MENTION,
    MESSAGE,
    MESSAGE_ENTITY,
    SEARCH_USER,
    USER,
    USER_ENTITY,
    assert_shape,
)

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"
CARD = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4",
        "body": [{"type": "TextBlock", "text": "ACME GmbH", "weight": "Bolder"},
                 {"type": "FactSet", "facts": [{"title": "Owner", "value": "Anna Schmidt"}]}]}


def member(upn: str) -> dict:
    return {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
            "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{upn}')"}


def one_on_one(g, other: str = BOB, me: str = SANDBOX_DEFAULT_UPN) -> dict:
    r = g.post("chats", json={"chatType": "oneOnOne", "members": [member(me), member(other)]})
    assert r.status_code == 201, r.text
    return r.json()


def assert_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert_shape(body, GRAPH_ERROR)
    assert body["error"]["innerError"]["request-id"] == r.headers["request-id"]
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]


# -- users -----------------------------------------------------------------------------------------
def test_me(sandbox_admin):
    r = sandbox_admin.graph().get("me")
    assert r.status_code == 200
    assert_shape(r.json(), USER_ENTITY)
    assert r.json()["userPrincipalName"] == SANDBOX_DEFAULT_UPN


def test_list_users_default_and_paging(sandbox_admin):
    g = sandbox_admin.graph()
    first = g.get("users", params={"$top": "25"}).json()
    assert_shape(first, COLLECTION)
    assert len(first["value"]) == 25
    for u in first["value"]:
        assert_shape(u, USER)
    seen = [u["id"] for u in first["value"]]
    link = first["@odata.nextLink"]
    assert link.startswith(f"{GRAPH_BASE}/users?")
    while link:
        page = g.get(link).json()
        seen += [u["id"] for u in page["value"]]
        link = page.get("@odata.nextLink")
    assert len(seen) == len(set(seen)) >= 54  # whole directory: 50+ people plus special users
    assert "@odata.count" not in first


def test_top_limits(sandbox_admin):
    g = sandbox_admin.graph()
    assert len(g.get("users", params={"$top": "999"}).json()["value"]) >= 54
    assert_error(g.get("users", params={"$top": "1000"}), 400)
    assert_error(g.get("users", params={"$top": "0"}), 400)


def test_search_needs_consistency_level(sandbox_admin):
    g = sandbox_admin.graph()
    params = {"$search": '"displayName:wa"', "$orderby": "displayName", "$count": "true",
              "$select": "displayName,givenName,mail,userPrincipalName"}
    err = assert_error(g.get("users", params=params), 400, "Request_UnsupportedQuery")
    assert "ConsistencyLevel: eventual" in err["message"]
    r = g.get("users", params=params, headers={"ConsistencyLevel": "eventual"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(body, COLLECTION_WITH_COUNT)
    names = [u["displayName"] for u in body["value"]]
    assert names == sorted(names)
    assert {"Walter Schuster", "Wanda Albrecht", "Anna Walter"} <= set(names) or "Wanda Albrecht" in names
    assert body["@odata.count"] == len(names) >= 2
    for u in body["value"]:
        assert_shape(u, SEARCH_USER)
        assert set(u) == {"displayName", "givenName", "mail", "userPrincipalName"}
        assert any(tok.lower().startswith("wa") for tok in u["displayName"].replace("(", " ").split())


def test_search_paging_keeps_count_on_first_page_only(sandbox_admin):
    g = sandbox_admin.graph()
    hdr = {"ConsistencyLevel": "eventual"}
    first = g.get("users", params={"$search": '"mail:a"', "$count": "true", "$top": "2"}, headers=hdr).json()
    assert first["@odata.count"] > 2
    nxt = g.get(first["@odata.nextLink"], headers=hdr).json()
    assert "@odata.count" not in nxt and nxt["value"]
    # ConsistencyLevel is not carried over: a client that forgets it on the next page is refused.
    assert_error(g.get(first["@odata.nextLink"]), 400)


def test_filter_startswith_and_select(sandbox_admin):
    g = sandbox_admin.graph()
    r = g.get("users", params={"$filter": "startswith(displayName,'an')", "$select": "id,displayName,department"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.context"].endswith("#users(id,displayName,department)")
    assert body["value"] and all(u["displayName"].lower().startswith("an") for u in body["value"])
    assert all(set(u) == {"id", "displayName", "department"} for u in body["value"])
    bad = g.get("users", params={"$select": "displayName,noSuchProperty"})
    assert "noSuchProperty" in assert_error(bad, 400)["message"]
    assert_error(g.get("users", params={"$filter": "contains(displayName,'a')"}), 400)


def test_count_without_consistency_level_refused(sandbox_admin):
    assert_error(sandbox_admin.graph().get("users", params={"$count": "true"}), 400)


def test_get_user_by_id_and_upn(sandbox_admin):
    g = sandbox_admin.graph()
    by_upn = g.get(f"users/{BOB}")
    assert by_upn.status_code == 200
    assert_shape(by_upn.json(), USER_ENTITY)
    by_id = g.get(f"users/{by_upn.json()['id']}").json()
    assert by_id["userPrincipalName"] == BOB
    assert "value" not in by_id  # the user object itself, not wrapped
    assert_error(g.get("users/nobody@contoso.example"), 404, "Request_ResourceNotFound")


def test_user_readbasic_only_exposes_basic_properties(sandbox_admin):
    g = sandbox_admin.graph(sandbox_admin.token(scopes=["User.ReadBasic.All"]))
    u = g.get(f"users/{BOB}").json()
    assert u["displayName"] and u["mail"]
    assert u["jobTitle"] is None and u["officeLocation"] is None


def test_guest_cannot_list_users(sandbox_admin):
    g = sandbox_admin.graph(upn=SANDBOX_GUEST_UPN)
    assert_error(g.get("users"), 403, "Authorization_RequestDenied")


# -- chats -----------------------------------------------------------------------------------------
def test_one_on_one_chat_is_get_or_create(sandbox_admin):
    g = sandbox_admin.graph()
    a = one_on_one(g)
    assert_shape(a, CHAT_CREATED)
    assert a["chatType"] == "oneOnOne" and a["id"].endswith("@unq.gbl.spaces")
    b = g.post("chats", json={"chatType": "oneOnOne", "members": [member(BOB), member(SANDBOX_DEFAULT_UPN)]})
    assert b.status_code == 201 and b.json()["id"] == a["id"]
    # The other member creating "their" chat gets the same one.
    c = one_on_one(sandbox_admin.graph(upn=BOB), other=SANDBOX_DEFAULT_UPN, me=BOB)
    assert c["id"] == a["id"]
    got = g.get(f"chats/{a['id']}").json()
    assert_shape(got, CHAT)


def test_group_chats_are_new_each_time(sandbox_admin):
    g = sandbox_admin.graph()
    body = {"chatType": "group", "topic": "Deal ACME",
            "members": [member(SANDBOX_DEFAULT_UPN), member(BOB), member(SANDBOX_ADMIN_UPN)]}
    a, b = g.post("chats", json=body).json(), g.post("chats", json=body).json()
    assert a["id"] != b["id"] and a["id"].endswith("@thread.v2")
    assert a["topic"] == "Deal ACME"


def test_create_chat_validation(sandbox_admin):
    g = sandbox_admin.graph()
    assert_error(g.post("chats", json={"chatType": "oneOnOne", "members": [member(BOB), member(SANDBOX_ADMIN_UPN)]}),
                 400)
    assert_error(g.post("chats", json={"chatType": "oneOnOne", "members": [member(SANDBOX_DEFAULT_UPN),
                                                                          member("ghost@contoso.example")]}), 404)
    assert_error(g.post("chats", json={"chatType": "triple", "members": []}), 400)


def test_my_chats_expand_members(sandbox_admin):
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    r = g.get("me/chats", params={"$expand": "members"})
    assert r.status_code == 200
    body = r.json()
    assert_shape(body, COLLECTION)
    item = next(c for c in body["value"] if c["id"] == chat["id"])
    assert_shape(item, CHAT_ITEM)
    assert len(item["members"]) == 2
    for m in item["members"]:
        assert_shape(m, MEMBER)
    assert {m["email"] for m in item["members"]} == {SANDBOX_DEFAULT_UPN, BOB}
    members = g.get(f"chats/{chat['id']}/members").json()
    assert_shape(members, COLLECTION)
    assert_shape(members["value"][0], MEMBER)
    # Someone outside the chat does not see it.
    other = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).get("me/chats").json()
    assert all(c["id"] != chat["id"] for c in other["value"])


# -- messages --------------------------------------------------------------------------------------
def test_post_text_message_and_read_back(sandbox_admin):
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    r = g.post(f"chats/{chat['id']}/messages", json={"body": {"content": "Hello world"}})
    assert r.status_code == 201, r.text
    msg = r.json()
    assert_shape(msg, MESSAGE_ENTITY)
    assert msg["body"] == {"contentType": "text", "content": "Hello world"}
    assert msg["from"]["user"]["userIdentityType"] == "aadUser"
    assert msg["chatId"] == chat["id"] and msg["importance"] == "normal"
    assert msg["id"] == msg["etag"] and msg["id"].isdigit()
    got = sandbox_admin.graph(upn=BOB).get(f"chats/{chat['id']}/messages/{msg['id']}").json()
    assert_shape(got, MESSAGE_ENTITY)
    assert got["id"] == msg["id"]


def test_html_subject_importance_card_and_mention(sandbox_admin):
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    bob = g.get(f"users/{BOB}").json()
    att_id = uuid.uuid4().hex
    body = {
        "subject": "CRM record: ACME GmbH",
        "importance": "high",
        "body": {"contentType": "html",
                 "content": f'<p>Hi <at id="0">{bob["displayName"]}</at>, see this:</p>'
                            f'<attachment id="{att_id}"></attachment>'},
        "attachments": [{"id": att_id, "contentType": "application/vnd.microsoft.card.adaptive",
                         "contentUrl": None, "content": json.dumps(CARD), "name": None, "thumbnailUrl": None}],
        "mentions": [{"id": 0, "mentionText": bob["displayName"],
                      "mentioned": {"user": {"id": bob["id"], "displayName": bob["displayName"],
                                             "userIdentityType": "aadUser"}}}],
    }
    r = g.post(f"chats/{chat['id']}/messages", json=body)
    assert r.status_code == 201, r.text
    msg = r.json()
    assert_shape(msg, MESSAGE)
    assert msg["subject"] == "CRM record: ACME GmbH" and msg["importance"] == "high"
    assert_shape(msg["attachments"][0], ATTACHMENT)
    assert_shape(msg["mentions"][0], MENTION)
    assert json.loads(msg["attachments"][0]["content"])["type"] == "AdaptiveCard"


def test_attachment_rules(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})  # throttling counts rejected posts too
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    url = f"chats/{chat['id']}/messages"
    att = {"id": "a1", "contentType": "application/vnd.microsoft.card.adaptive", "content": json.dumps(CARD)}
    # attachment not referenced in the body
    assert_error(g.post(url, json={"body": {"contentType": "html", "content": "no marker"}, "attachments": [att]}),
                 400)
    # marker without attachment
    assert_error(g.post(url, json={"body": {"contentType": "html",
                                            "content": '<attachment id="zz"></attachment>'}}), 400)
    # card content as an object instead of a JSON string
    marker = '<attachment id="a1"></attachment>'
    err = assert_error(g.post(url, json={"body": {"contentType": "html", "content": marker},
                                         "attachments": [{**att, "content": CARD}]}), 400)
    assert "JSON-encoded string" in err["message"]
    # mention without <at> tag
    assert_error(g.post(url, json={"body": {"contentType": "html", "content": "hi"},
                                   "mentions": [{"id": 0, "mentionText": "x", "mentioned": {"user": {"id": "x"}}}]}),
                 400)
    assert_error(g.post(url, json={"body": {"content": "x"}, "importance": "critical"}), 400)
    assert_error(g.post(url, json={"subject": "no body"}), 400)


def test_message_too_large(sandbox_admin):
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    ok = g.post(f"chats/{chat['id']}/messages", json={"body": {"content": "x" * (27 * 1024)}})
    assert ok.status_code == 201
    sandbox_admin.put("limits", {"enabled": False})
    big = g.post(f"chats/{chat['id']}/messages", json={"body": {"content": "x" * (29 * 1024)}})
    assert_error(big, 413)


def test_list_messages_newest_first_with_paging(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    ids = [g.post(f"chats/{chat['id']}/messages", json={"body": {"content": f"m{i}"}}).json()["id"]
           for i in range(5)]
    first = g.get(f"chats/{chat['id']}/messages", params={"$top": "2"}).json()
    assert_shape(first, COLLECTION_WITH_COUNT)
    for m in first["value"]:
        assert_shape(m, MESSAGE)
    got = [m["id"] for m in first["value"]]
    link = first["@odata.nextLink"]
    while link:
        page = g.get(link).json()
        got += [m["id"] for m in page["value"]]
        link = page.get("@odata.nextLink")
    assert got == list(reversed(ids))
    assert_error(g.get(f"chats/{chat['id']}/messages", params={"$top": "51"}), 400)


def test_non_member_cannot_post_or_read(sandbox_admin):
    chat = one_on_one(sandbox_admin.graph())
    outsider = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN)
    assert_error(outsider.post(f"chats/{chat['id']}/messages", json={"body": {"content": "hi"}}), 403)
    assert_error(outsider.get(f"chats/{chat['id']}/messages"), 404)


# -- auth errors ---------------------------------------------------------------------------------------
def test_401_without_token_and_with_expired_token(sandbox_admin):
    none = sandbox_admin.graph(token="")
    err = assert_error(none.get("me"), 401, "InvalidAuthenticationToken")
    assert err["message"] == "Access token is empty."
    expired = sandbox_admin.graph(sandbox_admin.token(lifetime_s=-60))
    r = expired.get("me")
    assert "expired" in assert_error(r, 401, "InvalidAuthenticationToken")["message"]
    assert "WWW-Authenticate" in r.headers
    garbage = sandbox_admin.graph(token="not.a.jwt")
    assert_error(garbage.get("me"), 401, "InvalidAuthenticationToken")


def test_403_for_missing_scope(sandbox_admin):
    g = sandbox_admin.graph(sandbox_admin.token(scopes=["User.Read"]))
    chat = one_on_one(sandbox_admin.graph())
    err = assert_error(g.post(f"chats/{chat['id']}/messages", json={"body": {"content": "hi"}}), 403, "Forbidden")
    assert "ChatMessage.Send" in err["message"]
    assert_error(g.get("users"), 403, "Authorization_RequestDenied")


def test_app_only_token_refused_for_posting(sandbox_admin):
    chat = one_on_one(sandbox_admin.graph())
    app = sandbox_admin.graph(sandbox_admin.token(app_only=True, client_id=SANDBOX_DAEMON_CLIENT_ID))
    err = assert_error(app.post(f"chats/{chat['id']}/messages", json={"body": {"content": "hi"}}), 401, "Unauthorized")
    assert err["message"] == APP_ONLY_POST_MESSAGE
    assert err["message"].startswith("Message POST is allowed in application-only context only for import purposes")
    assert_error(app.get("me"), 400)
    # Application permission User.Read.All does allow listing users.
    assert app.get("users", params={"$top": "1"}).status_code == 200


def test_unknown_segment_and_request_ids(sandbox_admin):
    g = sandbox_admin.graph()
    r = g.get("nosuchthing", headers={"client-request-id": "11111111-2222-3333-4444-555555555555"})
    err = assert_error(r, 400, "BadRequest")
    assert err["innerError"]["client-request-id"] == "11111111-2222-3333-4444-555555555555"
    assert r.headers["client-request-id"] == "11111111-2222-3333-4444-555555555555"
    assert SANDBOX_TENANT_ID  # tenant constant exported
