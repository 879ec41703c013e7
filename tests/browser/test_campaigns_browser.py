"""The campaigns dashboard in a real browser (Voila, committed voila.json) against a sandbox subprocess:
build campaign → activity → reaction → Teams action, record the reaction for three addresses, and see
three messages from the campaign account, three runs done and the TS contacts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import SandboxAdmin, SandboxProc, colleagues, forget_msal

import crmkit
from crmkit.auth import Microsoft365, _msal
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from crmkit.teams import activation
from crmkit.voila_launch import free_port, server_url, start_voila, stop_voila, wait_until_up

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
COMPANIES = ["Müller & Söhne GmbH", "<script>alert(1)</script> AG", "Keller Technik AG"]


@pytest.fixture
def campaign_site(tmp_path: Path, output_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A sandbox, a database with three addresses and the campaign account, and Voila over dashboards/."""
    sandbox_proc = SandboxProc(tmp_path / "sandbox", output_dir / "sandbox-campaigns.log")
    admin = SandboxAdmin(sandbox_proc.url)
    admin.put("limits", {"chat_post_per_app_per_s": 400, "chat_post_per_chat_per_s": 100})
    env = {"CRMKIT_SANDBOX_URL": sandbox_proc.url, "CRMKIT_HOME": str(tmp_path / "home"),
           "CRMKIT_TEAMS_TENANT_RPS": "300", "CRMKIT_TEAMS_CHAT_RPS": "80"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    db = tmp_path / "crm.duckdb"
    crm = crmkit.open(db)
    activation.enable(crm)
    for company in COMPANIES:
        crm.add_address(company=company, city="Berlin")
    m365 = Microsoft365(crm)
    m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
    m365.close()
    crm.store.close()
    port = free_port()
    with (output_dir / "voila-campaigns.log").open("wb") as log:
        proc = start_voila(port, {**env, "CRMKIT_DB": str(db), "CRMKIT_USER": "admin"}, log=log)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield {"url": server_url(port).rstrip("/"), "db": db, "admin": admin}
        finally:
            stop_voila(proc)
            admin.close()
            _msal._close_shared()
            forget_msal()
            sandbox_proc.stop()


def test_campaign_action_from_editor_to_teams(page: Any, campaign_site: dict[str, Any], output_dir: Path) -> None:
    from playwright.sync_api import expect

    admin: SandboxAdmin = campaign_site["admin"]
    upn = colleagues(admin, 1)[0]
    users = admin.get("users")["value"]
    colleague = next(u for u in users if u["userPrincipalName"] == upn)
    sender_id = next(u["id"] for u in users if u["userPrincipalName"] == SANDBOX_DEFAULT_UPN)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(f"{campaign_site['url']}/voila/render/campaigns.ipynb", wait_until="commit")
    page.locator(".crmkit-campaign-editor").wait_for(state="visible", timeout=WIDGETS_UP)
    assert "Kampagnen einrichten" in page.content() and "Traceback" not in page.content()

    def create(kind: str, name: str) -> None:
        page.locator(f".crmkit-{kind}-name input").fill(name)
        page.locator(f".crmkit-{kind}-new").click()
        expect(page.locator(f".crmkit-{kind}-select select option:checked")).to_have_text(name, timeout=30_000)

    create("campaign", "Herbstaktion")
    create("activity", "Mailing Oktober")
    page.locator(".crmkit-participant-ids input").fill("1, 2, 3")
    page.locator(".crmkit-participants-add").click()
    expect(page.locator(".crmkit-participants")).to_have_text("3 Teilnehmer", timeout=30_000)
    create("reaction", "Interesse")

    page.locator(".crmkit-reaction-actions-open").click()  # »Vorgänge der Reaktion…«
    page.locator(".crmkit-action-new").click()             # »Neu«
    expect(page.locator(".crmkit-action-kind select option:checked")).to_have_text(
        "Nachricht in Microsoft Teams versenden")
    page.locator(".crmkit-new-action-description input").fill("Vertrieb informieren")
    page.locator(".crmkit-new-action-ok").click()
    dialog = page.locator(".crmkit-teams-action-dialog")
    expect(dialog).to_contain_text("MS Teams Nachricht versenden", timeout=30_000)
    expect(dialog.locator(".crmkit-action-sender")).to_contain_text(SANDBOX_DEFAULT_UPN)  # Standardabsender

    query = dialog.locator(".crmkit-recipient-query input")
    query.fill(colleague["displayName"].split()[0])
    query.press("Enter")
    label = f"{colleague['displayName']} <{upn}>"
    results = dialog.locator(".crmkit-recipient-results select")
    expect(results.locator("option", has_text=upn)).to_have_count(1, timeout=30_000)
    results.select_option(label=label)
    dialog.locator(".crmkit-recipient-add").click()
    expect(dialog.locator(".crmkit-recipients-chosen select option")).to_have_text([label], timeout=30_000)
    dialog.locator(".crmkit-action-message textarea").fill("Bitte {company} anrufen.")
    expect(dialog.locator(".crmkit-action-record-contact input")).to_be_checked()  # »Kontakt erfassen«
    page.screenshot(path=str(output_dir / "campaigns-action-dialog.png"), full_page=True)
    dialog.locator(".crmkit-action-ok").click()
    expect(page.locator(".crmkit-actions-status")).to_have_text("Vorgang gespeichert.", timeout=30_000)
    expect(page.locator(".crmkit-actions-table")).to_contain_text("Vertrieb informieren")

    recorder = page.locator(".crmkit-record-reactions")
    expect(recorder.locator(".crmkit-record-activity select option:checked")).to_have_text(
        "Herbstaktion – Mailing Oktober", timeout=30_000)
    expect(recorder.locator(".crmkit-record-reaction select option:checked")).to_have_text("Interesse")
    addresses = recorder.locator(".crmkit-record-addresses select")
    expect(addresses.locator("option")).to_have_count(3, timeout=30_000)
    addresses.select_option(label=[f"{i}: {c}, Berlin" for i, c in enumerate(COMPANIES, 1)])
    recorder.locator(".crmkit-record-button").click()
    expect(recorder.locator(".crmkit-record-status")).to_have_text(
        "3 erfasst, 0 bereits erfasst, 3 Vorgänge ausgelöst.", timeout=90_000)
    expect(page.locator(".crmkit-runs tr.crmkit-run[data-status=done]")).to_have_count(3, timeout=60_000)
    expect(page.locator(".crmkit-runs")).to_contain_text("Erledigt")
    page.screenshot(path=str(output_dir / "campaigns-runs-done.png"), full_page=True)
    assert dialogs == []

    delivered = admin.get("messages")["value"]
    assert len(delivered) == 3
    assert {m["from"]["user"]["id"] for m in delivered} == {sender_id}
    assert all("<script>" not in m["body"]["content"] for m in delivered)
    crm = crmkit.open(campaign_site["db"])
    assert crm.store.df("SELECT status FROM campaign_runs")["status"].tolist() == ["done"] * 3
    contacts = crm.contacts(type_code="TS")
    assert sorted(contacts["address_id"]) == [1, 2, 3]
    log = crm.store.df("SELECT trigger, channel, ms_account FROM transfer_log")
    assert set(map(tuple, log.values)) == {("campaign", "teams_campaign", SANDBOX_DEFAULT_UPN)}
