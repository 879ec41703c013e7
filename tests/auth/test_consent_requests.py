"""Consent links crmkit can tell apart: a state recorded hashed, answered once, before its expiry, by
whoever asked; the per-account answer proven by the id_token of a redeemed code (real sandbox subprocess).

The sandbox's consent pages are driven with plain form posts, as a browser submits them; the redirect
they send back (302 to crmkit's redirect URI) is read from the Location header and handed to the core
exactly as crmkit's redirect handler does.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from support.sandbox import Browser, SandboxAdmin, colleagues

import crmkit
from crmkit.auth import Microsoft365
from crmkit.auth.consent import (
    ORGANIZATION,
    answer_consent,
    consent_request_status,
    record_redirect,
    start_consent_request,
)
from crmkit.errors import PermissionDenied, ValidationError
from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD

pytestmark = pytest.mark.sandbox

REDIRECT = "http://localhost:8866/crmkit/consent"


def _state(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def _query(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text[:400]
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _org_consent(url: str, upn: str = SANDBOX_ADMIN_UPN) -> dict[str, str]:
    """The sandbox's admin-consent page: sign in as a global admin and accept; the redirect's query."""
    browser = Browser()
    try:
        page = browser.get(url)
        assert page.status_code == 200, page.text[:400]
        return _query(browser.sign_in(page, upn, button="accept"))
    finally:
        browser.close()


def _account_consent(url: str, upn: str) -> dict[str, str]:
    """The authorize page with prompt=consent: sign in as ``upn``, accept; the redirect's query (code, state)."""
    browser = Browser()
    try:
        page = browser.get(url)
        assert page.status_code == 200, page.text[:400]
        consent = browser.sign_in(page, upn)
        assert consent.status_code == 200, consent.text[:400]
        return _query(browser.submit(consent, button="accept"))
    finally:
        browser.close()


def _rows(crm: crmkit.CRM, table: str) -> list[tuple[object, ...]]:
    return crm.store.read(lambda tx: tx.rows(f"SELECT * FROM {table} ORDER BY ALL"))  # fixed table names


@pytest.fixture
def unconsented(crm_tenant: SandboxAdmin) -> SandboxAdmin:
    """The sandbox with crmkit's app not consented organisation-wide: the consent pages are real."""
    crm_tenant.put("consent", {"client_id": SANDBOX_CLIENT_ID, "admin_consented": False})
    return crm_tenant


