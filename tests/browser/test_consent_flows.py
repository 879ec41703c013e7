"""Issue 13, item 4 in a real browser, German and English: the settings dashboard's consent flows end to end.

A sandbox tenant (real subprocess) where crmkit's app is NOT consented, a CRM file of the test's own, and
Voila over ``dashboards/`` with the committed config. As the CRM admin: tick »Alle Konten unternehmensweit
freigeben«, open the link (a new tab with the sandbox's admin-consent page), sign in as the tenant's global
admin and accept; the tab lands on crmkit's own page (``/crmkit/consent`` on the Voila server), and the
dashboard tab shows »erteilt« by itself. Then the same for one account (»Administratorzustimmung« per
account): the authorize page with prompt=consent, signed in as that account.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import forms
from support.sandbox import SandboxAdmin, SandboxProc

import crmkit
from crmkit.auth.consent import ORGANIZATION, start_consent_request
from crmkit.config import TeamsConfig
from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN
from crmkit.voila_launch import dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
BY_ITSELF = 20_000  # ms; the panel reads the store about once a second

WORDS = {
    "de": {"tab": "Administratorzustimmung", "org": "Alle Konten unternehmensweit freigeben", "granted": "erteilt",
           "close": "Tab jetzt schließen", "add": "Konto hinzufügen", "page_granted": "ist erteilt"},
    "en": {"tab": "Admin consent", "org": "Approve all accounts company-wide", "granted": "granted",
           "close": "close this tab", "add": "Add account", "page_granted": "is granted"},
}


@pytest.fixture(scope="module", params=["de", "en"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, output_dir: Path,
         chromium: Path) -> Iterator[dict[str, Any]]:
    lang = request.param
    base = tmp_path_factory.mktemp(f"consent-{lang}")
    sandbox = SandboxProc(base / "state", base / "sandbox.log")
    admin = SandboxAdmin(sandbox.url)
    proc = None
    try:
        admin.put("consent", {"client_id": SANDBOX_CLIENT_ID, "admin_consented": False})
        db = base / "crm.duckdb"
        crm = crmkit.open(db)
        crm.set_user_setting("language", lang)
        crm.store.close()
        env = {"CRMKIT_DB": str(db), "CRMKIT_USER": "admin", "CRMKIT_HOME": str(base / "home"),
               "CRMKIT_SANDBOX_URL": sandbox.url}
        port = free_port()
        with (output_dir / f"voila-consent-{lang}.log").open("wb") as log:
            proc = start_voila(port, env, log=log)
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield {"lang": lang, "port": port, "db": db, "sandbox": admin, "env": env}
    finally:
        if proc is not None:
            stop_voila(proc)
        admin.close()
        sandbox.stop()


def _open_consent_tab(page: Any, site: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(site["port"], "settings.ipynb"), wait_until="commit")
    tab = page.get_by_role("tab", name=WORDS[site["lang"]]["tab"])
    tab.wait_for(state="visible", timeout=WIDGETS_UP)
    tab.click()
    expect(page.locator(".crmkit-admin-consent")).to_be_visible(timeout=30_000)


def _follow_link(page: Any, row: Any) -> Any:
    """Click the row's consent link; the page it opens in a new tab."""
    link = row.locator("a.crmkit-consent-link")
    link.wait_for(state="visible", timeout=30_000)
    assert link.get_attribute("target") == "_blank"
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    return tab


def _lands_on_crmkit(tab: Any, site: dict[str, Any], output_dir: Path, name: str) -> None:
    from playwright.sync_api import expect

    words = WORDS[site["lang"]]
    outcome = tab.locator(".crmkit-consent-outcome")
    expect(outcome).to_contain_text(words["page_granted"], timeout=30_000)
    assert tab.url.startswith(f"http://localhost:{site['port']}/crmkit/consent?")
    body = tab.locator("body").inner_text()
    assert words["close"] in body
    assert "state" not in body and "code" not in body.lower().split() and "{" not in body  # no raw query or JSON
    assert tab.locator("html").get_attribute("lang") == site["lang"]
    tab.screenshot(path=str(output_dir / f"consent-{site['lang']}-{name}-landed.png"), full_page=True)
    tab.close()


