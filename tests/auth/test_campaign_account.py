"""The campaign sender account: password mode, once-signed-in mode, and Test… with each outcome."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msal
import pytest
from support.sandbox import forget_msal

import crmkit
from crmkit.auth import Microsoft365
from crmkit.errors import PermissionDenied, ValidationError
from crmkit.sandbox import (
    SANDBOX_ADMIN_UPN,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_MFA_UPN,
    SANDBOX_PASSWORD,
    SANDBOX_PERSONAL_ACCOUNT,
    SANDBOX_UNCONSENTED_CLIENT_ID,
)
from crmkit.voila_launch import free_port

pytestmark = pytest.mark.sandbox


def as_user(crm: crmkit.CRM, name: str) -> Microsoft365:
    return Microsoft365(crmkit.open(crm.store.path, user=name))


def test_password_mode_test_succeeds_and_password_is_not_stored_in_clear(m365: Microsoft365, crm_file) -> None:
    carl = as_user(crm_file, "carl")  # campaign.admin
    info = carl.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
    assert (info.mode, info.username, info.has_password) == ("password", SANDBOX_DEFAULT_UPN, True)
    assert SANDBOX_PASSWORD not in repr(info) and SANDBOX_PASSWORD not in repr(carl.campaign)
    result = carl.campaign.test()
    assert result.ok and result.reason == "ok", result
    assert result.username == SANDBOX_DEFAULT_UPN and "Anna" in result.message
    info = carl.campaign.info()
    assert info.last_test_ok is True and info.home_account_id
    # sending later uses the cached token; nobody needs the right for that
    sara = as_user(crm_file, "sara")
    with sara.campaign.graph() as graph:
        assert graph.me()["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    carl.close()
    sara.close()
    raw = b"".join(p.read_bytes() for p in Path(crm_file.store.path).parent.glob("crm.duckdb*"))
    assert SANDBOX_PASSWORD.encode() not in raw
    key = Path(os.environ["CRMKIT_HOME"]) / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() not in raw


@pytest.mark.parametrize(
    ("username", "password", "reason", "needle"),
    [
        (SANDBOX_DEFAULT_UPN, "wrong-Pass-9", "invalid_credentials", "Wrong user name or password"),
        (SANDBOX_MFA_UPN, SANDBOX_PASSWORD, "mfa_required", "multi-factor"),
        (SANDBOX_PERSONAL_ACCOUNT, SANDBOX_PASSWORD, "personal_account", "personal Microsoft account"),
    ],
)
def test_test_reports_the_precise_reason(m365: Microsoft365, username: str, password: str, reason: str,
                                         needle: str) -> None:
    m365.campaign.set_password(username, password)
    result = m365.campaign.test()
    assert (result.ok, result.reason) == (False, reason), result
    assert needle in result.message
    info = m365.campaign.info()
    assert info.last_test_ok is False and needle in info.last_test_detail


def test_missing_consent_carries_the_link_and_admin_consent_fixes_it(
    crm_tenant, crm_file, form_browser, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMKIT_CLIENT_ID", SANDBOX_UNCONSENTED_CLIENT_ID)
    m365 = Microsoft365(crm_file)
    try:
        m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        result = m365.campaign.test()
        assert (result.ok, result.reason) == (False, "consent_required")
        assert "AADSTS65001" in result.message and result.consent_url in result.message
        assert f"/v2.0/adminconsent?client_id={SANDBOX_UNCONSENTED_CLIENT_ID}&" in result.consent_url
        states = m365.consent_states().set_index("scope")["state"]
        assert states["organization"] == "required"
        # The admin opens the link, signs in and accepts; the browser lands on the redirect URI.
        page = form_browser.get(result.consent_url)
        assert page.status_code == 200, page.text[:300]
        done = form_browser.sign_in(page, SANDBOX_ADMIN_UPN, button="accept")
        assert done.status_code == 302
        landed = done.headers["location"]
        consent = m365.record_consent_redirect(landed)
        assert consent.granted and consent.tenant
        assert m365.consent_states().set_index("scope")["state"]["organization"] == "granted"
        # Test… right after consent works (no replay of the earlier failure)
        assert m365.campaign.test().ok
    finally:
        m365.close()




def test_signed_in_once_mode(m365: Microsoft365, form_browser, crm_file) -> None:
    sign_in = m365.campaign.start_sign_in()
    form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_ADMIN_UPN)
    info = sign_in.wait(30)
    assert (info.mode, info.username, info.has_password) == ("signed_in", SANDBOX_ADMIN_UPN, False)
    assert m365.campaign.test().ok
    # a new process: fresh cache objects and MSAL apps; the refresh token on disk is enough
    forget_msal()
    again = Microsoft365(crmkit.open(crm_file.store.path, user="tina"))
    try:
        result = again.campaign.test()
        assert result.ok, result
        assert again.campaign.cache_file.encrypted is False
        assert stat.S_IMODE(again.campaign.cache_file.path.stat().st_mode) == 0o600
    finally:
        again.close()


def test_replacing_or_clearing_needs_no_identity_platform(m365: Microsoft365, form_browser, crm_file,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sign_in = m365.campaign.start_sign_in()
    form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_ADMIN_UPN)
    sign_in.wait(30)
    cache = m365.campaign._cache()[0]
    kinds = msal.TokenCache.CredentialType
    assert list(cache.search(kinds.REFRESH_TOKEN)) and list(cache.search(kinds.ACCOUNT))
    # the identity platform is gone (a closed loopback port); a new process opens the CRM
    monkeypatch.setenv("CRMKIT_SANDBOX_URL", f"http://127.0.0.1:{free_port()}")
    forget_msal()
    offline = Microsoft365(crmkit.open(crm_file.store.path, user="tina"))
    try:
        info = offline.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        assert (info.mode, info.username) == ("password", SANDBOX_DEFAULT_UPN)
        cache = offline.campaign._cache()[0]
        for kind in (kinds.ACCESS_TOKEN, kinds.REFRESH_TOKEN, kinds.ID_TOKEN, kinds.ACCOUNT):
            assert not list(cache.search(kind)), kind  # the signed-in account's tokens are gone
        offline.campaign.clear()
        assert offline.campaign.info() is None
    finally:
        offline.close()


def test_rights_and_validation(m365: Microsoft365, crm_file) -> None:
    sara = as_user(crm_file, "sara")
    tina = as_user(crm_file, "tina")
    try:
        with pytest.raises(PermissionDenied, match=r"campaign\.admin, teams\.admin"):
            sara.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        with pytest.raises(PermissionDenied):
            sara.campaign.test()
        with pytest.raises(PermissionDenied):
            sara.campaign.start_sign_in()
        with pytest.raises(ValidationError, match="spaces"):
            tina.campaign.set_password(SANDBOX_DEFAULT_UPN, " padded ")
        with pytest.raises(ValidationError):
            tina.campaign.set_password("no-at-sign", "x")
        assert tina.campaign.test().reason == "not_configured"
        tina.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        tina.campaign.clear()
        assert tina.campaign.info() is None
        audit = crm_file.audit_log(scope="teams")
        assert SANDBOX_PASSWORD not in audit.to_string()
        assert '"(set)"' in " ".join(audit["new_value"].dropna())
    finally:
        sara.close()
        tina.close()


def test_password_from_another_machine_needs_re_entry(m365: Microsoft365, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
    (Path(os.environ["CRMKIT_HOME"]) / "secret.key").unlink()
    result = m365.campaign.test()
    assert result.reason == "config" and "enter the password again" in result.message