def test_the_state_is_kept_only_as_its_hash(m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    crm = m365.crm
    request = start_consent_request(crm, m365.config, ORGANIZATION, redirect_uri=REDIRECT)
    state = _state(request.url)
    assert len(state) >= 43  # 256 random bits
    assert parse_qs(urlsplit(request.url).query)["redirect_uri"] == [REDIRECT]
    rows = _rows(crm, "consent_requests")
    assert len(rows) == 1
    assert rows[0][0] == hashlib.sha256(state.encode()).hexdigest() == request.state_hash
    assert state not in repr(rows) and state not in repr(request)
    assert consent_request_status(crm, request) == "pending"


def test_organisation_consent_is_recorded_once_as_the_requesting_admin(
        m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    crm = m365.crm
    request = start_consent_request(crm, m365.config, ORGANIZATION, redirect_uri=REDIRECT, lang="en")
    query = _org_consent(request.url)
    assert query["admin_consent"] == "True" and query["state"] == _state(request.url)

    answer = answer_consent(crm.store, query, config=m365.config)
    assert (answer.outcome, answer.scope, answer.lang, answer.recorded) == ("granted", ORGANIZATION, "en", True)
    states = m365.consent_states()
    assert states[["scope", "state", "learned_by"]].values.tolist() == [[ORGANIZATION, "granted", "admin"]]
    audit = crm.audit_log(scope="teams")
    assert audit[["user_name", "key", "new_value"]].values.tolist() == [["admin", "consent.organization", '"granted"']]
    assert consent_request_status(crm, request) == "granted"

    before = (_rows(crm, "consent_state"), _rows(crm, "consent_requests"), _rows(crm, "audit"))
    again = answer_consent(crm.store, query, config=m365.config)
    assert (again.outcome, again.recorded) == ("used", False)
    assert (_rows(crm, "consent_state"), _rows(crm, "consent_requests"), _rows(crm, "audit")) == before


def test_a_declined_consent_is_recorded_as_declined(m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    request = start_consent_request(m365.crm, m365.config, ORGANIZATION, redirect_uri=REDIRECT)
    browser = Browser()
    try:
        query = _query(browser.submit(browser.get(request.url), button="cancel"))
    finally:
        browser.close()
    assert query["error"] == "consent_required"
    assert answer_consent(m365.crm.store, query, config=m365.config).outcome == "declined"
    assert m365.consent_states()["state"].tolist() == ["declined"]


def test_unknown_expired_and_another_users_answers_write_nothing(
        m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    crm, config = m365.crm, m365.config
    before = (_rows(crm, "consent_state"), _rows(crm, "audit"))
    # unknown or missing state
    assert answer_consent(crm.store, {"admin_consent": "True", "state": "made-up"}, config=config).outcome == "unknown"
    assert answer_consent(crm.store, {"admin_consent": "True"}, config=config).outcome == "unknown"
    # expired: the consent page was answered, but after the link's time
    old = start_consent_request(crm, config, ORGANIZATION, redirect_uri=REDIRECT, ttl=timedelta(seconds=-1))
    assert answer_consent(crm.store, _org_consent(old.url), config=config).outcome == "expired"
    # another CRM user (a Teams admin too) pastes the admin's answer
    request = start_consent_request(crm, config, ORGANIZATION, redirect_uri=REDIRECT)
    query = _org_consent(request.url)
    tina = crmkit.CRM(crm.store, "tina")
    assert answer_consent(crm.store, query, user="tina", config=config).outcome == "wrong_user"
    url = f"{REDIRECT}?admin_consent=True&tenant={query['tenant']}&state={query['state']}"
    with pytest.raises(ValidationError) as refused:
        record_redirect(tina, config, url)
    assert "anderer crmkit-Benutzer" in refused.value.text("de")
    assert (_rows(crm, "consent_state"), _rows(crm, "audit")) == before
    assert consent_request_status(crm, request) == "pending" and consent_request_status(crm, old) == "expired"
    # the one who asked may still paste it (the fallback goes through the same core)
    record_redirect(crm, config, url)
    assert m365.consent_states()["state"].tolist() == ["granted"]


def test_only_a_teams_admin_hands_out_links_and_a_demoted_admins_link_records_nothing(
        m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    crm, config = m365.crm, m365.config
    sara = crmkit.CRM(crm.store, "sara")
    with pytest.raises(PermissionDenied):
        start_consent_request(sara, config, ORGANIZATION, redirect_uri=REDIRECT)
    assert _rows(crm, "consent_requests") == []
    tina = crmkit.CRM(crm.store, "tina")
    request = start_consent_request(tina, config, ORGANIZATION, redirect_uri=REDIRECT)
    query = _org_consent(request.url)
    crm.set_roles("tina", ["sales"])
    assert answer_consent(crm.store, query, config=config).outcome == "no_rights"
    assert _rows(crm, "consent_state") == []


def test_one_accounts_consent_is_proven_by_the_id_token_and_no_token_is_kept(
        m365: Microsoft365, unconsented: SandboxAdmin, tmp_path: Path) -> None:
    crm, config = m365.crm, m365.config
    request = start_consent_request(crm, config, f"account:{SANDBOX_DEFAULT_UPN}", redirect_uri=REDIRECT)
    q = parse_qs(urlsplit(request.url).query)
    assert q["prompt"] == ["consent"] and q["login_hint"] == [SANDBOX_DEFAULT_UPN]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43 and q["nonce"]
    query = _account_consent(request.url, SANDBOX_DEFAULT_UPN)
    assert query["code"]

    answer = answer_consent(crm.store, query, config=config)
    assert (answer.outcome, answer.account) == ("granted", SANDBOX_DEFAULT_UPN.lower())
    states = m365.consent_states()
    assert states[["scope", "state", "learned_by"]].values.tolist() == [
        [f"account:{SANDBOX_DEFAULT_UPN.lower()}", "granted", "admin"]]
    assert m365.consent_accounts()[["account", "state"]].values.tolist() == [[SANDBOX_DEFAULT_UPN.lower(), "granted"]]
    # Nothing of the redemption stays: no token cache written, neither code nor verifier in the database.
    home = Path(config.home)
    assert sorted(p.name for p in home.iterdir()) == ["secret.key"]
    dump = repr([_rows(crm, t) for t in ("consent_requests", "consent_state", "audit")])
    assert query["code"] not in dump and query["state"] not in dump
    # The code was spent: answering again is refused.
    assert answer_consent(crm.store, query, config=config).outcome == "used"


def test_another_account_signing_in_records_no_consent(m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    crm, config = m365.crm, m365.config
    other = colleagues(unconsented, 1)[0]
    request = start_consent_request(crm, config, f"account:{SANDBOX_DEFAULT_UPN}", redirect_uri=REDIRECT)
    query = _account_consent(request.url, other)
    answer = answer_consent(crm.store, query, config=config)
    assert (answer.outcome, answer.account) == ("wrong_account", other.lower())
    assert _rows(crm, "consent_state") == []
    assert consent_request_status(crm, request) == "wrong_account"  # closed: the dashboard stops waiting


def test_without_the_machine_key_the_code_cannot_be_redeemed(
        m365: Microsoft365, unconsented: SandboxAdmin) -> None:
    """The PKCE verifier is derived from the state with CRMKIT_HOME's key: a copied database alone
    (another machine's key) cannot turn a code into the account's tokens."""
    crm, config = m365.crm, m365.config
    request = start_consent_request(crm, config, f"account:{SANDBOX_DEFAULT_UPN}", redirect_uri=REDIRECT)
    query = _account_consent(request.url, SANDBOX_DEFAULT_UPN)
    (Path(config.home) / "secret.key").unlink()
    assert answer_consent(crm.store, query, config=config).outcome == "failed"
    assert _rows(crm, "consent_state") == []


def test_the_campaign_tests_consent_link_is_one_crmkit_records(
        crm_tenant: SandboxAdmin, crm_file: crmkit.CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    """»Testen…« refused for missing consent shows a consent link; for a Teams admin it is a recorded
    request whose redirect comes back to crmkit, not the bare link with the native-client URI."""
    from crmkit.sandbox import SANDBOX_UNCONSENTED_CLIENT_ID
    from crmkit.widgets.campaign_account import CampaignAccountForm

    monkeypatch.setenv("CRMKIT_CLIENT_ID", SANDBOX_UNCONSENTED_CLIENT_ID)
    monkeypatch.setenv("CRMKIT_CONSENT_REDIRECT_URI", REDIRECT)
    m365 = Microsoft365(crm_file)
    try:
        m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        form = CampaignAccountForm(m365=m365, lang="en")
        assert form.run_test().reason == "consent_required"
        link = form.result.value.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        assert parse_qs(urlsplit(link).query)["redirect_uri"] == [REDIRECT]
        answer = answer_consent(crm_file.store, _org_consent(link), config=m365.config)
        assert answer.outcome == "granted"
        assert m365.consent_states().set_index("scope")["state"][ORGANIZATION] == "granted"
        assert m365.campaign.test().ok
    finally:
        m365.close()
