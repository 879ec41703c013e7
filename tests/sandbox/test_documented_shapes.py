"""Every Graph endpoint the sandbox serves, against Microsoft's documented response examples
(issue 13, item 6).

The shapes (keys, JSON types, nested objects and array items) are written down in
``tests/sandbox/shapes.py`` from the documented examples for users, ``$search``, ``/me``, chats,
chat members and chat messages; the tests never read the example files themselves.  Routes the
examples do not cover (group chats, ``$expand=members``, ``$batch``, errors) are held to the
documented resource shapes those examples define.
"""

from __future__ import annotations

import base64
import json
import uuid
from urllib.parse import quote, urlsplit

import pytest

from crmkit.sandbox import (
    SANDBOX_ADMIN_UPN,
    SANDBOX_DAEMON_CLIENT_ID,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_TENANT_ID,
)

from .shapes import (
    ATTACHMENT,
    BATCH,
    CHAT,
    CHAT_CREATED,
    CHAT_EXPANDED,
    CHAT_ITEM,
    CHATS,
    GRAPH_ERROR,
    MEMBER_TYPE,
    MEMBERS,
    MENTION,
    MESSAGE_ENTITY,
    MESSAGES,
    SEARCH_USERS,
    TEAMWORK_USER_TYPE,
    USER_BY_ID,
    USER_ENTITY,
    USER_ITEM,
    USER_TYPE,
    USERS,
    assert_shape,
    shape_errors,
)

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
CARD = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard", "version": "1.4",
        "body": [{"type": "TextBlock", "text": "ACME GmbH"}]}


def member(upn: str) -> dict:
    return {"@odata.type": MEMBER_TYPE, "roles": ["owner"],
            "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{upn}')"}


def ok(r, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def one_on_one(g) -> dict:
    return ok(g.post("chats", json={"chatType": "oneOnOne", "members": [member(SANDBOX_DEFAULT_UPN), member(BOB)]}),
              201)


def group(g, topic: str = "Deal ACME") -> dict:
    return ok(g.post("chats", json={"chatType": "group", "topic": topic, "members": [
        member(SANDBOX_DEFAULT_UPN), member(BOB), member(SANDBOX_ADMIN_UPN)]}), 201)


def context_of(chat_id: str) -> str:
    # as documented: $metadata#chats('19%3A...%40thread.v2')
    return f"$metadata#chats('{quote(chat_id, safe='')}')"


# -- users ------------------------------------------------------------------------------------
def test_users_list_matches_the_documented_example(sandbox_admin):
    g = sandbox_admin.graph()
    body = ok(g.get("users"))
    assert_shape(body, USERS)
    assert body["@odata.context"].endswith("/v1.0/$metadata#users")
    assert len(body["value"]) > 1
    assert {u["@odata.type"] for u in body["value"]} == {USER_TYPE}
    # A page with a nextLink: the next page has the same shape.
    first = ok(g.get("users", params={"$top": "2"}))
    assert_shape(first, USERS)
    nxt = ok(g.get(first["@odata.nextLink"]))
    assert_shape(nxt, USERS)


def test_app_only_users_list_has_the_documented_shape(sandbox_admin):
    app = sandbox_admin.graph(sandbox_admin.token(app_only=True, client_id=SANDBOX_DAEMON_CLIENT_ID))
    assert_shape(ok(app.get("users", params={"$top": "5"})), USERS)


def test_the_documented_search_request_answers_the_documented_shape(sandbox_admin):
    # GET /users?$search="displayName:wa"&$orderby=displayName&$count=true, ConsistencyLevel: eventual
    g = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN)
    body = ok(g.get("users", params={"$search": '"displayName:a"', "$orderby": "displayName", "$count": "true"},
                    headers={"ConsistencyLevel": "eventual"}))
    assert_shape(body, SEARCH_USERS)
    assert body["@odata.count"] == len(body["value"]) > 0
    names = [u["displayName"].lower() for u in body["value"]]
    assert names == sorted(names)
    for u in body["value"]:
        assert_shape(u, USER_ITEM)  # without $select: the default property set, typed


@pytest.mark.parametrize("key", ["upn", "id"])
def test_a_user_by_upn_or_id_has_the_documented_shape(sandbox_admin, key):
    g = sandbox_admin.graph()
    bob = ok(g.get(f"users/{BOB}"))
    body = ok(g.get("users/" + quote(BOB if key == "upn" else bob["id"], safe="")))
    assert_shape(body, USER_BY_ID)
    assert body["@odata.type"] == USER_TYPE
    assert body["@odata.context"].endswith("/v1.0/$metadata#users/$entity")


