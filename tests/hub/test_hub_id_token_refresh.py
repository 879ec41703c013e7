"""crmkit hub: a sign-in whose id_token expired while its access token still works gets a fresh id_token.

The spawner verifies the id_token of the person's auth state before every spawn (crmkit/hub/hooks.py), and Entra's
id_token (1 h) may run out before the access token does. oauthenticator only refreshes once the access token stops
working, so a person whose server stopped and who spawned again in that window was refused ("your sign-in has
expired"). CrmkitAuthenticator (crmkit/hub/authenticator.py) refreshes with the refresh token when the id_token is
due; a refresh token the tenant refuses means signing in again.

- unit level (the session's sandbox, no hub): the authenticator's refresh_user against the sandbox's real token
  endpoint, with the hub's JupyterHub user stood in for by an object holding its auth state;
- the real hub (``crmkit hub --db`` over a team CRM, Chromium): tobias signs in with id_tokens that live 1 s, his
  server is stopped, the id_token expires past the verifier's leeway, and a new spawn gives him his server as his
  CRM user; after the tenant revoked his sign-in sessions a spawn is refused and he is asked to sign in again.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import inspect
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.postgres import PgCluster
from support.sandbox import SandboxAdmin, SandboxProc

from crmkit.auth.id_token import IdTokenVerifier
from crmkit.config import GRAPH_SCOPES
from crmkit.hub.authenticator import ID_TOKEN_MARGIN_S, id_token_expires_at
from crmkit.hub.config import SCOPES, prepare_state
from crmkit.hub.run import _register_in_sandbox
from crmkit.sandbox import SANDBOX_DOMAIN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from crmkit.store.pg_roles import user_role
from tests.hub import support_crm
from tests.hub.support_hub import RunningHub, hub_context, run_coroutine, running_hub, server_pid, sign_in_to_lab

pytestmark = pytest.mark.hub

# A person no other hub test signs in: the OS users crmkit-<name> are the machine's, shared by hubs running at once
UPN = f"tobias.berger@{SANDBOX_DOMAIN}"
NAME = "tobias.berger"
CRM_USER = "ben"  # a sales person of the demo CRM; tobias's directory account is linked to him here
# the clock skew the spawner's IdTokenVerifier allows on exp (hooks.py builds it with the default)
LEEWAY_S = inspect.signature(IdTokenVerifier).parameters["leeway_s"].default


# -- unit level ------------------------------------------------------------------------------------------------
class _HubUser:
    """What refresh_user reads of JupyterHub's user: its name and its (here unencrypted) auth state."""

    def __init__(self, auth_state: dict[str, Any]) -> None:
        self.name = NAME
        self.auth_state = auth_state
        self.saved = 0

    async def get_auth_state(self) -> dict[str, Any]:
        return copy.deepcopy(self.auth_state)

    async def save_auth_state(self, auth_state: dict[str, Any]) -> None:
        self.auth_state = copy.deepcopy(auth_state)
        self.saved += 1


