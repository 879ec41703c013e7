"""The sandbox's authorization endpoint: authorization code + PKCE, id_tokens an OIDC client verifies.

Against the real sandbox subprocess; the sign-in page is filled in like a person does (tests.support Browser).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import ssl
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import msal
import pytest

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from tests.support import forms
from tests.support.sandbox import Browser, SandboxProc

pytestmark = pytest.mark.sandbox

REDIRECT = "http://127.0.0.1:8765/callback"  # a loopback URI, as Entra allows any port for public clients
SCOPE = "openid profile offline_access User.Read"
STATE = "a b/ä&=?#"  # comes back exactly as sent


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(base: str, **params: str) -> str:
    q = {"client_id": SANDBOX_CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT, "scope": SCOPE,
         "state": STATE, **params}
    return f"{base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/authorize?{urlencode(q)}"


def _query(location: str) -> dict[str, str]:
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _posted(page: httpx.Response) -> dict[str, str]:
    """The fields a form_post page sends to the redirect URI (a browser submits it by itself)."""
    parsed = forms.page_forms(page.text)
    assert len(parsed.forms) == 1 and parsed.forms[0]["action"] == REDIRECT, page.text[:400]
    return parsed.forms[0]["fields"]


def _login(form_browser: Browser, url: str) -> dict[str, str]:
    page = form_browser.get(url)
    assert page.status_code == 200, page.text[:400]
    done = form_browser.sign_in(page, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, button="signin")
    assert done.status_code == 302, done.text[:400]
    return _query(done.headers["location"])


def _redeem(sp: SandboxProc, code: str, verifier: str, redirect: str = REDIRECT) -> httpx.Response:
    return httpx.post(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": SANDBOX_CLIENT_ID, "code": code,
        "redirect_uri": redirect, "code_verifier": verifier, "scope": SCOPE})


def _aadsts(r: httpx.Response, error: str, code: int) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == error and body["error_codes"] == [code], body


def test_pkce_login_gives_tokens_and_an_id_token_that_verifies(sp: SandboxProc, form_browser: Browser) -> None:
    verifier, challenge = _pkce()
    nonce = secrets.token_urlsafe(16)
    back = _login(form_browser, _authorize_url(sp.url, code_challenge=challenge, code_challenge_method="S256",
                                          nonce=nonce))
    assert back["state"] == STATE and back["code"]
    r = _redeem(sp, back["code"], verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] and tokens["id_token"]
    me = httpx.get(f"{sp.url}/v1.0/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200 and me.json()["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    # A standard OIDC check: key from the JWKS named in discovery, issuer as discovery says.
    doc = httpx.get(f"{sp.url}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration").json()
    keys = httpx.get(doc["jwks_uri"]).json()
    kid = jwt.get_unverified_header(tokens["id_token"])["kid"]
    key = jwt.PyJWKSet.from_dict(keys)[kid]
    claims = jwt.decode(tokens["id_token"], key.key, algorithms=["RS256"], audience=SANDBOX_CLIENT_ID,
                        issuer=doc["issuer"], options={"require": ["exp", "iat", "nonce"]})
    assert claims["nonce"] == nonce
    assert claims["oid"] == me.json()["id"] and claims["tid"] == SANDBOX_TENANT_ID
    assert claims["preferred_username"] == SANDBOX_DEFAULT_UPN and claims["name"] == me.json()["displayName"]


def test_wrong_verifier_is_refused_and_a_code_works_once(sp: SandboxProc, form_browser: Browser) -> None:
    verifier, challenge = _pkce()
    back = _login(form_browser, _authorize_url(sp.url, code_challenge=challenge, code_challenge_method="S256"))
    _aadsts(_redeem(sp, back["code"], _pkce()[0]), "invalid_grant", 50148)
    _aadsts(_redeem(sp, back["code"], verifier, redirect="http://127.0.0.1:9999/other"), "invalid_grant", 500112)
    assert _redeem(sp, back["code"], verifier).status_code == 200
    _aadsts(_redeem(sp, back["code"], verifier), "invalid_grant", 54005)


def test_bad_redirect_uri_and_unknown_client_are_pages_not_redirects(sp: SandboxProc, form_browser: Browser) -> None:
    r = form_browser.get(_authorize_url(sp.url, redirect_uri="https://evil.example/cb"))
    assert r.status_code == 400 and "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html") and "AADSTS50011" in r.text
    r = form_browser.get(_authorize_url(sp.url, client_id="11111111-2222-3333-4444-555555555555"))
    assert r.status_code == 400 and "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html") and "AADSTS700016" in r.text


def test_prompt_none_without_a_session_redirects_with_login_required(sp: SandboxProc, form_browser: Browser) -> None:
    r = form_browser.get(_authorize_url(sp.url, prompt="none"))
    assert r.status_code == 302
    back = _query(r.headers["location"])
    assert back["error"] == "login_required" and back["state"] == STATE and "code" not in back


def test_cancel_redirects_with_access_denied(sp: SandboxProc, form_browser: Browser) -> None:
    page = form_browser.get(_authorize_url(sp.url))
    r = form_browser.submit(page, button="cancel")
    assert r.status_code == 302
    back = _query(r.headers["location"])
    assert back["error"] == "access_denied" and back["state"] == STATE


def test_form_post_and_german_page(sp: SandboxProc, form_browser: Browser) -> None:
    verifier, challenge = _pkce()
    page = form_browser.get(_authorize_url(sp.url, response_mode="form_post", ui_locales="de-DE",
                                      login_hint=SANDBOX_DEFAULT_UPN, code_challenge=challenge,
                                      code_challenge_method="S256"))
    assert page.status_code == 200 and page.headers["content-language"] == "de"
    assert "Kennwort" in page.text and SANDBOX_DEFAULT_UPN in page.text  # login_hint prefills the name
    posted = form_browser.sign_in(page, None, SANDBOX_PASSWORD, button="signin")
    assert posted.status_code == 200 and "location" not in posted.headers
    fields = _posted(posted)  # the page posts code and state to the redirect URI
    assert fields["state"] == STATE
    assert _redeem(sp, fields["code"], verifier).status_code == 200


def test_msal_auth_code_flow_over_https(sp: SandboxProc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sp.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    app = msal.PublicClientApplication(SANDBOX_CLIENT_ID, authority=f"{sp.https_url}/{SANDBOX_TENANT_ID}",
                                       instance_discovery=False)
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT, login_hint=SANDBOX_DEFAULT_UPN,
                                       response_mode="form_post")
    browser = Browser(verify=ssl.create_default_context(cafile=sp.ca_file))
    try:
        page = browser.get(flow["auth_uri"])
        assert page.status_code == 200, page.text[:400]
        done = browser.sign_in(page, None, SANDBOX_PASSWORD, button="signin")
    finally:
        browser.close()
    assert done.status_code == 200, done.text[:400]
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(flow, _posted(done))
    assert "access_token" in result, result
    assert result["id_token_claims"]["preferred_username"] == SANDBOX_DEFAULT_UPN
    assert result["id_token_claims"]["aud"] == SANDBOX_CLIENT_ID
    accounts = app.get_accounts()
    assert [a["username"] for a in accounts] == [SANDBOX_DEFAULT_UPN]
    again = app.acquire_token_silent(["User.Read"], account=accounts[0], force_refresh=True)
    assert again and "access_token" in again, again


def test_mfa_and_consent_pages_on_the_way_to_the_code(sp: SandboxProc, form_browser: Browser) -> None:
    from crmkit.sandbox import SANDBOX_MFA_CODE, SANDBOX_MFA_UPN, SANDBOX_UNCONSENTED_CLIENT_ID

    verifier, challenge = _pkce()
    page = form_browser.get(_authorize_url(sp.url, client_id=SANDBOX_UNCONSENTED_CLIENT_ID, code_challenge=challenge,
                                      code_challenge_method="S256"))
    mfa = form_browser.sign_in(page, SANDBOX_MFA_UPN, SANDBOX_PASSWORD, button="signin")
    assert mfa.status_code == 200 and "mfa_code" in mfa.text
    consent = form_browser.submit(mfa, {"mfa_code": SANDBOX_MFA_CODE}, button="verify")
    assert consent.status_code == 200 and "User.Read" in consent.text  # the permissions asked for
    done = form_browser.submit(consent, button="accept")
    assert done.status_code == 302, done.text[:400]
    back = _query(done.headers["location"])
    r = httpx.post(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "code": back["code"],
        "redirect_uri": REDIRECT, "code_verifier": verifier, "scope": SCOPE})
    assert r.status_code == 200, r.text
    # the code belongs to its client: another one cannot redeem it
    _aadsts(_redeem(sp, back["code"], verifier), "invalid_grant", 70000)


def test_a_finished_sign_in_page_posted_again_is_a_page_in_the_persons_language(sp: SandboxProc,
                                                                                form_browser: Browser) -> None:
    page = form_browser.get(_authorize_url(sp.url, ui_locales="de"))
    first = form_browser.sign_in(page, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, button="signin")
    assert first.status_code == 302
    again = form_browser.sign_in(page, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, button="signin")
    assert again.status_code == 400 and "location" not in again.headers
    assert again.headers["content-language"] == "de" and "Anmeldesitzung" in Browser.alert(again), again.text