def test_me_has_the_documented_default_properties(sandbox_admin):
    body = ok(sandbox_admin.graph().get("me"))
    assert_shape(body, USER_ENTITY)
    assert body["@odata.context"].endswith("/v1.0/$metadata#users/$entity")
    assert body["userPrincipalName"] == SANDBOX_DEFAULT_UPN


# -- chats ------------------------------------------------------------------------------------
def test_creating_a_one_on_one_chat_answers_201_in_the_documented_shape(sandbox_admin):
    chat = one_on_one(sandbox_admin.graph())
    assert_shape(chat, CHAT_CREATED)
    assert chat["@odata.context"].endswith("/v1.0/$metadata#chats/$entity")
    assert chat["chatType"] == "oneOnOne" and chat["topic"] is None
    assert chat["id"].startswith("19:") and chat["id"].endswith("@unq.gbl.spaces")


def test_creating_a_group_chat_answers_201_in_the_documented_shape(sandbox_admin):
    chat = group(sandbox_admin.graph())
    assert_shape(chat, CHAT_CREATED)
    assert chat["chatType"] == "group" and chat["topic"] == "Deal ACME"
    assert chat["id"].startswith("19:") and chat["id"].endswith("@thread.v2")


@pytest.mark.parametrize("kind", ["oneOnOne", "group"])
def test_a_chat_has_the_documented_shape_with_and_without_expanded_members(sandbox_admin, kind):
    g = sandbox_admin.graph()
    chat = one_on_one(g) if kind == "oneOnOne" else group(g)
    body = ok(g.get(f"chats/{chat['id']}"))
    assert_shape(body, CHAT)
    assert body["@odata.context"].endswith("/v1.0/$metadata#chats/$entity")
    assert body["tenantId"] == SANDBOX_TENANT_ID and body["chatType"] == kind
    assert "members" not in body
    expanded = ok(g.get(f"chats/{chat['id']}", params={"$expand": "members"}))
    assert_shape(expanded, CHAT_EXPANDED)
    assert len(expanded["members"]) == (2 if kind == "oneOnOne" else 3)
    assert {m["@odata.type"] for m in expanded["members"]} == {MEMBER_TYPE}


@pytest.mark.parametrize("path", ["me/chats", "chats"])
def test_chat_lists_have_the_documented_shape_with_and_without_expanded_members(sandbox_admin, path):
    g = sandbox_admin.graph()
    one, grp = one_on_one(g), group(g)
    body = ok(g.get(path))
    assert_shape(body, CHATS)
    assert body["@odata.context"].endswith("/v1.0/$metadata#chats")
    assert {one["id"], grp["id"]} <= {c["id"] for c in body["value"]}
    assert all("@odata.context" not in c and "members" not in c for c in body["value"])
    expanded = ok(g.get(path, params={"$expand": "members"}))
    assert_shape(expanded, CHATS)
    for c in expanded["value"]:
        assert_shape(c, CHAT_ITEM)
        assert c["members"]


def test_chat_members_have_the_documented_shape(sandbox_admin):
    g = sandbox_admin.graph()
    chat = group(g)
    body = ok(g.get(f"chats/{chat['id']}/members"))
    assert_shape(body, MEMBERS)
    assert body["@odata.context"].endswith(f"/v1.0/{context_of(chat['id'])}/members")
    assert body["@odata.count"] == len(body["value"]) == 3
    for m in body["value"]:
        assert m["@odata.type"] == MEMBER_TYPE and m["tenantId"] == SANDBOX_TENANT_ID
        assert m["roles"] == ["owner"]
    assert {m["email"] for m in body["value"]} == {SANDBOX_DEFAULT_UPN, BOB, SANDBOX_ADMIN_UPN}
    # Member ids are composed as the documented ones are: base64 of
    # "0##0##{member's tenant}##{chat id}##{user id}".
    for m in body["value"]:
        assert base64.b64decode(m["id"]).decode() == f"0##0##{SANDBOX_TENANT_ID}##{chat['id']}##{m['userId']}"