def _fp(token: str) -> str:
    """A token's fingerprint: what an assertion compares and prints (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def _scp(access_token: str) -> set[str]:
    payload = access_token.split(".")[1]
    return set(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["scp"].split())


def test_refresh_user_gets_a_fresh_id_token_when_the_old_one_is_due_and_false_when_the_tenant_refuses(
        sandbox_admin: SandboxAdmin, sandbox_proc: SandboxProc, tmp_path: Path) -> None:
    from traitlets.config import Config

    from crmkit.hub.logout import CrmkitAuthenticator  # what the hub's config names
    from crmkit.hub.spawner import hub_username

    state = prepare_state(tmp_path / "hub")
    client_id = _register_in_sandbox(state, sandbox_proc.url, "http://127.0.0.1:8000/hub/oauth_callback")
    secret = (state / "client_secret").read_text().strip()
    token_url = f"{sandbox_proc.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token"

    def sign_in(id_token_lifetime_s: float) -> dict[str, Any]:
        """A sign-in's token response (the password grant stands in for the browser's code flow)."""
        sandbox_admin.put("config", {"id_token_lifetime_s": id_token_lifetime_s})
        r = httpx.post(token_url, data={"grant_type": "password", "client_id": client_id, "client_secret": secret,
                                        "username": UPN, "password": SANDBOX_PASSWORD, "scope": " ".join(SCOPES)},
                       timeout=30)
        assert r.status_code == 200, r.text
        sandbox_admin.put("config", {"id_token_lifetime_s": 3600})  # what a refresh then hands out
        return dict(r.json())

    async def run() -> None:
        cfg = Config()
        g = cfg.GenericOAuthenticator
        g.token_url, g.userdata_url = token_url, f"{sandbox_proc.url}/v1.0/me"
        g.client_id, g.client_secret, g.scope = client_id, secret, list(SCOPES)
        g.enable_auth_state, g.username_claim = True, hub_username
        authn = CrmkitAuthenticator(config=cfg)

        # an id_token about to expire (1 s), an access token of an hour: refreshed with the refresh token
        first = await authn._token_to_auth_model(sign_in(1))
        old = first["auth_state"]
        assert id_token_expires_at(old["id_token"]) < time.time() + ID_TOKEN_MARGIN_S
        user = _HubUser(old)
        refreshed = await authn.refresh_user(user)
        assert refreshed, "refresh_user asked for a new sign-in"
        new = refreshed["auth_state"]
        assert _fp(new["id_token"]) != _fp(old["id_token"]), "the id_token was not refreshed"
        assert id_token_expires_at(new["id_token"]) > time.time() + 3000
        assert _fp(new["refresh_token"]) != _fp(old["refresh_token"])  # the sandbox rotates it
        assert _scp(new["access_token"]) == set(GRAPH_SCOPES)  # the refresh asked for the sign-in's scopes
        assert refreshed["name"] == NAME and user.saved == 1
        assert _fp(user.auth_state["id_token"]) == _fp(new["id_token"])

        # a fresh id_token: no refresh-token exchange (oauthenticator's check of the access token only)
        again = await authn.refresh_user(user)
        assert again and _fp(again["auth_state"]["refresh_token"]) == _fp(new["refresh_token"])
        assert _fp(again["auth_state"]["id_token"]) == _fp(new["id_token"])

        # a page's parallel requests: one exchange of the single-use refresh token, every request refreshed
        user = _HubUser((await authn._token_to_auth_model(sign_in(1)))["auth_state"])
        results = await asyncio.gather(*(authn.refresh_user(user) for _ in range(3)))
        assert all(results), [bool(r) for r in results]
        assert len({_fp(r["auth_state"]["id_token"]) for r in results}) == 1
        assert id_token_expires_at(results[0]["auth_state"]["id_token"]) > time.time() + 3000

        # the tenant refuses the refresh token (sign-in sessions revoked): sign in again
        user = _HubUser((await authn._token_to_auth_model(sign_in(1)))["auth_state"])
        r = sandbox_admin.admin.post(f"/_sandbox/users/{UPN}/revoke_sign_in_sessions")
        assert r.status_code == 200 and r.json()["refresh_tokens"] >= 1, r.text
        assert await authn.refresh_user(user) is False
        assert user.saved == 0

    run_coroutine(run())  # not asyncio.run: a browser test may have left Playwright's loop here


# -- the real hub ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[RunningHub]:
    """The hub over a team CRM (tests/hub/support_crm.py) where tobias's account is the CRM user ben."""
    with support_crm.team_crm_database(pg_cluster, {CRM_USER: UPN}) as crm_url:
        with running_hub(tmp_path_factory.mktemp("hub-id-token"), ["--db", crm_url]) as h:
            h.crm_url = crm_url  # type: ignore[attr-defined]
            yield h


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    with hub_context(browser) as ctx:
        yield ctx


def _server_env(name: str) -> dict[str, str]:
    raw = Path(f"/proc/{server_pid(name)}/environ").read_bytes().split(b"\0")
    return {k.decode(): v.decode() for k, v in (line.split(b"=", 1) for line in raw if b"=" in line)}


def _no_server(name: str) -> bool:
    try:
        server_pid(name)
    except AssertionError:
        return True
    return False


