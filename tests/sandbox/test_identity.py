"""Real MSAL against the running sandbox identity platform: flows and every documented error case."""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import msal
import pytest

from crmkit.http import MsalHttpAdapter
from crmkit.sandbox import (
    LOGIN_URL,
    SANDBOX_ADMIN_UPN,
    SANDBOX_CLIENT_ID,
    SANDBOX_DAEMON_CLIENT_ID,
    SANDBOX_DAEMON_SECRET,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_DISABLED_UPN,
    SANDBOX_MFA_CODE,
    SANDBOX_MFA_UPN,
    SANDBOX_PASSWORD,
    SANDBOX_PERSONAL_ACCOUNT,
    SANDBOX_TENANT_ID,
    SANDBOX_UNCONSENTED_CLIENT_ID,
)
from tests.support import forms

from .shapes import (
    APP_TOKEN,
    DEVICE_CODE,
    DISCOVERY,
    JWK,
    JWKS,
    OAUTH_ERROR,
    TOKEN,
    USER_REALM,
    assert_shape,
)

pytestmark = pytest.mark.sandbox

SCOPES = ["User.Read", "ChatMessage.Send", "Chat.Create"]


def _aadsts(result: dict[str, Any], code: int) -> None:
    assert f"AADSTS{code}" in result.get("error_description", ""), result
    assert code in result.get("error_codes", []), result


def _run_device_flow(app: msal.PublicClientApplication, flow: dict[str, Any]) -> tuple[threading.Thread, dict]:
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(app.acquire_token_by_device_flow(flow)), daemon=True)
    t.start()
    return t, out


# -- discovery and raw endpoint shapes -----------------------------------------------------------
def test_discovery_keys_and_userrealm_shapes(sandbox_admin):
    c = sandbox_admin.http()
    doc = c.get(f"{LOGIN_URL}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration").json()
    assert_shape(doc, DISCOVERY)
    assert doc["token_endpoint"].startswith("https://login.crmkit.localhost/")
    keys = c.get(doc["jwks_uri"]).json()
    assert_shape(keys, JWKS)
    assert_shape(keys["keys"][0], JWK)
    realm = c.get(f"{LOGIN_URL}/common/userrealm/{SANDBOX_DEFAULT_UPN}?api-version=1.0").json()
    assert_shape(realm, USER_REALM)
    assert realm["account_type"] == "Managed"
    bad = c.get(f"{LOGIN_URL}/no-such-tenant/v2.0/.well-known/openid-configuration")
    assert bad.status_code == 400
    assert_shape(bad.json(), OAUTH_ERROR)
    assert bad.json()["error_codes"] == [90002]


def test_device_code_and_token_response_shapes(sandbox_admin):
    c = sandbox_admin.http()
    base = f"{LOGIN_URL}/{SANDBOX_TENANT_ID}/oauth2/v2.0"
    dc = c.post(f"{base}/devicecode", data={"client_id": SANDBOX_CLIENT_ID, "scope": "User.Read offline_access "
                                            "openid profile"}).json()
    assert_shape(dc, DEVICE_CODE)
    assert dc["verification_uri"] == f"{sandbox_admin.url}/devicelogin"
    tok = c.post(f"{base}/token", data={
        "client_id": SANDBOX_CLIENT_ID, "grant_type": "password", "username": SANDBOX_DEFAULT_UPN,
        "password": SANDBOX_PASSWORD, "scope": "User.Read openid profile offline_access", "client_info": "1"}).json()
    assert_shape(tok, TOKEN)


# -- flows with real MSAL --------------------------------------------------------------------------
def test_device_flow_completed_through_sign_in_page(sandbox_admin):
    sandbox_admin.put("config", {"device_code_interval_s": 1})
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    assert "user_code" in flow, flow
    assert flow["verification_uri"].startswith("http://127.0.0.1:")
    t, result = _run_device_flow(app, flow)
    page = sandbox_admin.device_sign_in(flow)
    assert "You have signed in to the crmkit application" in page.text
    t.join(30)
    assert "access_token" in result, result
    assert result["token_source"] == "identity_provider"
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["upn"] == SANDBOX_DEFAULT_UPN
    assert claims["tid"] == SANDBOX_TENANT_ID
    assert {"User.Read", "ChatMessage.Send", "Chat.Create"} <= set(claims["scp"].split())
    assert claims["exp"] > time.time() + 3000
    assert {"oid", "iat", "appid", "aud", "iss"} <= set(claims)
    assert app.get_accounts()[0]["username"] == SANDBOX_DEFAULT_UPN