def test_organisation_consent_from_the_dashboard(page: Any, site: dict[str, Any], output_dir: Path) -> None:
    from playwright.sync_api import expect

    words = WORDS[site["lang"]]
    _open_consent_tab(page, site)
    org = page.locator(".crmkit-consent-org")
    expect(org).to_contain_text(words["org"])
    org.locator("input[type=checkbox]").check()
    tab = _follow_link(page, org)
    # The sandbox's admin-consent page: the tenant's global admin signs in and accepts.
    assert "/v2.0/adminconsent?" in tab.url
    forms.fill_sign_in(tab, SANDBOX_ADMIN_UPN, button="accept")
    _lands_on_crmkit(tab, site, output_dir, "org")
    # Back on the dashboard, nothing clicked: the panel shows the new state by itself.
    expect(org.locator(".crmkit-consent-status")).to_contain_text(words["granted"], timeout=BY_ITSELF)
    expect(org.locator("input[type=checkbox]")).to_be_checked()
    page.screenshot(path=str(output_dir / f"consent-{site['lang']}-org-dashboard.png"), full_page=True)

    # One account: the authorize page with prompt=consent, signed in as that account.
    panel = page.locator(".crmkit-admin-consent")
    panel.locator("input[type=text]").first.fill(SANDBOX_DEFAULT_UPN)
    page.get_by_role("button", name=words["add"]).click()
    row = page.locator(".crmkit-consent-account", has_text=SANDBOX_DEFAULT_UPN.lower())
    expect(row).to_be_visible(timeout=30_000)
    row.locator("input[type=checkbox]").check()
    tab = _follow_link(page, row)
    assert "/oauth2/v2.0/authorize?" in tab.url and "prompt=consent" in tab.url
    expect(tab.locator("#login")).to_have_value(SANDBOX_DEFAULT_UPN)  # login_hint
    forms.fill_sign_in(tab, None)
    tab.locator("button[value=accept]").click()  # the consent page prompt=consent forces
    _lands_on_crmkit(tab, site, output_dir, "account")
    expect(row.locator(".crmkit-consent-status")).to_contain_text(words["granted"], timeout=BY_ITSELF)
    expect(row.locator("input[type=checkbox]")).to_be_checked()
    page.screenshot(path=str(output_dir / f"consent-{site['lang']}-account-dashboard.png"), full_page=True)
    page.close()  # let the kernel go before this process opens the file

    crm = crmkit.open(site["db"])
    try:
        rows = crm.store.read(lambda tx: tx.rows(
            "SELECT scope, state, learned_by FROM consent_state ORDER BY scope"))
        assert rows == [(f"account:{SANDBOX_DEFAULT_UPN.lower()}", "granted", "admin"),
                        ("organization", "granted", "admin")]
        answered = crm.store.read(lambda tx: tx.rows("SELECT outcome FROM consent_requests ORDER BY outcome"))
        assert answered == [("granted",), ("granted",)]
    finally:
        crm.store.close()


def test_crmkits_consent_page_refuses_unknown_and_expired_links(site: dict[str, Any]) -> None:
    """The redirect URI's page for a link crmkit did not hand out, or one past its time: a 400 page in the
    user's language saying nothing was recorded; the query (a code, the state) is never echoed."""
    lang, words = site["lang"], {"de": ("kennt diesen", "abgelaufen"), "en": ("does not know", "expired")}[site["lang"]]
    url = f"http://localhost:{site['port']}/crmkit/consent"
    with httpx.Client(timeout=30, trust_env=False) as http:
        unknown = http.get(url, params={"code": "SECRET-CODE-1", "state": "made-up-state"},
                           headers={"Accept-Language": f"{lang};q=0.9"})
        assert unknown.status_code == 400 and unknown.headers["cache-control"] == "no-store"
        assert words[0] in unknown.text and "SECRET-CODE-1" not in unknown.text and "made-up-state" not in unknown.text
        with pytest.MonkeyPatch.context() as mp:
            for key, value in site["env"].items():
                mp.setenv(key, value)
            crm = crmkit.open(site["db"])
            try:
                old = start_consent_request(crm, TeamsConfig.resolve(crm), ORGANIZATION, redirect_uri=url,
                                            ttl=timedelta(seconds=-1))
                before = crm.store.read(lambda tx: tx.rows("SELECT * FROM consent_state ORDER BY ALL"))
            finally:
                crm.store.close()
        state = old.url.split("state=", 1)[1]
        expired = http.get(f"{url}?admin_consent=True&tenant=t&state={state}")  # no language hint: the request's
        assert expired.status_code == 400 and words[1] in expired.text and state not in expired.text
        assert f'lang="{lang}"' in expired.text
    crm = crmkit.open(site["db"])
    try:
        assert crm.store.read(lambda tx: tx.rows("SELECT * FROM consent_state ORDER BY ALL")) == before
    finally:
        crm.store.close()