# -- messages ---------------------------------------------------------------------------------
def _check_message(msg: dict, chat_id: str) -> None:
    assert msg["chatId"] == chat_id and msg["etag"] == msg["id"]
    assert msg["messageType"] == "message" and msg["eventDetail"] is None
    assert msg["createdDateTime"] == msg["lastModifiedDateTime"]
    user = msg["from"]["user"]
    assert user["@odata.type"] == TEAMWORK_USER_TYPE and user["userIdentityType"] == "aadUser"
    assert user["tenantId"] == SANDBOX_TENANT_ID


@pytest.mark.parametrize("content_type", ["text", "html"])
def test_posting_and_reading_a_message_have_the_documented_shape(sandbox_admin, content_type):
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    posted = ok(g.post(f"chats/{chat['id']}/messages",
                       json={"body": {"contentType": content_type, "content": "Hello World"}}), 201)
    assert_shape(posted, MESSAGE_ENTITY)
    assert posted["@odata.context"].endswith(f"/v1.0/{context_of(chat['id'])}/messages/$entity")
    assert posted["body"] == {"contentType": content_type, "content": "Hello World"}
    _check_message(posted, chat["id"])
    got = ok(sandbox_admin.graph(upn=BOB).get(f"chats/{chat['id']}/messages/{posted['id']}"))
    assert_shape(got, MESSAGE_ENTITY)
    assert got["@odata.context"] == posted["@odata.context"]
    assert {k: v for k, v in got.items()} == posted


def test_a_card_and_a_mention_have_the_documented_attachment_and_mention_shapes(sandbox_admin):
    g = sandbox_admin.graph()
    chat = group(g)
    bob = ok(g.get(f"users/{BOB}"))
    att = uuid.uuid4().hex
    posted = ok(g.post(f"chats/{chat['id']}/messages", json={
        "body": {"contentType": "html",
                 "content": f'<at id="0">{bob["displayName"]}</at> <attachment id="{att}"></attachment>'},
        "attachments": [{"id": att, "contentType": CARD_TYPE, "content": json.dumps(CARD)}],
        "mentions": [{"id": 0, "mentionText": bob["displayName"], "mentioned": {"user": {
            "id": bob["id"], "displayName": bob["displayName"], "userIdentityType": "aadUser"}}}]}), 201)
    for msg in (posted, ok(g.get(f"chats/{chat['id']}/messages/{posted['id']}"))):
        assert_shape(msg, MESSAGE_ENTITY)
        assert len(msg["attachments"]) == 1 and len(msg["mentions"]) == 1
        assert_shape(msg["attachments"][0], ATTACHMENT)
        assert_shape(msg["mentions"][0], MENTION)
        assert msg["mentions"][0]["mentioned"]["user"]["@odata.type"] == TEAMWORK_USER_TYPE
        assert msg["mentions"][0]["mentioned"]["user"]["id"] == bob["id"]


@pytest.mark.parametrize("order", [None, "lastModifiedDateTime desc", "createdDateTime desc"])
def test_message_lists_with_top_and_orderby_have_the_documented_shape(sandbox_admin, order):
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    ids = [ok(g.post(f"chats/{chat['id']}/messages", json={"body": {"content": f"m{i}"}}), 201)["id"]
           for i in range(3)]
    params = {"$top": "2", **({"$orderby": order} if order else {})}
    first = ok(g.get(f"chats/{chat['id']}/messages", params=params))
    assert_shape(first, MESSAGES)
    assert first["@odata.context"].endswith(f"/v1.0/{context_of(chat['id'])}/messages")
    assert isinstance(first["@odata.nextLink"], str)
    link = urlsplit(first["@odata.nextLink"])
    assert link.scheme in ("http", "https") and link.netloc  # absolute
    rest = ok(g.get(first["@odata.nextLink"]))
    assert_shape(rest, MESSAGES)
    assert "@odata.nextLink" not in rest
    got = first["value"] + rest["value"]
    assert [m["id"] for m in got] == list(reversed(ids))
    for m in got:
        _check_message(m, chat["id"])


