"""Graph's URL rules, as any HTTP client meets them (issue 13, item 2).

Requests go straight to the sandbox's loopback URL with a plain httpx client (no crmkit routing),
the way msgraph-sdk or a script would send them.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

import httpx
import pytest

from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_GUEST_UPN

from .shapes import GRAPH_ERROR, assert_shape

pytestmark = pytest.mark.sandbox


@pytest.fixture
def raw(sandbox_admin):
    """A plain httpx client on the sandbox's loopback URL with Anna's bearer token."""
    with httpx.Client(base_url=sandbox_admin.url, timeout=30,
                      headers={"Authorization": f"Bearer {sandbox_admin.token()}"}) as c:
        yield c


def graph_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert_shape(body, GRAPH_ERROR)
    assert body["error"]["code"] == code
    inner = body["error"]["innerError"]
    assert set(inner) >= {"date", "request-id", "client-request-id"}
    assert inner["request-id"]
    return body["error"]


# -- repeated slashes after the version (msgraph-sdk's default wiring sends them) ----------------
@pytest.mark.parametrize("path", ["/v1.0//me", "/v1.0///me", "/v1.0//me/"])
def test_repeated_slashes_after_the_version_reach_me(raw, path):
    r = raw.get(path)
    assert r.status_code == 200, r.text
    assert r.json()["userPrincipalName"] == SANDBOX_DEFAULT_UPN


def test_repeated_slashes_inside_the_path_reach_users_and_their_next_link_is_clean(raw):
    r = raw.get("/v1.0//users", params={"$top": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["value"]) == 2
    link = body["@odata.nextLink"]
    assert urlsplit(link).path == "/v1.0/users"
    assert raw.get(link).status_code == 200
    chats = raw.get("/v1.0/me//chats")
    assert chats.status_code == 200, chats.text


def test_repeated_slashes_in_batch_item_urls_reach_me(raw):
    r = raw.post("/v1.0//$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/v1.0//me"},
                                                      {"id": "2", "method": "GET", "url": "//users?$top=1"}]})
    assert r.status_code == 200, r.text
    got = {item["id"]: item for item in r.json()["responses"]}
    assert got["1"]["status"] == 200, got["1"]
    assert got["1"]["body"]["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    assert got["2"]["status"] == 200, got["2"]


# -- percent-encoded ids ---------------------------------------------------------------------
def test_percent_encoded_upns_resolve(raw):
    for upn in (SANDBOX_DEFAULT_UPN, SANDBOX_GUEST_UPN):
        r = raw.get("/v1.0/users/" + quote(upn, safe=""))
        assert r.status_code == 200, r.text
        assert r.json()["userPrincipalName"] == upn


def test_percent_encoded_chat_ids_resolve(sandbox_admin, raw):
    g = sandbox_admin.graph()
    bind = "https://graph.microsoft.com/v1.0/users('{}')"
    chat = g.post("chats", json={"chatType": "oneOnOne", "members": [
        {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
         "user@odata.bind": bind.format(u)} for u in (SANDBOX_DEFAULT_UPN, "jonas.becker@contoso.example")]})
    assert chat.status_code == 201, chat.text
    cid = chat.json()["id"]
    assert ":" in cid and "@" in cid
    encoded = quote(cid, safe="")
    assert "%3A" in encoded and "%40" in encoded
    r = raw.get(f"/v1.0/chats/{encoded}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == cid
    posted = raw.post(f"/v1.0/chats/{encoded}/messages", json={"body": {"content": "Hallo"}})
    assert posted.status_code == 201, posted.text
    listed = raw.get(f"/v1.0/chats/{encoded}/messages", params={"$top": "1"})
    assert listed.status_code == 200, listed.text
    assert listed.json()["value"][0]["chatId"] == cid


def test_member_binds_with_an_encoded_upn_or_an_id_name_the_same_user(sandbox_admin, raw):
    bob = raw.get("/v1.0/users/jonas.becker%40contoso.example").json()
    chats = set()
    for ref in ("users('jonas.becker%40contoso.example')", f"users/{bob['id']}",
                "users('jonas.becker@contoso.example')"):
        r = raw.post("/v1.0/chats", json={"chatType": "oneOnOne", "members": [
            {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
             "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{SANDBOX_DEFAULT_UPN}')"},
            {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
             "user@odata.bind": f"https://graph.microsoft.com/v1.0/{ref}"}]})
        assert r.status_code == 201, r.text
        chats.add(r.json()["id"])
    assert len(chats) == 1


# -- $-prefixed query names ---------------------------------------------------------------------
def test_dollar_query_names_also_arrive_percent_encoded(raw):
    # kiota-based SDKs write the names as %24top, %24select.
    r = raw.get("/v1.0/users?%24top=1&%24select=displayName")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["value"]) == 1
    assert set(body["value"][0]) == {"displayName"}


@pytest.mark.parametrize(("path", "name"), [
    ("/v1.0/users?select=displayName,id", "select"), ("/v1.0/users?top=1", "top"),
    ("/v1.0/users?filter=startswith(displayName,'a')", "filter"), ("/v1.0/users?$top=2&orderby=displayName", "orderby"),
    ("/v1.0/me?select=id", "select"), ("/v1.0/users/jonas.becker%40contoso.example?select=id", "select"),
])
def test_unprefixed_query_options_on_the_directory_are_refused_as_graph_refuses_them(raw, path, name):
    # The docs make the $ optional on v1.0 "for only a subset of APIs"; the users APIs are not in
    # it: Graph answers /v1.0/users?select=... with 400 Request_BadRequest (microsoft-graph-docs
    # issue 3879).  Silently ignoring the option would hand a client the wrong page or properties.
    err = graph_error(raw.get(path), 400, "Request_BadRequest")
    assert err["message"] == f"Unrecognized query argument specified: '{name}'."


def test_unprefixed_query_options_in_batch_items_are_refused_too(raw):
    r = raw.post("/v1.0/$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/users?top=1"},
                                                    {"id": "2", "method": "GET", "url": "/users?$top=1"}]})
    assert r.status_code == 200, r.text
    got = {item["id"]: item for item in r.json()["responses"]}
    assert got["1"]["status"] == 400, got["1"]
    assert got["1"]["body"]["error"]["message"] == "Unrecognized query argument specified: 'top'."
    assert got["2"]["status"] == 200 and len(got["2"]["body"]["value"]) == 1


# -- unknown versions and paths: Graph's error shape ------------------------------------------------
@pytest.mark.parametrize("path", ["/beta/me", "/v2.0/users", "/v1/me"])
def test_unknown_versions_answer_in_graphs_error_shape(raw, path):
    # Real Graph's words for a version it does not know; the sandbox serves v1.0 only.
    err = graph_error(raw.get(path), 400, "BadRequest")
    assert err["message"] == "Invalid version."


@pytest.mark.parametrize("path", ["/beta/me", "/v1.0/nosuch", "/v1.0/users/nobody%40contoso.example"])
def test_error_inner_ids_echo_the_client_request_id_and_match_the_headers(raw, path):
    crid = "0f0e0d0c-0b0a-4909-8807-060504030201"
    r = raw.get(path, headers={"client-request-id": crid})
    assert r.status_code in (400, 404), r.text
    inner = r.json()["error"]["innerError"]
    assert inner["client-request-id"] == crid == r.headers["client-request-id"]
    assert inner["request-id"] == r.headers["request-id"]


def test_a_path_without_version_on_the_graph_host_is_an_invalid_version(raw):
    err = graph_error(raw.get("/me", headers={"Host": "graph.crmkit.localhost"}), 400, "BadRequest")
    assert err["message"] == "Invalid version."


def test_unknown_segments_answer_in_graphs_error_shape(raw):
    err = graph_error(raw.get("/v1.0//nosuchthing"), 400, "BadRequest")
    assert err["message"] == "Resource not found for the segment 'nosuchthing'."


@pytest.mark.parametrize(("path", "segment"), [("/v1.0/me/nosuch", "nosuch"),
                                               ("/v1.0/chats/19:abc@thread.v2/nosuch/x", "nosuch"),
                                               ("/v1.0//users/anna/chats", "chats")])
def test_the_error_names_the_first_segment_that_does_not_resolve(raw, path, segment):
    err = graph_error(raw.get(path), 400, "BadRequest")
    assert err["message"] == f"Resource not found for the segment '{segment}'."


def test_an_unknown_user_is_404_in_graphs_error_shape(raw):
    err = graph_error(raw.get("/v1.0/users/" + quote("nobody@contoso.example", safe="")), 404,
                      "Request_ResourceNotFound")
    assert "nobody@contoso.example" in err["message"]


# -- nextLinks on the host the client used --------------------------------------------------------
def test_next_link_keeps_the_host_header_with_its_port(sandbox_admin, raw):
    port = urlsplit(sandbox_admin.url).port
    r = raw.get("/v1.0/users", params={"$top": "1"}, headers={"Host": f"localhost:{port}"})
    assert r.status_code == 200, r.text
    link = urlsplit(r.json()["@odata.nextLink"])
    assert (link.scheme, link.netloc, link.path) == ("http", f"localhost:{port}", "/v1.0/users")


def test_forwarded_headers_naming_a_foreign_host_are_ignored(sandbox_admin, raw):
    port = urlsplit(sandbox_admin.url).port
    r = raw.get("/v1.0/users", params={"$top": "1"},
                headers={"X-Forwarded-Host": "graph.evil.example", "X-Forwarded-Proto": "https"})
    assert r.status_code == 200, r.text
    link = urlsplit(r.json()["@odata.nextLink"])
    assert (link.scheme, link.netloc) == ("http", f"127.0.0.1:{port}")


def test_forwarded_headers_naming_a_sandbox_host_are_honoured(raw):
    # crmkit's routing transport and a local reverse proxy announce the public https host this way.
    r = raw.get("/v1.0/users", params={"$top": "1"},
                headers={"X-Forwarded-Host": "graph.crmkit.localhost:8443", "X-Forwarded-Proto": "https"})
    assert r.status_code == 200, r.text
    link = urlsplit(r.json()["@odata.nextLink"])
    assert (link.scheme, link.netloc, link.path) == ("https", "graph.crmkit.localhost:8443", "/v1.0/users")


def _chat_with_messages(sandbox_admin, n: int) -> str:
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    bind = "https://graph.microsoft.com/v1.0/users('{}')"
    chat = g.post("chats", json={"chatType": "oneOnOne", "members": [
        {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
         "user@odata.bind": bind.format(u)} for u in (SANDBOX_DEFAULT_UPN, "jonas.becker@contoso.example")]})
    assert chat.status_code == 201, chat.text
    for i in range(n):
        assert g.post(f"chats/{chat.json()['id']}/messages", json={"body": {"content": f"m{i}"}}).status_code == 201
    return chat.json()["id"]


def test_a_message_next_link_keeps_the_host_header_with_its_port(sandbox_admin, raw):
    cid = _chat_with_messages(sandbox_admin, 3)
    port = urlsplit(sandbox_admin.url).port
    r = raw.get(f"/v1.0/chats/{quote(cid, safe='')}/messages", params={"$top": "1"},
                headers={"Host": f"localhost:{port}"})
    assert r.status_code == 200, r.text
    parts = urlsplit(r.json()["@odata.nextLink"])
    assert (parts.scheme, parts.netloc) == ("http", f"localhost:{port}")
    # Graph writes the chat id in the link unencoded, as its documented nextLink does.
    assert parts.path == f"/v1.0/chats/{cid}/messages"


def test_a_message_next_link_reached_through_an_encoded_chat_id_pages_the_whole_chat(sandbox_admin, raw):
    cid = _chat_with_messages(sandbox_admin, 3)
    r = raw.get(f"/v1.0/chats/{quote(cid, safe='')}/messages", params={"$top": "2"})
    assert r.status_code == 200, r.text
    got = [m["body"]["content"] for m in r.json()["value"]]
    nxt = raw.get(r.json()["@odata.nextLink"])
    assert nxt.status_code == 200, nxt.text
    got += [m["body"]["content"] for m in nxt.json()["value"]]
    assert got == ["m2", "m1", "m0"]
