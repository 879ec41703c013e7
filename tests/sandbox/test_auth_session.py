"""The sign-in page's browser session and the ``prompt`` values that use it, over HTTP with a cookie jar.

After a sign-in at /authorize the sandbox sets an HttpOnly, SameSite=Lax cookie holding an opaque random id
(the server keeps the session under its sha256): ``prompt=none`` then returns a code without a page, no
prompt skips the password, ``select_account`` offers the account or another one, ``login`` asks again.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from crmkit.sandbox import (
    SANDBOX_ADMIN_UPN,
    SANDBOX_CLIENT_ID,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_PASSWORD,
    SANDBOX_TENANT_ID,
    SANDBOX_UNCONSENTED_CLIENT_ID,
)
from tests.sandbox.test_auth_code import REDIRECT, STATE, _authorize_url, _pkce, _query
from tests.support.sandbox import Browser, SandboxProc

pytestmark = pytest.mark.sandbox


def _cookie(sp: SandboxProc) -> str:
    """The session cookie's name: Entra's ESTSAUTH and the listener's port (cookies do not tell ports apart)."""
    return f"ESTSAUTH_{urlsplit(sp.url).port}"


@pytest.fixture
def form_browser(form_browser: Browser, sp: SandboxProc) -> Browser:
    """The form-posting browser (tests/conftest.py), on this module's sandbox reset first."""
    httpx.post(f"{sp.url}/_sandbox/reset").raise_for_status()
    return form_browser


def _sign_in(sp: SandboxProc, form_browser: Browser, upn: str = SANDBOX_DEFAULT_UPN) -> httpx.Response:
    page = form_browser.get(_authorize_url(sp.url))
    assert page.status_code == 200 and 'name="passwd"' in page.text
    done = form_browser.sign_in(page, upn, SANDBOX_PASSWORD, button="signin")
    assert done.status_code == 302 and "code" in _query(done.headers["location"]), done.text[:300]
    return done


