"""crmkit hub end to end, as a team uses it (issue 16's done-when): tom switches Teams on, anna sends a record with
one sign-in, vera is refused.

One real hub per module (``crmkit hub --db`` against the sandbox over https, tests/hub/support_hub.py) over the
team's demo CRM on the session's PostgreSQL (tests/hub/support_crm.py), Teams off at the start. Each person signs
in at the hub in Chromium with their sandbox password and works in the dashboards of their own server
(``/user/<name>/voila/render/dashboards/...``), in file order:

1. tom (``teams_admin``) ticks »Microsoft Teams-Integration aktivieren« on the settings dashboard's Teams tab: the
   CRM has Teams on and the contact type TS.
2. anna (``sales``) selects a record on the addresses dashboard and sends it via Teams to a colleague — no second
   sign-in (no device code: her server sends with the hub's tokens, crmkit/auth/hub_tokens.py). The message is in
   the sandbox, from her directory account; the transfer log names the CRM user anna and her account.
3. vera (``viewer``) gets the settings dashboard read only — the switch disabled, the page saying she lacks the
   right, a forced click refused by the core with nothing written — and the send action on the addresses
   dashboard disabled with the missing right named.

The people are directory accounts no other hub test signs in (the OS users ``crmkit-<name>`` are the machine's,
shared by hubs running at once): the CRM users tom, anna, vera are linked to them here.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.postgres import PgCluster

from crmkit.i18n import t
from crmkit.rights import right_label
from crmkit.sandbox import SANDBOX_DOMAIN
from crmkit.sandbox.directory import user_id_for
from crmkit.store import Store
from tests.hub import support_crm
from tests.hub.support_hub import RunningHub, hub_context, running_hub, sign_in_to_lab

pytestmark = pytest.mark.hub

TOM_UPN, ANNA_UPN, VERA_UPN = (f"{n}@{SANDBOX_DOMAIN}" for n in ("noah.richter", "felix.schulz", "mia.klein"))
COLLEAGUE = {"upn": f"elias.wolf@{SANDBOX_DOMAIN}", "name": "Elias Wolf"}  # receives; never signs in
WIDGETS_UP = 120_000  # ms: the first kernel of a fresh server on a busy 2-core box
SUBJECT = "Lead aus dem Hub"


def _hub_name(upn: str) -> str:
    return upn.split("@", 1)[0]


def _dashboard(hub: RunningHub, upn: str, notebook: str) -> str:
    return f"{hub.url}/user/{_hub_name(upn)}/voila/render/dashboards/{notebook}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[RunningHub]:
    with support_crm.team_crm_database(pg_cluster, {"tom": TOM_UPN, "anna": ANNA_UPN, "vera": VERA_UPN}) as crm_url:
        with running_hub(tmp_path_factory.mktemp("hub-scenario"), ["--db", crm_url]) as h:
            h.crm_url = crm_url  # type: ignore[attr-defined]  # the owner's, for reading back what happened
            yield h


def _owner_read(hub: RunningHub, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read as the CRM database's owner (what the test checks, not what a person may read)."""
    store = Store(hub.crm_url)  # type: ignore[attr-defined]
    try:
        return [tuple(r) for r in store.read(lambda tx: tx.rows(sql))]
    finally:
        store.close()


def _sandbox(hub: RunningHub) -> httpx.Client:
    return httpx.Client(base_url=hub.sandbox_url, verify=ssl.create_default_context(cafile=hub.ca_file), timeout=30)


def _device_code_requests(hub: RunningHub) -> int:
    with _sandbox(hub) as sb:
        return sum(n for k, n in sb.get("/_sandbox/counters").json().items() if "devicecode" in k.lower())


def _missing(right: str) -> str:
    return t("rights.missing", "de", label=right_label(right, "de"), right=right)


def _end_kernels(context: Any, hub: RunningHub, upn: str) -> None:
    """End the kernels of the person's server (its REST API, as Lab would): a dashboard's kernel still ending when
    the hub stops would outlive it, which support_hub fails the module for. Whether a page's kernel ends on its
    own is tests/hub/test_hub_voila.py's matter."""
    base = f"{hub.url}/user/{_hub_name(upn)}/api/kernels"
    xsrf = next(c["value"] for c in context.cookies() if c["name"] == "_xsrf")
    r = context.request.get(base)
    assert r.status == 200, r.status
    for kernel in r.json():
        gone = context.request.delete(f"{base}/{kernel['id']}", headers={"X-XSRFToken": xsrf})
        assert gone.status in (204, 404), gone.status  # 404: it ended meanwhile