# -- $batch -----------------------------------------------------------------------------------
def test_batch_items_carry_each_endpoints_documented_shape(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})  # two posts within a second to one chat
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    cid = quote(chat["id"], safe="")
    posted = ok(g.post(f"chats/{chat['id']}/messages", json={"body": {"content": "first"}}), 201)
    shapes = {
        "me": ("/me", USER_ENTITY), "users": ("/users?$top=3", USERS), "user": (f"/users/{BOB}", USER_BY_ID),
        "chats": ("/me/chats", CHATS), "chat": (f"/chats/{cid}?$expand=members", CHAT_EXPANDED),
        "members": (f"/chats/{cid}/members", MEMBERS), "messages": (f"/chats/{cid}/messages?$top=5", MESSAGES),
        "message": (f"/chats/{cid}/messages/{posted['id']}", MESSAGE_ENTITY),
        "missing": ("/users/nobody@contoso.example", GRAPH_ERROR),
    }
    reqs = [{"id": k, "method": "GET", "url": url} for k, (url, _) in shapes.items()]
    reqs.append({"id": "post", "method": "POST", "url": f"/chats/{cid}/messages",
                 "headers": {"Content-Type": "application/json"}, "body": {"body": {"content": "batched"}}})
    body = ok(g.post("$batch", json={"requests": reqs}))
    assert_shape(body, BATCH)
    items = {i["id"]: i for i in body["responses"]}
    assert set(items) == {r["id"] for r in reqs}
    for k, (_, shape) in shapes.items():
        assert items[k]["status"] == (404 if k == "missing" else 200), items[k]
        assert_shape(items[k]["body"], shape)
    assert items["post"]["status"] == 201
    assert_shape(items["post"]["body"], MESSAGE_ENTITY)


# -- errors -----------------------------------------------------------------------------------
def _errors(sandbox_admin) -> list[tuple[str, object, str, dict | None, int, str]]:
    anna = sandbox_admin.graph()
    chat = one_on_one(anna)["id"]
    nobody = sandbox_admin.graph(token="")
    outsider = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN)
    app = sandbox_admin.graph(sandbox_admin.token(app_only=True, client_id=SANDBOX_DAEMON_CLIENT_ID))
    weak = sandbox_admin.graph(sandbox_admin.token(scopes=["User.Read"]))
    return [
        ("GET", nobody, "me", None, 401, "InvalidAuthenticationToken"),
        ("GET", anna, "users/nobody@contoso.example", None, 404, "Request_ResourceNotFound"),
        ("GET", anna, "users?$select=nosuch", None, 400, "Request_BadRequest"),
        ("GET", anna, "users?$top=1000", None, 400, "Request_UnsupportedQuery"),
        ("GET", anna, "nosuchthing", None, 400, "BadRequest"),
        ("DELETE", anna, "me", None, 405, "BadRequest"),
        ("GET", app, "me", None, 400, "BadRequest"),
        ("GET", weak, "users", None, 403, "Authorization_RequestDenied"),
        ("POST", weak, f"chats/{chat}/messages", {"body": {"content": "x"}}, 403, "Forbidden"),
        ("POST", app, f"chats/{chat}/messages", {"body": {"content": "x"}}, 401, "Unauthorized"),
        ("GET", outsider, f"chats/{chat}", None, 404, "NotFound"),
        ("GET", anna, f"chats/{chat}/messages/123", None, 404, "NotFound"),
        ("GET", anna, f"chats/{chat}/messages?$top=51", None, 400, "BadRequest"),
        ("POST", anna, "chats", {"chatType": "triple", "members": []}, 400, "BadRequest"),
        ("POST", anna, f"chats/{chat}/messages", {"subject": "no body"}, 400, "BadRequest"),
        ("POST", anna, "$batch", {"requests": []}, 400, "BadRequest"),
    ]


def test_every_error_has_graphs_documented_error_shape(sandbox_admin):
    crid = str(uuid.uuid4())
    failures = []
    for method, client, path, body, status, code in _errors(sandbox_admin):
        r = client.request(method, path, json=body, headers={"client-request-id": crid})
        where = f"{method} {path}"
        if r.status_code != status:
            failures.append(f"{where}: {r.status_code} (wanted {status}) {r.text[:200]}")
            continue
        err = r.json()
        failures += [f"{where}: {e}" for e in shape_errors(err, GRAPH_ERROR)]
        if not failures:
            inner = err["error"]["innerError"]
            if err["error"]["code"] != code:
                failures.append(f"{where}: code {err['error']['code']} (wanted {code})")
            if inner["client-request-id"] != crid or r.headers.get("client-request-id") != crid:
                failures.append(f"{where}: client-request-id not echoed")
            if inner["request-id"] != r.headers.get("request-id"):
                failures.append(f"{where}: innerError request-id {inner['request-id']} is not the header's")
    assert not failures, "\n".join(failures)
