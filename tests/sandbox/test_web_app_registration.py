"""A confidential web app registered through the sandbox's admin API (what ``crmkit hub`` does for JupyterHub).

``POST /_sandbox/apps`` registers an app (name, delegated scopes, redirect URIs) and answers its client id and a
generated secret once; the sandbox keeps only the secret's sha256. The token endpoint then redeems that app's
authorization codes and refresh tokens with the secret only (client_secret_post or HTTP Basic), as Entra does for
a confidential client.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from tests.support.sandbox import Browser, SandboxProc

pytestmark = pytest.mark.sandbox

CALLBACK = "https://hub.crmkit.localhost:8000/hub/oauth_callback"  # not loopback: exact match only
SCOPE = "openid profile email offline_access User.Read"


@pytest.fixture
def api(sp: SandboxProc) -> httpx.Client:
    c = httpx.Client(base_url=sp.url, timeout=30)
    c.post("/_sandbox/reset").raise_for_status()
    yield c
    c.close()


def _register(api: httpx.Client, **body: object) -> httpx.Response:
    return api.post("/_sandbox/apps", json={"name": "JupyterHub", "delegated_scopes": ["User.Read"],
                                             "redirect_uris": [CALLBACK], **body})


def _code(sp: SandboxProc, client_id: str, form_browser: Browser) -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    q = {"client_id": client_id, "response_type": "code", "redirect_uri": CALLBACK, "scope": SCOPE,
         "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256"}
    page = form_browser.get(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/authorize?{urlencode(q)}")
    assert page.status_code == 200, page.text[:400]
    done = form_browser.sign_in(page, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
    assert done.status_code == 302 and done.headers["location"].startswith(CALLBACK + "?"), done.text[:400]
    return parse_qs(urlsplit(done.headers["location"]).query)["code"][0], verifier


def _token(sp: SandboxProc, data: dict[str, str], auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data=data, auth=auth)


def test_a_registered_web_app_gets_its_secret_once_and_the_sandbox_keeps_only_its_hash(
        sp: SandboxProc, api: httpx.Client) -> None:
    r = _register(api)
    assert r.status_code == 201, r.text
    app = r.json()
    client_id, secret = app["client_id"], app["client_secret"]
    assert app["kind"] == "confidential" and app["redirect_uris"] == [CALLBACK]
    assert len(secret) >= 32 and client_id != secret
    again = api.get(f"/_sandbox/apps/{client_id}/redirect_uris")
    assert again.status_code == 200 and again.json()["kind"] == "confidential"
    assert secret not in again.text
    state = Path(sp.proc.args[sp.proc.args.index("--state") + 1])
    for f in state.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
    # a second registration is another app with another secret
    other = _register(api, name="JupyterHub 2").json()
    assert other["client_id"] != client_id and other["client_secret"] != secret


@pytest.mark.parametrize("bad", [{"redirect_uris": ["http://hub.example/cb"]}, {"delegated_scopes": ["Mail.Send"]},
                                 {"name": ""}, {"redirect_uris": []}])
def test_a_registration_with_bad_fields_is_refused(api: httpx.Client, bad: dict[str, object]) -> None:
    r = _register(api, **bad)
    assert r.status_code == 400 and "client_secret" not in r.text, r.text


def test_the_token_endpoint_redeems_its_codes_and_refresh_tokens_with_the_secret_only(
        sp: SandboxProc, api: httpx.Client, form_browser: Browser) -> None:
    app = _register(api).json()
    client_id, secret = app["client_id"], app["client_secret"]
    grant = {"grant_type": "authorization_code", "client_id": client_id, "redirect_uri": CALLBACK, "scope": SCOPE}

    code, verifier = _code(sp, client_id, form_browser)
    no_secret = _token(sp, {**grant, "code": code, "code_verifier": verifier})
    assert no_secret.status_code == 401 and no_secret.json()["error"] == "invalid_client", no_secret.text
    wrong = _token(sp, {**grant, "code": code, "code_verifier": verifier, "client_secret": secret[:-2] + "xx"})
    assert wrong.status_code == 401 and wrong.json()["error_codes"] == [7000215], wrong.text

    ok = _token(sp, {**grant, "code": code, "code_verifier": verifier, "client_secret": secret})
    assert ok.status_code == 200, ok.text
    tokens = ok.json()
    assert tokens["access_token"] and tokens["refresh_token"] and tokens["id_token"]

    refresh = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": tokens["refresh_token"]}
    assert _token(sp, refresh).status_code == 401  # no secret: refused, and the refresh token is not spent
    basic = _token(sp, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                   auth=(client_id, secret))  # HTTP Basic, as oauthenticator sends it
    assert basic.status_code == 200 and basic.json()["refresh_token"], basic.text
    me = httpx.get(f"{sp.url}/v1.0/me", headers={"Authorization": f"Bearer {basic.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["userPrincipalName"] == SANDBOX_DEFAULT_UPN