def test_access_token_is_signed_by_the_published_key(sandbox_admin):
    app = sandbox_admin.msal_app()
    result = sandbox_admin.ropc(app, SANDBOX_DEFAULT_UPN, scopes=SCOPES)
    c = sandbox_admin.http()
    jwks = c.get(f"{LOGIN_URL}/{SANDBOX_TENANT_ID}/discovery/v2.0/keys").json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(result["access_token"], key, algorithms=["RS256"],
                        audience="https://graph.crmkit.localhost")
    assert claims["oid"] == result["id_token_claims"]["oid"]


def test_password_flow_and_silent_refresh_in_a_new_app(sandbox_admin):
    cache = msal.SerializableTokenCache()
    app = sandbox_admin.msal_app(cache=cache)
    result = sandbox_admin.ropc(app, SANDBOX_DEFAULT_UPN, scopes=SCOPES)
    assert "access_token" in result, result
    old_rt = result["refresh_token"]
    serialized = cache.serialize()

    cache2 = msal.SerializableTokenCache()
    cache2.deserialize(serialized)
    app2 = sandbox_admin.msal_app(cache=cache2)
    account = app2.get_accounts(username=SANDBOX_DEFAULT_UPN)[0]
    assert account["environment"] == "login.crmkit.localhost"
    cached = app2.acquire_token_silent(SCOPES, account=account)
    assert cached["token_source"] == "cache"
    refreshed = app2.acquire_token_silent(SCOPES, account=account, force_refresh=True)
    assert refreshed and refreshed["token_source"] == "identity_provider", refreshed
    assert refreshed["access_token"] != result["access_token"]
    # Refresh tokens rotate: the first one is spent now.
    c = sandbox_admin.http()
    replay = c.post(f"{LOGIN_URL}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data={
        "client_id": SANDBOX_CLIENT_ID, "grant_type": "refresh_token", "refresh_token": old_rt,
        "scope": "User.Read offline_access"})
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_silent_refresh_after_access_token_expiry(sandbox_admin):
    sandbox_admin.put("config", {"access_token_lifetime_s": 60})
    app = sandbox_admin.msal_app()
    first = sandbox_admin.ropc(app, SANDBOX_DEFAULT_UPN, scopes=SCOPES)
    assert first["expires_in"] == 60
    account = app.get_accounts()[0]
    # MSAL treats tokens that expire within 5 minutes as expired, so this goes to the refresh grant.
    again = app.acquire_token_silent(SCOPES, account=account)
    assert again["token_source"] == "identity_provider"


# -- errors, as MSAL sees them --------------------------------------------------------------------
def test_wrong_password(sandbox_admin):
    result = sandbox_admin.ropc(sandbox_admin.msal_app(), SANDBOX_DEFAULT_UPN, password="not-the-password")
    assert result["error"] == "invalid_grant"
    _aadsts(result, 50126)


def test_mfa_user_cannot_use_password_flow(sandbox_admin):
    result = sandbox_admin.ropc(sandbox_admin.msal_app(), SANDBOX_MFA_UPN)
    assert result["error"] == "invalid_grant"
    _aadsts(result, 50076)


def test_disabled_user(sandbox_admin):
    result = sandbox_admin.ropc(sandbox_admin.msal_app(), SANDBOX_DISABLED_UPN)
    _aadsts(result, 50057)


def test_consent_missing(sandbox_admin):
    result = sandbox_admin.ropc(sandbox_admin.msal_app(SANDBOX_UNCONSENTED_CLIENT_ID), SANDBOX_DEFAULT_UPN)
    assert result["error"] == "invalid_grant"
    assert result.get("suberror") == "consent_required"
    _aadsts(result, 65001)


def test_consent_can_be_revoked_through_admin_api(sandbox_admin):
    sandbox_admin.put("consent", {"client_id": SANDBOX_CLIENT_ID, "admin_consented": False})
    result = sandbox_admin.ropc(sandbox_admin.msal_app(), SANDBOX_DEFAULT_UPN)
    _aadsts(result, 65001)


