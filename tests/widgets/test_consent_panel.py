"""The »Administratorzustimmung« panel: a checkbox for the organisation and one per account; ticking one
hands out a consent link (new tab) and the panel shows the answer by itself, from the store.

The answer is written the way crmkit's redirect handler writes it (crmkit.auth.consent.answer_consent with
the redirect's query); the panel is never told, it watches the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from crmkit.auth import Microsoft365
from crmkit.auth.consent import answer_consent
from crmkit.crm import CRM
from crmkit.errors import PermissionDenied
from crmkit.widgets.campaign_account import AdminConsentPanel

pytestmark = pytest.mark.widgets

REDIRECT = "http://localhost:8866/crmkit/consent"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))
    # What crmkit's Voila server tells its kernels.
    monkeypatch.setenv("CRMKIT_CONSENT_REDIRECT_URI", REDIRECT)


def _until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def _href(html_value: str) -> str:
    return html_value.split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")


@pytest.fixture
def panel(crm: CRM) -> AdminConsentPanel:
    p = AdminConsentPanel(m365=Microsoft365(crm), lang="de")
    p.poll_interval = 0.1
    yield p
    p.close()


def test_ticking_the_organisation_box_links_to_the_consent_page_with_crmkits_redirect(
        panel: AdminConsentPanel) -> None:
    org = panel.organization
    assert not org.checkbox.value and org.link.value == "" and org.checkbox.description.startswith("Alle Konten")
    assert panel.paste_box.layout.display == "none"  # crmkit receives the answer: nothing to paste
    org.checkbox.value = True
    link = _href(org.link.value)
    assert 'target="_blank"' in org.link.value and "neuer Tab" in org.link.value
    query = parse_qs(urlsplit(link).query)
    assert query["redirect_uri"] == [REDIRECT] and len(query["state"][0]) >= 43
    assert "Warte auf die Zustimmung" in org.status.value


def test_the_panel_shows_the_granted_state_by_itself(panel: AdminConsentPanel, crm: CRM) -> None:
    org = panel.organization
    org.checkbox.value = True
    state = parse_qs(urlsplit(_href(org.link.value)).query)["state"][0]
    assert panel._watcher is not None and panel._watcher.is_alive()
    # The redirect handler (another thread here, the Voila server in real life) records the answer.
    answer = answer_consent(crm.store, {"admin_consent": "True", "tenant": "t", "state": state},
                            config=panel.m365.config)
    assert answer.outcome == "granted"
    assert _until(lambda: "erteilt" in org.status.value), org.status.value
    assert org.checkbox.value is True and org.checkbox.disabled and org.link.value == ""
    assert "erteilt" in panel.states.value
    assert _until(lambda: not panel._watcher.is_alive())  # nothing left to watch: the thread ends


def test_one_accounts_box_and_a_declined_answer(panel: AdminConsentPanel, crm: CRM) -> None:
    row = panel.add("Eva@Contoso.example")
    assert row is not None and row.checkbox.description == "eva@contoso.example"
    row.checkbox.value = True
    q = parse_qs(urlsplit(_href(row.link.value)).query)
    assert q["login_hint"] == ["eva@contoso.example"] and q["prompt"] == ["consent"]
    assert q["code_challenge_method"] == ["S256"] and q["redirect_uri"] == [REDIRECT]
    answer_consent(crm.store, {"error": "access_denied", "error_description": "AADSTS65004", "state": q["state"][0]},
                   config=panel.m365.config)
    assert _until(lambda: "abgelehnt" in row.status.value), row.status.value
    assert row.checkbox.value is False and not row.checkbox.disabled  # may be ticked again


def test_unticking_cancels_the_link_and_closing_stops_the_watch(panel: AdminConsentPanel, crm: CRM) -> None:
    org = panel.organization
    org.checkbox.value = True
    state = parse_qs(urlsplit(_href(org.link.value)).query)["state"][0]
    org.checkbox.value = False
    assert org.link.value == ""
    late = answer_consent(crm.store, {"admin_consent": "True", "state": state}, config=panel.m365.config)
    assert late.outcome == "cancelled" and panel.m365.consent_states().empty
    org.checkbox.value = True
    watcher = panel._watcher
    assert watcher is not None and watcher.is_alive()
    panel.close()
    assert _until(lambda: not watcher.is_alive(), 3)


def test_accounts_known_to_crmkit_are_listed(crm: CRM) -> None:
    from crmkit.auth.consent import record_consent

    m365 = Microsoft365(crm)
    crm.store.write(lambda tx: record_consent(tx, m365.config, scope="account:kim@contoso.example", state="granted",
                                              by="admin"))
    panel = AdminConsentPanel(m365=m365, lang="en")
    try:
        row = panel.rows["kim@contoso.example"]
        assert row.checkbox.value is True and "granted" in row.status.value
    finally:
        panel.close()


def test_without_teams_admin_every_box_is_disabled_and_the_core_refuses(crm: CRM) -> None:
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    panel = AdminConsentPanel(m365=Microsoft365(CRM(crm.store, "anna")), lang="de")
    try:
        assert panel.organization.checkbox.disabled and panel.add_account.disabled
        assert "Microsoft Teams-Verwalter" in (panel.organization.checkbox.tooltip or "")
        assert panel.start(panel.organization) is None  # a forged tick
        assert isinstance(panel.error.exc, PermissionDenied)
        assert crm.store.one("SELECT count(*) FROM consent_requests") == 0
        assert panel.organization.checkbox.value is False
    finally:
        panel.close()