def _stop_server(context: Any, hub: RunningHub) -> float:
    """Stop the person's server as the hub home page's Stop button does; returns when it is gone."""
    page = context.new_page()
    page.goto(hub.url + "/hub/home", wait_until="domcontentloaded")
    assert page.url.startswith(hub.url + "/hub/home"), page.url
    status = page.evaluate("""async (url) => {
      const xsrf = (document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '').slice(6);
      return (await fetch(url, {method: 'DELETE', headers: {'X-XSRFToken': decodeURIComponent(xsrf)}})).status;
    }""", f"{hub.url}/hub/api/users/{NAME}/server")
    page.close()
    assert status in (202, 204), status
    stopped = time.monotonic()
    deadline = stopped + 60
    while not _no_server(NAME):
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.5)
    return stopped


def test_a_spawn_after_the_id_token_expired_refreshes_it_and_a_revoked_sign_in_must_sign_in_again(
        hub: RunningHub, context: Any) -> None:
    database = hub.crm_url.rsplit("/", 1)[1]  # type: ignore[attr-defined]
    login = f"{user_role(database, CRM_USER)}@"
    with httpx.Client(base_url=hub.sandbox_url, verify=ssl.create_default_context(cafile=hub.ca_file),
                      timeout=30) as sb:
        # id_tokens that live 1 s from now on; access tokens keep their hour
        assert sb.put("/_sandbox/config", json={"id_token_lifetime_s": 1}).status_code == 200
        try:
            sign_in_to_lab(context, hub, UPN)
            assert login in _server_env(NAME)["CRMKIT_DB"]
            stopped = _stop_server(context, hub)
            # the id_token the hub holds (issued by the time of the stop) expires past the spawner's leeway
            time.sleep(max(0.0, stopped + LEEWAY_S + 1 + 4 - time.monotonic()))
            page = context.new_page()
            page.goto(f"{hub.url}/hub/spawn/{NAME}", wait_until="domcontentloaded")
            page.wait_for_function("() => document.querySelector('.jp-LabShell') || /Spawn failed|expired|login "
                                   "again/i.test(document.body ? document.body.innerText : '')", timeout=90_000)
            text = "" if page.query_selector(".jp-LabShell") else page.inner_text("body")
            assert not text, f"the spawn was refused: {text[:500]}"
            assert page.url.startswith(f"{hub.url}/user/{NAME}/"), page.url
            page.close(run_before_unload=True)
            print(f"spawn {time.monotonic() - stopped:.0f} s after the stop (id_token 1 s, leeway {LEEWAY_S} s): Lab")
            assert login in _server_env(NAME)["CRMKIT_DB"]  # his server, as his CRM user

            # the tenant revokes his sign-in sessions (refresh tokens and its browser session): the hub's next
            # refresh is refused, so a spawn is refused and he is asked to sign in again
            _stop_server(context, hub)
            r = sb.post(f"/_sandbox/users/{UPN}/revoke_sign_in_sessions")
            assert r.status_code == 200 and r.json()["refresh_tokens"] >= 1, r.text
            assert r.json()["browser_sessions"] >= 1, r.text  # the one his sign-in in this browser started
            page = context.new_page()
            answer = page.goto(f"{hub.url}/hub/spawn/{NAME}", wait_until="domcontentloaded")
            assert answer is not None
            print(f"revoked: the spawn request ended at {page.url.split('?')[0]} ({answer.status})")
            if page.url.startswith(hub.url):  # the spawn's own refresh refused: JupyterHub's 403
                assert answer.status == 403 and "login again" in page.inner_text("body"), (answer.status, page.url)
            else:  # the request's refresh refused: to the hub's login, i.e. the tenant, which asks the password
                page.wait_for_selector("#passwd", timeout=30_000)
                assert page.url.startswith(hub.sandbox_url), page.url
            page.close()
            time.sleep(2)
            assert _no_server(NAME)
        finally:
            sb.put("/_sandbox/config", json={"id_token_lifetime_s": 3600})
    log = (hub.state / "hub.log").read_text(errors="replace")
    assert "Refreshing the sign-in of tobias.berger" in log