def test_personal_account_refused(sandbox_admin):
    result = sandbox_admin.ropc(sandbox_admin.msal_app(), SANDBOX_PERSONAL_ACCOUNT)
    _aadsts(result, 50020)
    assert "identity provider 'live.com' does not exist in tenant" in result["error_description"]


def test_unknown_client(sandbox_admin):
    result = sandbox_admin.ropc(sandbox_admin.msal_app("11111111-2222-3333-4444-555555555555"), SANDBOX_DEFAULT_UPN)
    assert result["error"] == "unauthorized_client"
    _aadsts(result, 700016)


def test_expired_device_code(sandbox_admin):
    sandbox_admin.put("config", {"device_code_lifetime_s": 1, "device_code_interval_s": 1})
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    time.sleep(1.3)
    result = app.acquire_token_by_device_flow(flow)
    assert result["error"] == "expired_token"
    _aadsts(result, 70020)
    # The sign-in page refuses it too.
    _, page = sandbox_admin.enter_code(flow["verification_uri"], flow["user_code"])
    assert "expired" in forms.alert(page)


def test_declined_device_code(sandbox_admin):
    sandbox_admin.put("config", {"device_code_interval_s": 1})
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    t, result = _run_device_flow(app, flow)
    page = sandbox_admin.device_sign_in(flow, button="cancel")
    assert "declined" in page.text
    t.join(30)
    assert result["error"] == "authorization_declined", result
    assert result["error_codes"]


def test_slow_down(sandbox_admin):
    sandbox_admin.put("config", {"device_code_interval_s": 2})
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    flow["interval"] = 0  # make MSAL poll back-to-back
    result = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: f["interval"] > 0)
    assert result["error"] == "slow_down", result
    assert flow["interval"] == 5  # MSAL backs off by 5 s, as RFC 8628 asks
    _aadsts(result, 70016)


def test_wrong_password_on_sign_in_page_then_success(sandbox_admin):
    sandbox_admin.put("config", {"device_code_interval_s": 1})
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    browser, page = sandbox_admin.enter_code(flow["verification_uri"], flow["user_code"])
    bad = forms.sign_in(browser, page, SANDBOX_DEFAULT_UPN, "nope", button="signin")
    assert "AADSTS50126" in forms.alert(bad)
    ok = forms.sign_in(browser, bad, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, button="signin")
    assert "You have signed in" in ok.text
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result


def test_mfa_user_signs_in_on_the_page_with_a_code(sandbox_admin):
    sandbox_admin.put("config", {"device_code_interval_s": 1})
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    mfa_page = sandbox_admin.device_sign_in(flow, upn=SANDBOX_MFA_UPN)
    assert "multi-factor" in mfa_page.text
    browser = sandbox_admin._clients[-1]
    wrong = forms.submit(browser, mfa_page, {"mfa_code": "000000"}, button="verify")
    assert "not correct" in forms.alert(wrong)
    done = forms.submit(browser, wrong, {"mfa_code": SANDBOX_MFA_CODE}, button="verify")
    assert "You have signed in" in done.text
    result = app.acquire_token_by_device_flow(flow)
    assert result["id_token_claims"]["preferred_username"] == SANDBOX_MFA_UPN


def test_personal_account_and_disabled_user_on_sign_in_page(sandbox_admin):
    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    page = sandbox_admin.device_sign_in(flow, upn=SANDBOX_PERSONAL_ACCOUNT)
    assert "AADSTS50020" in forms.alert(page)
    page = sandbox_admin.device_sign_in(flow, upn=SANDBOX_DISABLED_UPN)
    assert "AADSTS50057" in forms.alert(page)


def test_unconsented_app_gets_user_consent_on_the_page(sandbox_admin):
    sandbox_admin.put("config", {"device_code_interval_s": 1})
    app = sandbox_admin.msal_app(SANDBOX_UNCONSENTED_CLIENT_ID)
    flow = app.initiate_device_flow(scopes=SCOPES)
    consent_page = sandbox_admin.device_sign_in(flow)
    assert "Permissions requested" in consent_page.text
    done = forms.submit(sandbox_admin._clients[-1], consent_page, button="accept")
    assert "You have signed in" in done.text
    result = app.acquire_token_by_device_flow(flow)
    assert "access_token" in result, result
    # The user's consent now also covers the password flow for that app.
    again = sandbox_admin.ropc(sandbox_admin.msal_app(SANDBOX_UNCONSENTED_CLIENT_ID), SANDBOX_DEFAULT_UPN,
                               scopes=SCOPES)
    assert "access_token" in again, again


