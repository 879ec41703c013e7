"""crmkit.auth.hub_tokens: a hub's server gets its person's current tokens from the hub's REST API.

Against a real local HTTP server on 127.0.0.1 that answers ``GET /hub/api/users/<name>`` the way JupyterHub 6 does
(the user model, with ``auth_state`` only for a token holding ``admin:auth_state``), over real sockets through
crmkit's http seam. The real hub is in tests/hub/test_hub_tokens_logout.py.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crmkit.auth import SignInRequired
from crmkit.auth.hub_tokens import HubTokens, hub_tokens_from_env
from crmkit.mode import UnknownMode

pytestmark = pytest.mark.core

SERVER_TOKEN = "server-api-token-of-anna-0123456789"


def _jwt(claims: dict[str, Any]) -> str:
    def part(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


@dataclass
class FakeHubApi:
    """What the hub holds: one user's auth state; the access token it hands out changes when ``refresh`` is set."""

    url: str = ""
    status: int = 200
    auth_state: dict[str, Any] | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Authorization header)
    refresh_after: int | None = None  # hand out ``refreshed`` (default "<token>-refreshed") from this request on
    refreshed: str | None = None

    def answer(self, path: str, auth: str) -> tuple[int, dict[str, Any]]:
        self.requests.append((path, auth))
        if auth != f"token {SERVER_TOKEN}":
            return 403, {"status": 403, "message": "Forbidden"}
        if path != "/hub/api/users/anna.schmidt":
            return 404, {"status": 404, "message": "Not Found"}
        if self.status != 200:
            return self.status, {"status": self.status}
        state = dict(self.auth_state) if self.auth_state is not None else None
        if state and self.refresh_after is not None and len(self.requests) >= self.refresh_after:
            state["access_token"] = self.refreshed or state["access_token"] + "-refreshed"
        return 200, {"kind": "user", "name": "anna.schmidt", "admin": False, "auth_state": state}


@contextmanager
def serving_hub_api() -> Iterator[FakeHubApi]:
    """The fake hub API on a free port of 127.0.0.1, for the ``with`` block."""
    api = FakeHubApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = api.answer(self.path, self.headers.get("Authorization", ""))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}/hub/api"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hub_api() -> Iterator[FakeHubApi]:
    with serving_hub_api() as api:
        yield api


ANNA_ID_TOKEN = _jwt({"tid": "tenant-1", "oid": "oid-anna", "preferred_username": "anna.schmidt@contoso.example",
                      "name": "Anna Schmidt"})


def _state(access: str = "access-1") -> dict[str, Any]:
    return {"access_token": access, "refresh_token": "refresh-1", "id_token": ANNA_ID_TOKEN,
            "oauth_user": {"id": "oid-anna", "userPrincipalName": "anna.schmidt@contoso.example",
                           "displayName": "Anna Schmidt"}}


def _env(hub_api: FakeHubApi, **extra: str) -> dict[str, str]:
    return {"CRMKIT_MODE": "team", "JUPYTERHUB_API_URL": hub_api.url, "JUPYTERHUB_API_TOKEN": SERVER_TOKEN,
            "JUPYTERHUB_USER": "anna.schmidt", **extra}


def test_only_a_hub_server_in_team_mode_gets_hub_tokens(hub_api: FakeHubApi) -> None:
    assert hub_tokens_from_env({}) is None  # single-user mode: MSAL's caches, as before
    assert hub_tokens_from_env({**_env(hub_api), "CRMKIT_MODE": "single-user"}) is None
    assert hub_tokens_from_env({**_env(hub_api), "JUPYTERHUB_API_TOKEN": ""}) is None  # team mode, but no hub
    with pytest.raises(UnknownMode):
        hub_tokens_from_env({**_env(hub_api), "CRMKIT_MODE": "teem"})
    source = hub_tokens_from_env(_env(hub_api))
    assert source is not None and source.user == "anna.schmidt"
    assert SERVER_TOKEN not in repr(source)
    source.close()


def test_the_current_access_token_comes_from_the_hub_with_the_servers_own_token(hub_api: FakeHubApi) -> None:
    hub_api.auth_state = _state("access-1")
    source = hub_tokens_from_env(_env(hub_api))
    assert source is not None
    provider = source.provider()
    assert provider(False) == "access-1"
    hub_api.auth_state = _state("access-2")  # the hub refreshed it meanwhile
    assert provider(False) == "access-2"
    assert hub_api.requests == [("/hub/api/users/anna.schmidt", f"token {SERVER_TOKEN}")] * 2
    account = source.account()
    assert (account.username, account.display_name, account.tenant_id, account.object_id) == (
        "anna.schmidt@contoso.example", "Anna Schmidt", "tenant-1", "oid-anna")
    assert account.home_account_id == "oid-anna.tenant-1"
    source.close()


def test_after_graph_refused_a_token_the_source_waits_for_the_hub_to_hand_out_a_refreshed_one(
        hub_api: FakeHubApi) -> None:
    hub_api.auth_state = _state("access-1")
    slept: list[float] = []
    source = HubTokens(hub_api.url, SERVER_TOKEN, "anna.schmidt", refresh_wait_s=30, poll_s=0.01,
                       sleep=slept.append)
    assert source.access_token() == "access-1"
    hub_api.refresh_after = 4  # the hub refreshes on the 4th request (its auth_refresh_age has passed)
    assert source.access_token(force_refresh=True) == "access-1-refreshed"
    assert len(hub_api.requests) == 4 and len(slept) == 2
    source.close()


def test_a_token_the_hub_cannot_refresh_asks_for_a_new_sign_in_at_the_hub(hub_api: FakeHubApi) -> None:
    hub_api.auth_state = _state("access-1")
    source = HubTokens(hub_api.url, SERVER_TOKEN, "anna.schmidt", refresh_wait_s=0.2, poll_s=0.05)
    source.access_token()
    with pytest.raises(SignInRequired, match="sign in at the hub again"):
        source.access_token(force_refresh=True)
    source.close()


@pytest.mark.parametrize(("setup", "match"), [
    ({"auth_state": None}, "no auth state"),
    ({"auth_state": {"refresh_token": "r"}}, "no auth state"),
    ({"status": 500}, "answered 500"),
])
def test_a_hub_without_tokens_for_the_person_is_a_sign_in_required(hub_api: FakeHubApi, setup: dict[str, Any],
                                                                   match: str) -> None:
    for k, v in setup.items():
        setattr(hub_api, k, v)
    source = HubTokens(hub_api.url, SERVER_TOKEN, "anna.schmidt")
    with pytest.raises(SignInRequired, match=match):
        source.access_token()
    source.close()


def test_another_persons_token_or_name_gets_nothing(hub_api: FakeHubApi) -> None:
    hub_api.auth_state = _state()
    wrong = HubTokens(hub_api.url, "tom-s-server-token", "anna.schmidt")
    with pytest.raises(SignInRequired, match="refused"):
        wrong.access_token()
    wrong.close()
    down = HubTokens("http://127.0.0.1:9/hub/api", SERVER_TOKEN, "anna.schmidt")  # nothing listens on port 9
    with pytest.raises(SignInRequired, match="did not answer"):
        down.access_token()
    down.close()