@pytest.fixture
def signed_in(hub: RunningHub, browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Chromium context signed in at the hub as the UPN the test names (indirect parametrize), server running."""
    upn = request.param
    with hub_context(browser) as ctx:
        took = sign_in_to_lab(ctx, hub, upn)
        print(f"{_hub_name(upn)}: password submitted -> JupyterLab {took:.1f} s")
        yield ctx


@pytest.mark.parametrize("signed_in", [TOM_UPN], indirect=True)
def test_tom_switches_teams_on_in_the_settings_dashboard_through_the_hub(hub: RunningHub, signed_in: Any) -> None:
    from playwright.sync_api import expect

    assert _owner_read(hub, "SELECT code FROM contact_types WHERE code = 'TS'") == []
    page = signed_in.new_page()
    page.goto(_dashboard(hub, TOM_UPN, "settings.ipynb"), wait_until="commit")
    enable = page.locator(".crmkit-teams-enable input[type=checkbox]")
    enable.wait_for(state="visible", timeout=WIDGETS_UP)
    assert not page.locator(".crmkit-open-error").count()
    expect(page.locator(".crmkit-mode-line")).to_contain_text("Teammodus")
    expect(enable).to_be_enabled()
    expect(enable).not_to_be_checked()
    enable.check()
    expect(page.locator(".crmkit-teams-status")).to_contain_text("systemweit aktiviert", timeout=30_000)
    page.close(run_before_unload=True)
    _end_kernels(signed_in, hub, TOM_UPN)
    # the CRM: Teams on, its contact type made, and the audit names tom (the CRM user of his sign-in)
    assert _owner_read(hub, "SELECT code FROM contact_types WHERE code = 'TS'") == [("TS",)]
    enabled = _owner_read(hub, "SELECT value FROM system_settings WHERE key = 'teams.enabled'")
    assert enabled and str(enabled[0][0]).lower() == "true", enabled
    who = _owner_read(hub, "SELECT user_name FROM audit WHERE key = 'teams.enabled' ORDER BY id DESC LIMIT 1")
    assert who == [("tom",)], who


@pytest.mark.parametrize("signed_in", [ANNA_UPN], indirect=True)
def test_anna_sends_a_record_from_the_addresses_dashboard_without_a_second_sign_in(
        hub: RunningHub, signed_in: Any) -> None:
    from playwright.sync_api import expect

    device_before = _device_code_requests(hub)
    dialogs: list[str] = []
    page = signed_in.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(_dashboard(hub, ANNA_UPN, "addresses.ipynb"), wait_until="commit")
    row = page.locator(".crmkit-row:visible").first
    row.wait_for(state="visible", timeout=WIDGETS_UP)
    assert not page.locator(".crmkit-open-error").count()
    company = row.locator("[data-col=company]").inner_text()
    action = page.locator(".crmkit-teams-action")
    page.locator(".crmkit-rows .crmkit-row-select input").first.check()
    expect(action).to_be_enabled(timeout=30_000)
    action.click()
    compose = page.locator(".crmkit-compose")
    compose.wait_for(state="visible", timeout=30_000)
    search = compose.locator(".crmkit-compose-search input")
    search.press_sequentially(COLLEAGUE["name"][:5], delay=60)  # the directory, searched with the hub's token
    compose.locator(".crmkit-compose-suggestion:visible", has_text=COLLEAGUE["name"]).click(timeout=60_000)
    expect(compose.locator(".crmkit-compose-chip", has_text=COLLEAGUE["name"])).to_be_visible()
    compose.locator(".crmkit-compose-subject input").fill(SUBJECT)
    compose.locator(".crmkit-compose-message textarea").fill("Bitte heute anrufen.")
    compose.locator(".crmkit-compose-send").click()
    expect(compose.locator(".crmkit-compose-results tr[data-status=sent]")).to_have_count(1, timeout=90_000)
    # no second sign-in: no device-code link or code on the page, none asked at the tenant
    assert not page.locator(".crmkit-signin-prompt:visible").count()
    page.close(run_before_unload=True)
    _end_kernels(signed_in, hub, ANNA_UPN)
    assert dialogs == []
    assert _device_code_requests(hub) == device_before

    # the sandbox: the message arrived, sent by anna's directory account
    with _sandbox(hub) as sb:
        messages = sb.get("/_sandbox/messages").json()["value"]
    ours = [m for m in messages if SUBJECT in str(m)]
    assert len(ours) == 1, [str(m)[:300] for m in messages]
    assert user_id_for(ANNA_UPN) in str(ours[0]) and company in str(ours[0]), str(ours[0])[:2000]
    # the transfer log: the CRM user anna and her Microsoft identity, the colleague as recipient
    log = _owner_read(hub, "SELECT user_name, ms_account, channel, outcome, recipient_name FROM transfer_log")
    assert log == [("anna", ANNA_UPN, "teams_manual", "sent", COLLEAGUE["name"])], log
    link = _owner_read(hub, "SELECT user_name, object_id, upn FROM directory_links WHERE user_name = 'anna'")
    assert link == [("anna", user_id_for(ANNA_UPN), ANNA_UPN)], link


@pytest.mark.parametrize("signed_in", [VERA_UPN], indirect=True)
def test_vera_is_refused_the_settings_and_the_send_action(hub: RunningHub, signed_in: Any) -> None:
    from playwright.sync_api import expect

    audit_before = _owner_read(hub, "SELECT count(*) FROM audit")
    settings_before = _owner_read(hub, "SELECT key, value::text FROM system_settings ORDER BY key")
    page = signed_in.new_page()
    page.goto(_dashboard(hub, VERA_UPN, "settings.ipynb"), wait_until="commit")
    enable = page.locator(".crmkit-teams-enable input[type=checkbox]")
    enable.wait_for(state="visible", timeout=WIDGETS_UP)
    assert not page.locator(".crmkit-open-error").count()
    expect(page.locator(".crmkit-settings-user")).to_contain_text("vera", ignore_case=True)
    # the page says why: the switch is disabled, the status says she may not change it
    expect(enable).to_be_disabled()
    expect(page.locator(".crmkit-teams-status")).to_contain_text(t("teams_settings.no_right", "de"))
    # a forced click (the disabled attribute taken away in the page) reaches the kernel: the core refuses it
    was_on = enable.is_checked()
    enable.evaluate("el => { el.disabled = false; el.click(); }")
    expect(page.locator(".crmkit-teams-settings .crmkit-error")).to_contain_text("teams.admin", timeout=30_000)
    expect(enable).to_be_checked(checked=was_on)  # the view put the switch back
    page.close(run_before_unload=True)
    assert _owner_read(hub, "SELECT count(*) FROM audit") == audit_before
    assert _owner_read(hub, "SELECT key, value::text FROM system_settings ORDER BY key") == settings_before

    page = signed_in.new_page()
    page.goto(_dashboard(hub, VERA_UPN, "addresses.ipynb"), wait_until="commit")
    page.locator(".crmkit-row").first.wait_for(state="visible", timeout=WIDGETS_UP)
    action = page.locator(".crmkit-teams-action")
    page.locator(".crmkit-rows .crmkit-row-select input").first.check()
    expect(page.locator(".crmkit-selection-label")).to_have_text("1 ausgewählt")
    expect(action).to_be_disabled()  # a selection does not enable what the right forbids
    expect(action).to_have_attribute("title", f"{t('teams.with_record', 'de')} – {_missing('teams.send')}")
    page.close(run_before_unload=True)
    _end_kernels(signed_in, hub, VERA_UPN)
    assert _owner_read(hub, "SELECT count(*) FROM audit") == audit_before
    assert _owner_read(hub, "SELECT count(*) FROM transfer_log WHERE user_name = 'vera'") == [(0,)]


@pytest.mark.parametrize("signed_in", [VERA_UPN], indirect=True)
def test_vera_cannot_become_tom_by_the_dashboards_url(hub: RunningHub, signed_in: Any) -> None:
    """``?user=tom`` (the demos' URL user) on vera's settings dashboard: the page refuses to open and says how to
    sign in; no session of tom's, no switch to use, nothing written."""
    from playwright.sync_api import expect

    audit_before = _owner_read(hub, "SELECT count(*) FROM audit")
    page = signed_in.new_page()
    page.goto(_dashboard(hub, VERA_UPN, "settings.ipynb") + "?user=tom", wait_until="commit")
    refusal = page.locator(".crmkit-open-error")
    refusal.wait_for(state="visible", timeout=WIDGETS_UP)
    expect(refusal).to_contain_text("Im Teammodus ist ein Name allein keine Anmeldung")
    expect(refusal).to_contain_text("'vera'")  # the session's user is the sign-in's, and the page says so
    assert not page.locator(".crmkit-teams-enable").count()
    assert not page.locator(".crmkit-settings-user").count()
    page.close(run_before_unload=True)
    _end_kernels(signed_in, hub, VERA_UPN)
    assert _owner_read(hub, "SELECT count(*) FROM audit") == audit_before