# -- admin consent ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["v2.0/adminconsent", "adminconsent"])
def test_admin_consent_redirects_with_parameters(sandbox_admin, path):
    sandbox_admin.put("consent", {"client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "admin_consented": False})
    browser = sandbox_admin.http()
    redirect = "http://localhost:8400/consent-done"
    params = {"client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "redirect_uri": redirect, "state": "xyz-123"}
    if path.startswith("v2.0"):
        params["scope"] = "https://graph.crmkit.localhost/ChatMessage.Send https://graph.crmkit.localhost/User.Read"
    page = browser.get(f"{sandbox_admin.url}/organizations/{path}", params=params)
    assert page.status_code == 200
    # A non-admin cannot grant it.
    refused = forms.sign_in(browser, page, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, button="accept")
    assert "AADSTS90094" in forms.alert(refused)
    granted = forms.sign_in(browser, refused, SANDBOX_ADMIN_UPN, SANDBOX_PASSWORD, button="accept")
    assert granted.status_code == 302
    loc = urlsplit(granted.headers["location"])
    q = parse_qs(loc.query)
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == redirect
    assert q["admin_consent"] == ["True"]
    assert q["tenant"] == [SANDBOX_TENANT_ID]
    assert q["state"] == ["xyz-123"]
    if path.startswith("v2.0"):
        assert "https://graph.crmkit.localhost/ChatMessage.Send" in q["scope"][0]
    result = sandbox_admin.ropc(sandbox_admin.msal_app(SANDBOX_UNCONSENTED_CLIENT_ID), SANDBOX_DEFAULT_UPN)
    assert "access_token" in result, result


def test_admin_consent_declined_and_bad_redirect(sandbox_admin):
    browser = sandbox_admin.http()
    params = {"client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "redirect_uri": "http://127.0.0.1:9/cb", "state": "s1",
              "scope": "https://graph.crmkit.localhost/.default"}
    page = browser.get(f"{sandbox_admin.url}/{SANDBOX_TENANT_ID}/v2.0/adminconsent", params=params)
    declined = forms.submit(browser, page, button="cancel")
    assert declined.status_code == 302
    q = parse_qs(urlsplit(declined.headers["location"]).query)
    assert q["error"] == ["consent_required"]
    assert q["error_description"][0].startswith("AADSTS65004")
    assert q["state"] == ["s1"]
    bad = browser.get(f"{sandbox_admin.url}/{SANDBOX_TENANT_ID}/v2.0/adminconsent",
                      params={**params, "redirect_uri": "https://evil.example/cb"})
    assert bad.status_code == 400 and "AADSTS50011" in bad.text


# -- app-only tokens -----------------------------------------------------------------------------
def test_client_credentials_token(sandbox_admin):
    app = msal.ConfidentialClientApplication(
        SANDBOX_DAEMON_CLIENT_ID, client_credential=SANDBOX_DAEMON_SECRET,
        authority=f"{LOGIN_URL}/{SANDBOX_TENANT_ID}", instance_discovery=False,
        http_client=MsalHttpAdapter(sandbox_admin.http()),
    )
    result = app.acquire_token_for_client(["https://graph.crmkit.localhost/.default"])
    assert_shape(result, APP_TOKEN)
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["idtyp"] == "app" and "roles" in claims and "scp" not in claims
    bad = msal.ConfidentialClientApplication(
        SANDBOX_DAEMON_CLIENT_ID, client_credential="wrong", authority=f"{LOGIN_URL}/{SANDBOX_TENANT_ID}",
        instance_discovery=False, http_client=MsalHttpAdapter(sandbox_admin.http()),
    ).acquire_token_for_client(["https://graph.crmkit.localhost/.default"])
    assert bad["error"] == "invalid_client"
    _aadsts(bad, 7000215)
