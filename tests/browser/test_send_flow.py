"""Issue 5 end to end in a real browser: an admin switches Teams on and edits the display format,
a sales user sends a record to two directory people from the addresses dashboard, and the sandbox
tenant, the contact history and the transfer log show what happened.

Voila runs with the committed ``dashboards/voila.json``; the CRM user comes from ``?user=`` (the
sandbox tenant counts as a demo). Anna is signed in to Teams beforehand through the sandbox's real
device-code page, with the same ``CRMKIT_HOME`` that Voila's kernels use.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit import privacy
from crmkit.voila_launch import dashboard_url
from crmkit.widgets.privacy import TransferLogMonitor

from .conftest import SendSetup, voila_with_anna_signed_in

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
COMPANY = "Müller & Söhne GmbH"
LABEL = "Firmenname"  # the admin's new German label for the field "company"


def _seed(crm: crmkit.CRM) -> None:
    crm.add_address(company=COMPANY, street="Hauptstr. 1", postal_code="10115", city="Berlin", country="DE",
                    phone="+49 30 1234567", email="info@mueller.example")
    for i in range(2, 6):
        crm.add_address(company=f"Beispiel {i} AG", city="Hamburg", country="DE")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[SendSetup]:
    with voila_with_anna_signed_in(tmp_path_factory.mktemp("send-flow"), output_dir / "voila-send-flow.log",
                                   _seed) as setup:
        yield setup


def test_admin_activates_and_formats_then_a_user_sends_a_record(page: Any, flow: SendSetup, output_dir: Path) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # -- the admin: switch the integration on, give "company" another label, watch the preview follow
    page.goto(dashboard_url(flow.voila_port, "settings.ipynb") + "?user=admin", wait_until="commit")
    enable = page.locator(".crmkit-teams-enable input[type=checkbox]")
    enable.wait_for(state="visible", timeout=WIDGETS_UP)
    expect(page.locator(".crmkit-settings-user")).to_contain_text("Administrator")
    enable.check()
    expect(page.locator(".crmkit-teams-status")).to_contain_text("systemweit aktiviert", timeout=30_000)
    page.screenshot(path=str(output_dir / "send-flow-1-activated.png"), full_page=True)

    page.get_by_role("tab", name="Anzeigeformat").click()
    card = page.locator(".crmkit-dfe-preview-card")
    expect(card).to_contain_text(COMPANY, timeout=30_000)
    expect(card).not_to_contain_text(LABEL)
    label = page.locator(".crmkit-dfe-row-company .crmkit-dfe-label-de input")
    label.fill(LABEL)
    expect(card).to_contain_text(LABEL, timeout=30_000)
    page.locator(".crmkit-dfe-save").click()
    expect(page.locator(".crmkit-dfe-message")).to_contain_text("gespeichert", timeout=30_000)
    page.screenshot(path=str(output_dir / "send-flow-2-display-format.png"), full_page=True)

    # -- the user: select an address, Send via Teams, pick two people, record a contact, send
    page.goto(dashboard_url(flow.voila_port, "addresses.ipynb") + "?user=anna", wait_until="commit")
    row = page.locator(".crmkit-row:visible").first
    row.wait_for(state="visible", timeout=WIDGETS_UP)
    expect(row.locator("[data-col=company]")).to_have_text(COMPANY)
    action = page.locator(".crmkit-teams-action")
    expect(action).to_be_disabled()
    page.locator(".crmkit-rows .crmkit-row-select input").first.check()  # the first row's box
    expect(action).to_be_enabled(timeout=30_000)
    expect(action).to_have_text("Per Teams senden")
    action.click()
    compose = page.locator(".crmkit-compose")
    compose.wait_for(state="visible", timeout=30_000)
    expect(compose.locator(".crmkit-compose-prefix")).to_have_text("cobra CRM -")

    search = compose.locator(".crmkit-compose-search input")
    for person in flow.recipients:
        search.fill("")
        search.press_sequentially(person["displayName"][:4], delay=60)  # search as you type
        suggestion = compose.locator(".crmkit-compose-suggestion:visible", has_text=person["displayName"])
        suggestion.click(timeout=30_000)
        expect(compose.locator(".crmkit-compose-chip", has_text=person["displayName"])).to_be_visible()
    expect(compose.locator(".crmkit-compose-chip")).to_have_count(2)
    compose.locator(".crmkit-compose-subject input").fill("Neuer Lead")
    compose.locator(".crmkit-compose-message textarea").fill("Bitte heute anrufen.")
    contact = compose.locator(".crmkit-compose-record-contact input")
    contact.check()
    expect(compose.locator(".crmkit-compose-record-contact")).to_contain_text("Kontakt erfassen")
    compose.locator(".crmkit-compose-preview-button").click()
    preview = compose.locator(".crmkit-compose-preview")
    expect(preview).to_contain_text("cobra CRM - Neuer Lead", timeout=30_000)
    expect(preview.locator(".crmkit-compose-message-preview")).to_have_count(2)
    expect(preview).to_contain_text(LABEL)
    page.screenshot(path=str(output_dir / "send-flow-3-compose.png"), full_page=True)

    compose.locator(".crmkit-compose-send").click()
    expect(compose.locator(".crmkit-compose-results tr[data-status=sent]")).to_have_count(2, timeout=60_000)
    expect(compose.locator(".crmkit-compose-status")).to_contain_text("2 gesendet")
    assert compose.locator(".crmkit-compose-progress").is_visible()
    page.screenshot(path=str(output_dir / "send-flow-4-sent.png"), full_page=True)
    assert dialogs == []

    # -- the sandbox's Teams view: each recipient has the message with the prefixed subject and the card
    sandbox_url = flow.sandbox.url
    for i, person in enumerate(flow.recipients):
        page.goto(f"{sandbox_url}/teams?as={person['userPrincipalName']}&refresh=0", wait_until="domcontentloaded")
        message = page.get_by_test_id("message").filter(has_text="cobra CRM - Neuer Lead")
        expect(message).to_have_count(1, timeout=15_000)
        expect(message.locator(".subject")).to_have_text("cobra CRM - Neuer Lead")
        card = message.get_by_test_id("adaptive-card")
        expect(card).to_contain_text(LABEL)
        expect(card).to_contain_text(COMPANY)
        expect(card).to_contain_text("Berlin")
        page.screenshot(path=str(output_dir / f"send-flow-5-teams-{i + 1}.png"), full_page=True)

    # -- the store: a TS contact on the address, two transfer-log rows naming the fields
    crm = crmkit.open(flow.db, "admin")
    try:
        contacts = crm.contacts(1)
        assert contacts["type_code"].tolist() == ["TS"]
        assert contacts["subject"].iloc[0] == "cobra CRM - Neuer Lead"
        assert contacts["user_name"].iloc[0] == "anna"
        assert set(contacts["recipients"].iloc[0].split(", ")) == {p["displayName"] for p in flow.recipients}
        log = privacy.transfer_log(crm)
        assert len(log) == 2 and set(log["outcome"]) == {"sent"} and set(log["address_id"]) == {1}
        assert set(log["recipient_name"]) == {p["displayName"] for p in flow.recipients}
        assert all("company" in list(fields) for fields in log["fields"])
        monitor = TransferLogMonitor(crm, "de", export_dir=output_dir)
        assert len(monitor.frame) == 2 and "Firma" in monitor.table.value  # the field as users read it
        assert "Teams (von Hand)" in monitor.table.value
    finally:
        crm.store.close()
    assert time.monotonic() - started < 180
