"""Issue 17 part 4 in a real browser: a sales user selects more than 50 records on the addresses dashboard,
chooses »Als eine Datei senden« in the compose dialog, sees »1 Datei, N Datensätze« in the preview and sends to one
colleague; the sandbox holds exactly one chat message with a ``reference`` attachment, and the shared workbook
(downloaded over Graph, opened with openpyxl) holds the records."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest

import crmkit
from crmkit.teams import activation
from crmkit.voila_launch import dashboard_url

from .conftest import SendSetup, voila_with_anna_signed_in

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
RECORDS = 60  # above the dialog's threshold of 50, on one page of 100
SUBJECT = "Adressliste"


def _seed(crm: crmkit.CRM) -> None:
    activation.enable(crm)
    for i in range(1, RECORDS + 1):
        crm.add_address(company=f"Listenfirma {i:03d} GmbH", city="Berlin", country="DE")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[SendSetup]:
    with voila_with_anna_signed_in(tmp_path_factory.mktemp("file-flow"), output_dir / "voila-file-flow.log",
                                   _seed) as setup:
        yield setup


def test_more_than_fifty_records_go_to_a_colleague_as_one_workbook(page: Any, flow: SendSetup,
                                                                    output_dir: Path) -> None:
    from playwright.sync_api import expect

    person = flow.recipients[0]
    page.goto(dashboard_url(flow.voila_port, "addresses.ipynb") + "?user=anna", wait_until="commit")
    page.locator(".crmkit-row:visible").first.wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".crmkit-page-size select").select_option("100")
    expect(page.locator(".crmkit-rows .crmkit-row-select input")).to_have_count(RECORDS, timeout=30_000)
    page.locator(".crmkit-select-page input").check()
    action = page.locator(".crmkit-teams-action")
    expect(action).to_be_enabled(timeout=30_000)
    action.click()
    compose = page.locator(".crmkit-compose")
    compose.wait_for(state="visible", timeout=30_000)
    compose.get_by_text("Versandoptionen").click()  # the option sits in the dialog's send options
    as_file = compose.locator(".crmkit-compose-as-file")
    expect(as_file).to_be_visible()  # offered: more records than the threshold
    expect(as_file).to_contain_text("Als eine Datei senden")
    as_file.locator("input").check()
    search = compose.locator(".crmkit-compose-search input")
    search.press_sequentially(person["displayName"][:4], delay=60)
    compose.locator(".crmkit-compose-suggestion:visible", has_text=person["displayName"]).click(timeout=30_000)
    expect(compose.locator(".crmkit-compose-chip")).to_have_count(1)
    compose.locator(".crmkit-compose-subject input").fill(SUBJECT)
    compose.locator(".crmkit-compose-preview-button").click()
    expect(compose.locator(".crmkit-compose-preview-count")).to_have_text(f"1 Datei, {RECORDS} Datensätze",
                                                                          timeout=30_000)
    page.screenshot(path=str(output_dir / "file-flow-preview.png"), full_page=True)
    compose.locator(".crmkit-compose-send").click()
    expect(compose.locator(".crmkit-compose-results tr[data-status=sent]").first).to_be_visible(timeout=30_000)
    expect(compose.locator(".crmkit-compose-results tr:not([data-status=sent])[data-status]")).to_have_count(0)
    page.screenshot(path=str(output_dir / "file-flow-sent.png"), full_page=True)

    # the colleague's side over Graph: exactly one crmkit message, one reference attachment, the workbook
    upn = person["userPrincipalName"]
    with flow.sandbox.graph(upn=upn) as g:
        chats = g.get("me/chats").json()["value"]
        messages = [m for c in chats for m in g.get(f"chats/{c['id']}/messages").json()["value"]
                    if m.get("subject") == f"cobra CRM - {SUBJECT}"]
        assert len(messages) == 1, [m.get("subject") for c in chats for m in g.get(
            f"chats/{c['id']}/messages").json()["value"]]
        (attachment,) = messages[0]["attachments"]
        assert attachment["contentType"] == "reference" and attachment["name"].endswith(".xlsx")
        assert f"{RECORDS} Datensätze" in messages[0]["body"]["content"]
    crm = crmkit.open(flow.db, "admin")
    try:
        item = crm.store.one("SELECT file_id FROM transfer_log WHERE file_id IS NOT NULL LIMIT 1")
        assert crm.store.one("SELECT count(DISTINCT file_id) FROM transfer_log") == 1
        assert crm.store.one("SELECT count(*) FROM transfer_log") == RECORDS
    finally:
        crm.store.close()
    with flow.sandbox.graph() as owner:  # the sender's OneDrive (the colleague may only read it)
        location = owner.get(f"me/drive/items/{item}/content").headers["location"]
    book = openpyxl.load_workbook(io.BytesIO(flow.sandbox.http().get(location).content), read_only=True)
    rows = list(book.active.iter_rows(values_only=True))
    assert len(rows) == RECORDS + 1  # the labels' row, then one row per record
    companies = sorted(str(r[0]) for r in rows[1:])
    assert companies == [f"Listenfirma {i:03d} GmbH" for i in range(1, RECORDS + 1)]
