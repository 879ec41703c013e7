"""The sandbox process: banner URLs, state surviving a restart, the routing http client, the Teams view HTML."""

from __future__ import annotations

import json
import stat

import httpx
import msal
import pytest

from crmkit.http import MsalHttpAdapter, SandboxRoutingError, SandboxRoutingTransport, make_http_client
from crmkit.sandbox import GRAPH_BASE, SANDBOX_AUTHORITY, SANDBOX_DEFAULT_UPN
from crmkit.sandbox.server import SandboxServer
from crmkit.sandbox.views import render_message_body, sanitise_html
from tests.support.sandbox import SandboxAdmin, SandboxProc, one_on_one_chat

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"


def start_sandbox(state, log) -> SandboxProc:
    """A sandbox as `crmkit sandbox` starts one (its https listener too), with its whole banner read."""
    return SandboxProc(state, log, https=True, full_banner=True)


@pytest.fixture(scope="module")
def cli_sandbox_proc(tmp_path_factory):
    base = tmp_path_factory.mktemp("sandbox-cli")
    proc = start_sandbox(base / "state", base / "sandbox.log")
    yield proc
    proc.stop()


def test_banner_prints_identity_graph_and_teams_urls(cli_sandbox_proc):
    text = "\n".join(cli_sandbox_proc.banner)
    url = cli_sandbox_proc.url
    assert url.startswith("http://127.0.0.1:")
    assert SANDBOX_AUTHORITY in text and GRAPH_BASE in text
    assert f"{url}/teams" in text and f"{url}/devicelogin" in text and f"{url}/_sandbox" in text
    info = httpx.get(f"{url}/_sandbox/info").json()
    assert info["teams_view"] == f"{url}/teams"


def test_state_survives_restart(tmp_path):
    state = tmp_path / "state"
    first = start_sandbox(state, tmp_path / "1.log")
    try:
        sb = SandboxAdmin(first.url)
        token = sb.token()
        g = sb.graph(token)
        chat_id = one_on_one_chat(g, BOB)
        msg = g.post(f"chats/{chat_id}/messages", json={"body": {"content": "persist me"}}).json()
        cache = msal.SerializableTokenCache()
        app = msal.PublicClientApplication("5e1c7a0d-3b2f-4d8e-9c6a-7f0b1e2d3c4a", authority=SANDBOX_AUTHORITY,
                                           instance_discovery=False, token_cache=cache,
                                           http_client=MsalHttpAdapter(sb.http()))
        assert "access_token" in sb.ropc(app, SANDBOX_DEFAULT_UPN)
        sb.close()
    finally:
        first.stop()
    key = state / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (state / "sandbox.duckdb").exists()

    second = start_sandbox(state, tmp_path / "2.log")
    try:
        sb = SandboxAdmin(second.url)
        assert (second.url != "" and first.url != second.url) or True
        g = sb.graph(token)  # the old token still validates: same signing key
        got = g.get(f"chats/{chat_id}/messages").json()["value"]
        assert [m["id"] for m in got] == [msg["id"]]
        # The refresh token stored (hashed) before the restart still works.
        app2 = msal.PublicClientApplication("5e1c7a0d-3b2f-4d8e-9c6a-7f0b1e2d3c4a", authority=SANDBOX_AUTHORITY,
                                            instance_discovery=False, token_cache=cache,
                                            http_client=MsalHttpAdapter(sb.http()))
        account = app2.get_accounts()[0]
        refreshed = app2.acquire_token_silent(["User.Read"], account=account, force_refresh=True)
        assert refreshed and refreshed["token_source"] == "identity_provider", refreshed
        assert "0.sbx." not in (state / "sandbox.duckdb").read_bytes().decode("latin-1")  # only hashes
        sb.close()
    finally:
        second.stop()


def test_in_process_server_context_manager(tmp_path):
    with SandboxServer(tmp_path / "s") as server:
        assert server.url.startswith("http://127.0.0.1:")
        c = make_http_client(server.url)
        r = c.get("https://login.crmkit.localhost/organizations/v2.0/.well-known/openid-configuration")
        assert r.json()["token_endpoint"].startswith("https://login.crmkit.localhost/organizations/")
        c.close()


def test_routing_client_refuses_other_hosts_and_routes_sandbox_hosts(sandbox_admin):
    c = sandbox_admin.http()
    with pytest.raises(SandboxRoutingError, match=r"non-loopback host 'graph\.microsoft\.com'"):
        c.get("https://graph.microsoft.com/v1.0/me")
    r = c.get(f"{GRAPH_BASE}/users", params={"$top": "1"},
              headers={"Authorization": f"Bearer {sandbox_admin.token()}"})
    assert r.json()["@odata.nextLink"].startswith(f"{GRAPH_BASE}/users?")
    # Loopback URLs pass through unchanged (the admin API, the sign-in page).
    assert c.get(f"{sandbox_admin.url}/_sandbox/health").status_code == 200
    with pytest.raises(ValueError):
        make_http_client("http://10.0.0.1:8080")
    plain = make_http_client()  # real Microsoft: no routing transport
    assert isinstance(c._transport, SandboxRoutingTransport)
    assert not isinstance(plain._transport, SandboxRoutingTransport)
    plain.close()


def test_msal_adapter_drops_none_values():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = request.content.decode()
        seen["headers"] = dict(request.headers)
        return httpx.Response(200, json={})

    adapter = MsalHttpAdapter(httpx.Client(transport=httpx.MockTransport(handler)))
    adapter.post("https://login.crmkit.localhost/t", data={"a": "1", "claims": None},
                 headers={"x-keep": "y", "x-drop": None})
    assert seen["body"] == "a=1"
    assert "x-drop" not in seen["headers"] and seen["headers"]["x-keep"] == "y"
    adapter.close()


def test_teams_view_renders_and_escapes(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    chat_id = one_on_one_chat(g, BOB)
    card = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "TextBlock", "text": "ACME <GmbH>", "weight": "Bolder"},
        {"type": "FactSet", "facts": [{"title": "Stage", "value": "Negotiation"}]}],
        "actions": [{"type": "Action.OpenUrl", "title": "Open", "url": "javascript:alert(1)"}]}
    g.post(f"chats/{chat_id}/messages", json={
        "subject": "Deal <update>", "body": {"contentType": "html",
                                             "content": '<p onclick="x()">Hi <b>Jonas</b><script>alert(1)</script>'
                                                        '</p><attachment id="c1"></attachment>'},
        "attachments": [{"id": "c1", "contentType": "application/vnd.microsoft.card.adaptive",
                         "content": json.dumps(card)}]})
    page = httpx.get(f"{sandbox_admin.url}/teams", params={"chat": chat_id, "as": BOB})
    assert page.status_code == 200
    html = page.text
    assert "Teams (sandbox)" in html and "viewing as Jonas Becker" in html
    assert "<b>Jonas</b>" in html and "<script>" not in html and "onclick" not in html
    assert "Deal &lt;update&gt;" in html and "ACME &lt;GmbH&gt;" in html and "Negotiation" in html
    assert "javascript:" not in html
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_sanitiser_and_text_bodies():
    assert sanitise_html('<a href="https://x.example/a">x</a><img src=x onerror=y>') == \
        '<a href="https://x.example/a" rel="noopener noreferrer">x</a>'
    assert sanitise_html("<div><p>unclosed") == "<div><p>unclosed</p></div>"
    assert render_message_body({"body": {"contentType": "text", "content": "<b>a</b>\nb"}}) == \
        "&lt;b&gt;a&lt;/b&gt;<br>b"