def _redeem_user(sp: SandboxProc, code: str, verifier: str | None = None) -> str:
    data = {"grant_type": "authorization_code", "client_id": SANDBOX_CLIENT_ID, "code": code,
            "redirect_uri": REDIRECT, "scope": "openid User.Read"}
    if verifier:
        data["code_verifier"] = verifier
    r = httpx.post(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data=data)
    assert r.status_code == 200, r.text
    me = httpx.get(f"{sp.url}/v1.0/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    return me.json()["userPrincipalName"]


def test_the_session_cookie_is_httponly_lax_and_opaque(sp: SandboxProc, form_browser: Browser) -> None:
    done = _sign_in(sp, form_browser)
    header = next(h for h in done.headers.get_list("set-cookie") if h.startswith(_cookie(sp) + "="))
    attrs = [a.strip().lower() for a in header.split(";")]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    value = header.split(";", 1)[0].split("=", 1)[1]
    assert len(value) >= 32 and "." not in value  # an opaque random id, not a token
    for secret in (SANDBOX_PASSWORD, SANDBOX_DEFAULT_UPN, "anna", done.headers["location"]):
        assert secret.lower() not in value.lower()
    # An unknown id is no session at all.
    other = Browser()
    try:
        other.client.cookies.set(_cookie(sp), "x" * 43, domain="127.0.0.1")
        r = other.get(_authorize_url(sp.url, prompt="none"))
        assert r.status_code == 302 and _query(r.headers["location"])["error"] == "login_required"
    finally:
        other.close()


def test_the_server_keeps_only_the_sha256_of_the_id(tmp_path: Path) -> None:
    import duckdb

    from crmkit.sandbox.state import SandboxState, sha256

    state = SandboxState(tmp_path)
    try:
        state.start_browser_session("opaque-id-1", "user-1", 60)
        assert state.browser_session("opaque-id-1") == "user-1" and state.browser_session("nope") is None
        state.end_browser_session("opaque-id-1")
        assert state.browser_session("opaque-id-1") is None
        state.start_browser_session("opaque-id-2", "user-2", 60)
    finally:
        state.close()
    con = duckdb.connect(str(tmp_path / "sandbox.duckdb"))
    rows = con.execute("SELECT * FROM browser_sessions").fetchall()
    con.close()
    assert rows and rows[0][0] == sha256("opaque-id-2") and "opaque-id-2" not in repr(rows)


def test_prompt_none_with_a_session_returns_a_code_without_a_page(sp: SandboxProc, form_browser: Browser) -> None:
    _sign_in(sp, form_browser)
    verifier, challenge = _pkce()
    r = form_browser.get(_authorize_url(sp.url, prompt="none", code_challenge=challenge, code_challenge_method="S256"))
    assert r.status_code == 302, r.text[:300]
    back = _query(r.headers["location"])
    assert back["state"] == STATE and "error" not in back
    assert _redeem_user(sp, back["code"], verifier) == SANDBOX_DEFAULT_UPN
    # another account named by login_hint needs the person: interaction_required, by redirect
    r = form_browser.get(_authorize_url(sp.url, prompt="none", login_hint=SANDBOX_ADMIN_UPN))
    assert r.status_code == 302
    back = _query(r.headers["location"])
    assert back["error"] == "interaction_required" and "code" not in back and back["state"] == STATE
    # an app the person has not consented to: consent_required, by redirect
    r = form_browser.get(_authorize_url(sp.url, prompt="none", client_id=SANDBOX_UNCONSENTED_CLIENT_ID))
    assert r.status_code == 302 and _query(r.headers["location"])["error"] == "consent_required"


def test_no_prompt_with_a_session_skips_the_password(sp: SandboxProc, form_browser: Browser) -> None:
    _sign_in(sp, form_browser)
    r = form_browser.get(_authorize_url(sp.url))
    assert r.status_code == 302, r.text[:300]
    assert _redeem_user(sp, _query(r.headers["location"])["code"]) == SANDBOX_DEFAULT_UPN
    # ...but a login_hint naming someone else shows the sign-in form for them
    r = form_browser.get(_authorize_url(sp.url, login_hint=SANDBOX_ADMIN_UPN))
    assert r.status_code == 200 and 'name="passwd"' in r.text and SANDBOX_ADMIN_UPN in r.text


def test_prompt_login_asks_for_the_password_again(sp: SandboxProc, form_browser: Browser) -> None:
    _sign_in(sp, form_browser)
    page = form_browser.get(_authorize_url(sp.url, prompt="login"))
    assert page.status_code == 200 and 'name="passwd"' in page.text
    wrong = form_browser.sign_in(page, SANDBOX_DEFAULT_UPN, "wrong", button="signin")
    assert wrong.status_code == 400 and "AADSTS50126" in Browser.alert(wrong)
    done = form_browser.sign_in(wrong, SANDBOX_ADMIN_UPN, SANDBOX_PASSWORD, button="signin")
    assert done.status_code == 302
    assert _redeem_user(sp, _query(done.headers["location"])["code"]) == SANDBOX_ADMIN_UPN
    # the new sign-in is the session now
    r = form_browser.get(_authorize_url(sp.url, prompt="none"))
    assert _redeem_user(sp, _query(r.headers["location"])["code"]) == SANDBOX_ADMIN_UPN


@pytest.mark.parametrize(("ui_locales", "other"), [("en", "Use another account"), ("de", "Anderes Konto verwenden")])
def test_prompt_select_account_shows_the_account_picker(sp: SandboxProc, form_browser: Browser, ui_locales: str,
                                                        other: str) -> None:
    _sign_in(sp, form_browser)
    picker = form_browser.get(_authorize_url(sp.url, prompt="select_account", ui_locales=ui_locales))
    assert picker.status_code == 200 and picker.headers["content-language"] == ui_locales
    assert SANDBOX_DEFAULT_UPN in picker.text and other in picker.text and 'name="passwd"' not in picker.text
    chosen = form_browser.submit(picker, button="account")
    assert chosen.status_code == 302
    assert _redeem_user(sp, _query(chosen.headers["location"])["code"]) == SANDBOX_DEFAULT_UPN
    picker = form_browser.get(_authorize_url(sp.url, prompt="select_account", ui_locales=ui_locales))
    form = form_browser.submit(picker, button="other")
    assert form.status_code == 200 and 'name="passwd"' in form.text
    assert form.headers["content-language"] == ui_locales


def test_prompt_select_account_without_a_session_is_the_sign_in_form(sp: SandboxProc, form_browser: Browser) -> None:
    page = form_browser.get(_authorize_url(sp.url, prompt="select_account"))
    assert page.status_code == 200 and 'name="passwd"' in page.text


def test_logout_ends_the_session(sp: SandboxProc, form_browser: Browser) -> None:
    _sign_in(sp, form_browser)
    out = form_browser.get(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/logout?ui_locales=de")
    assert out.status_code == 200 and out.headers["content-type"].startswith("text/html")
    assert out.headers["content-language"] == "de"
    r = form_browser.get(_authorize_url(sp.url, prompt="none"))
    assert _query(r.headers["location"])["error"] == "login_required"
    # with a registered post-logout redirect URI it goes back there
    _sign_in(sp, form_browser)
    back = form_browser.get(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/logout?client_id={SANDBOX_CLIENT_ID}"
                       f"&post_logout_redirect_uri=http://127.0.0.1:8765/signed-out&state=s1")
    assert back.status_code == 302
    loc = urlsplit(back.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == "http://127.0.0.1:8765/signed-out"
    assert parse_qs(loc.query)["state"] == ["s1"]
    r = form_browser.get(_authorize_url(sp.url, prompt="none"))
    assert _query(r.headers["location"])["error"] == "login_required"
    # an unregistered one is not followed
    bad = form_browser.get(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/logout?client_id={SANDBOX_CLIENT_ID}"
                      "&post_logout_redirect_uri=https://evil.example/")
    assert bad.status_code == 400 and "location" not in bad.headers and "AADSTS50011" in bad.text


def test_prompt_consent_with_a_session_asks_for_consent_not_the_password(sp: SandboxProc,
                                                                          form_browser: Browser) -> None:
    _sign_in(sp, form_browser)
    page = form_browser.get(_authorize_url(sp.url, prompt="consent", ui_locales="de"))
    assert page.status_code == 200 and 'name="passwd"' not in page.text and "User.Read" in page.text
    done = form_browser.submit(page, button="accept")
    assert done.status_code == 302
    assert _redeem_user(sp, _query(done.headers["location"])["code"]) == SANDBOX_DEFAULT_UPN
