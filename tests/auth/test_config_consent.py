"""Configuration resolution, the secrets folder, consent links in Microsoft's format, error mapping."""

from __future__ import annotations

import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import crmkit
from crmkit.auth import (
    account_consent_url,
    admin_consent_url,
    auth_error,
    classic_admin_consent_url,
    parse_consent_redirect,
)
from crmkit.auth._cache import _private_file
from crmkit.auth._errors import SignInRequired
from crmkit.config import TeamsConfig, crmkit_home
from crmkit.errors import (
    AuthError,
    ConfigError,
    ConsentRequired,
    InvalidCredentials,
    MfaRequired,
    PersonalAccountRefused,
    SignInCancelled,
    ValidationError,
)
from crmkit.sandbox import LOGIN_HOST, SANDBOX_CLIENT_ID, SANDBOX_TENANT_ID

pytestmark = pytest.mark.core

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def real(home: Path) -> TeamsConfig:
    return TeamsConfig(tenant_id=TENANT, client_id=CLIENT, home=home)


def test_no_tenant_means_the_sandbox(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TeamsConfig.resolve()
    assert cfg.sandbox and cfg.sandbox_url == "http://127.0.0.1:8765"
    assert (cfg.tenant_id, cfg.client_id, cfg.authority_host) == (SANDBOX_TENANT_ID, SANDBOX_CLIENT_ID, LOGIN_HOST)
    monkeypatch.setenv("CRMKIT_SANDBOX_URL", "http://127.0.0.1:9999/")
    assert TeamsConfig.resolve().sandbox_url == "http://127.0.0.1:9999"


def test_environment_then_settings(home: Path, monkeypatch: pytest.MonkeyPatch, crm: crmkit.CRM) -> None:
    monkeypatch.setenv("CRMKIT_TENANT_ID", TENANT)
    monkeypatch.setenv("CRMKIT_CLIENT_ID", CLIENT)
    cfg = TeamsConfig.resolve(crm)
    assert not cfg.sandbox and cfg.authority == f"https://login.microsoftonline.com/{TENANT}"
    assert cfg.graph_url == "https://graph.microsoft.com/v1.0"
    assert cfg.graph_scopes[0] == "https://graph.microsoft.com/User.Read"
    crm.set_setting("teams.tenant_id", "contoso.onmicrosoft.com")
    crm.set_setting("teams.client_id", "abc")
    crm.set_setting("teams.authority_host", "login.microsoftonline.us")
    crm.set_setting("teams.graph_url", "https://graph.microsoft.us/v1.0/")
    cfg = TeamsConfig.resolve(crm)  # settings win over the environment
    assert (cfg.tenant_id, cfg.client_id) == ("contoso.onmicrosoft.com", "abc")
    assert cfg.authority == "https://login.microsoftonline.us/contoso.onmicrosoft.com"
    assert cfg.graph_resource == "https://graph.microsoft.us"


def test_bad_configuration_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_TENANT_ID", TENANT)
    with pytest.raises(ConfigError, match="client id"):
        TeamsConfig.resolve()
    with pytest.raises(ConfigError, match="personal"):
        TeamsConfig(tenant_id="common", client_id=CLIENT, home=home)
    with pytest.raises(ConfigError, match="https"):
        TeamsConfig(tenant_id=TENANT, client_id=CLIENT, graph_url="http://x/v1.0", home=home)


def test_home_is_private(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert crmkit_home({"CRMKIT_HOME": str(loose)}) == loose
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    fresh = crmkit_home({"CRMKIT_HOME": str(tmp_path / "a" / "b")})
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_cache_file_mode_is_tightened(tmp_path: Path) -> None:
    existing = tmp_path / "c" / "cache.json"
    existing.parent.mkdir(mode=0o755)
    existing.write_text("{}")
    existing.chmod(0o644)
    _private_file(existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert stat.S_IMODE(existing.parent.stat().st_mode) == 0o700


def test_admin_consent_link_matches_microsofts_format(home: Path) -> None:
    url = admin_consent_url(real(home), state="s1")
    assert url.startswith(f"https://login.microsoftonline.com/{TENANT}/v2.0/adminconsent?client_id={CLIENT}&scope=")
    parts = urlsplit(url)
    q = parse_qs(parts.query)
    assert list(q) == ["client_id", "scope", "redirect_uri", "state"]
    assert q["scope"] == ["https://graph.microsoft.com/User.Read https://graph.microsoft.com/User.ReadBasic.All "
                          "https://graph.microsoft.com/Chat.Create https://graph.microsoft.com/ChatMessage.Send "
                          "https://graph.microsoft.com/Chat.Read https://graph.microsoft.com/Team.ReadBasic.All "
                          "https://graph.microsoft.com/Channel.ReadBasic.All "
                          "https://graph.microsoft.com/ChannelMember.Read.All "
                          "https://graph.microsoft.com/ChannelMessage.Send "
                          "https://graph.microsoft.com/ChannelMessage.Read.All "
                          "https://graph.microsoft.com/Files.ReadWrite"]
    assert q["redirect_uri"] == ["https://login.microsoftonline.com/common/oauth2/nativeclient"]
    assert q["state"] == ["s1"]
    assert "%20" in url and "+" not in url  # spaces percent-encoded, as Microsoft's samples show
    assert classic_admin_consent_url(real(home)) == f"https://login.microsoftonline.com/{TENANT}/adminconsent?client_id={CLIENT}"
    one = urlsplit(account_consent_url(real(home), "anna@contoso.com"))
    assert one.path == f"/{TENANT}/oauth2/v2.0/authorize"
    oq = parse_qs(one.query)
    assert oq["prompt"] == ["consent"] and oq["login_hint"] == ["anna@contoso.com"]
    assert oq["client_id"] == [CLIENT] and "offline_access" in oq["scope"][0]


def test_sandbox_consent_link_opens_in_a_browser(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_SANDBOX_URL", "http://127.0.0.1:8765")
    url = admin_consent_url(TeamsConfig.resolve())
    assert url.startswith(f"http://127.0.0.1:8765/{SANDBOX_TENANT_ID}/v2.0/adminconsent?client_id=")


def test_parse_consent_redirect() -> None:
    ok = parse_consent_redirect("https://x/nativeclient?admin_consent=True&tenant=t1&scope=a%20b&state=s")
    assert ok.granted and ok.tenant == "t1" and ok.state == "s"
    no = parse_consent_redirect("https://x/?admin_consent=True&error=consent_required&error_description="
                                "AADSTS65004%3A+User+declined&state=s")
    assert not no.granted and no.error == "consent_required" and "65004" in (no.description or "")
    with pytest.raises(ValidationError):
        parse_consent_redirect("https://example.test/somewhere")


def test_record_redirect_needs_teams_admin(home: Path, crm: crmkit.CRM) -> None:
    from crmkit.auth.consent import record_redirect

    crm.add_user("sara", "Sara", roles=["sales"])
    sara = crmkit.CRM(crm.store, "sara")
    cfg = real(home)
    with pytest.raises(crmkit.errors.PermissionDenied):
        record_redirect(sara, cfg, "https://x/?admin_consent=True&tenant=t")
    record_redirect(crm, cfg, "https://x/?admin_consent=True&tenant=t")
    from crmkit.auth.consent import consent_states

    assert consent_states(crm, cfg).iloc[0]["state"] == "granted"


@pytest.mark.parametrize(
    ("result", "cls"),
    [
        ({"error": "invalid_grant", "error_description": "AADSTS50126: Error validating credentials."},
         InvalidCredentials),
        ({"error": "invalid_grant", "error_codes": [50076], "suberror": "basic_action"}, MfaRequired),
        ({"error": "invalid_grant", "error_codes": [50079]}, MfaRequired),
        ({"error": "invalid_grant", "error_codes": [65001], "suberror": "consent_required"}, ConsentRequired),
        ({"error": "invalid_grant", "error_codes": [50020]}, PersonalAccountRefused),
        ({"error": "authorization_declined", "error_codes": [70000]}, SignInCancelled),
        ({"error": "expired_token", "error_codes": [70020]}, SignInCancelled),
        ({"error": "invalid_grant", "error_codes": [700082]}, SignInRequired),
        ({"error": "invalid_grant", "error_codes": [50057]}, AuthError),
        ({"error": "weird"}, AuthError),
    ],
)
def test_msal_errors_become_typed(result: dict, cls: type) -> None:
    err = auth_error(result, consent_url=lambda: "https://link")
    assert type(err) is cls
    if cls is ConsentRequired:
        assert err.consent_url == "https://link" and "https://link" in str(err)
    assert "Trace ID" not in str(err)
