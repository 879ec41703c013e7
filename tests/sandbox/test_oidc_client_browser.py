"""A standard OIDC client library logs in at the sandbox in a real browser and verifies the id_token.

authlib's httpx OAuth2Client, configured only from the sandbox's OIDC discovery document, builds the
authorization URL (PKCE S256, state, nonce); Chromium opens it and the person signs in on the sandbox's
page; the code reaches a loopback redirect URI; authlib redeems it at the token endpoint (checking the
state) and authlib.jose verifies the id_token against the JWKS (signature, iss, aud, nonce, exp). A second,
silent request (prompt=none) then gets a code from the browser's sign-in session without a page.
Plain http on loopback, as the browser test of the authorization endpoint uses (authlib allows http for
loopback, RFC 8252).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_TENANT_ID
from tests.sandbox.test_auth_code_browser import _wait, catcher  # noqa: F401 (fixture)
from tests.support import forms
from tests.support.sandbox import SandboxProc

pytestmark = pytest.mark.browser

SCOPE = "openid profile offline_access User.Read"


# authlib 1.9 marks its jose module (for joserfc) and its httpx integration deprecated; both still work and are
# the documented client API, so their deprecation notices are not failures here.
@pytest.mark.filterwarnings("ignore::authlib.deprecate.AuthlibDeprecationWarning")
@pytest.mark.parametrize("lang", ["de", "en"])
def test_authlib_logs_in_in_chromium_and_verifies_the_id_token(sp: SandboxProc, page: Any, catcher: Any,  # noqa: F811
                                                               lang: str) -> None:
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken

    redirect, got = catcher
    doc = httpx.get(f"{sp.url}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration").json()
    client = OAuth2Client(client_id=SANDBOX_CLIENT_ID, redirect_uri=redirect, scope=SCOPE,
                          code_challenge_method="S256", token_endpoint_auth_method="none")
    try:
        verifier, nonce = generate_token(48), generate_token(20)
        url, state = client.create_authorization_url(doc["authorization_endpoint"], code_verifier=verifier,
                                                     nonce=nonce, ui_locales=lang)
        assert "code_challenge_method=S256" in url and state and nonce in url

        page.goto(url, wait_until="domcontentloaded")
        assert page.locator("html").get_attribute("lang") == lang
        forms.fill_sign_in(page, SANDBOX_DEFAULT_UPN)
        back = _wait(page, got)
        assert back["state"] == state and back["code"]

        # authlib checks the state of the response against its own, then posts code + code_verifier.
        token = client.fetch_token(doc["token_endpoint"], code_verifier=verifier,
                                   authorization_response=f"{redirect}?{httpx.QueryParams(back)}")
    finally:
        client.close()
    assert token["token_type"] == "Bearer" and token["refresh_token"] and token["id_token"]

    keys = JsonWebKey.import_key_set(httpx.get(doc["jwks_uri"]).json())
    claims = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken, claims_options={
        "iss": {"essential": True, "value": doc["issuer"]},
        "aud": {"essential": True, "value": SANDBOX_CLIENT_ID},
        "nonce": {"essential": True, "value": nonce},
        "exp": {"essential": True},
    }, claims_params={"nonce": nonce, "client_id": SANDBOX_CLIENT_ID})
    claims.validate(now=int(time.time()), leeway=30)

    me = httpx.get(f"{sp.url}/v1.0/me", headers={"Authorization": f"Bearer {token['access_token']}"}).json()
    assert claims["oid"] == me["id"] and claims["tid"] == SANDBOX_TENANT_ID
    assert claims["preferred_username"] == SANDBOX_DEFAULT_UPN and claims["name"] == me["displayName"]
    # A forged nonce does not pass the same check.
    wrong = jwt.decode(token["id_token"], keys, claims_cls=CodeIDToken,
                       claims_options={"nonce": {"essential": True, "value": "other"}},
                       claims_params={"nonce": "other", "client_id": SANDBOX_CLIENT_ID})
    with pytest.raises(Exception, match="nonce"):
        wrong.validate(now=int(time.time()))

    # The browser keeps the sign-in session: authlib's silent request (prompt=none) gets a code without a page.
    got.clear()
    silent = OAuth2Client(client_id=SANDBOX_CLIENT_ID, redirect_uri=redirect, scope=SCOPE,
                          code_challenge_method="S256", token_endpoint_auth_method="none")
    try:
        verifier, nonce = generate_token(48), generate_token(20)
        url, state = silent.create_authorization_url(doc["authorization_endpoint"], code_verifier=verifier,
                                                     nonce=nonce, prompt="none")
        page.goto(url, wait_until="domcontentloaded")
        back = _wait(page, got)
        assert back.get("state") == state and "error" not in back, back
        again = silent.fetch_token(doc["token_endpoint"], code_verifier=verifier,
                                   authorization_response=f"{redirect}?{httpx.QueryParams(back)}")
    finally:
        silent.close()
    claims = jwt.decode(again["id_token"], keys, claims_cls=CodeIDToken,
                        claims_options={"iss": {"essential": True, "value": doc["issuer"]},
                                        "nonce": {"essential": True, "value": nonce}},
                        claims_params={"nonce": nonce, "client_id": SANDBOX_CLIENT_ID})
    claims.validate(now=int(time.time()), leeway=30)
    assert claims["preferred_username"] == SANDBOX_DEFAULT_UPN
