"""Issue 17 part 3 in a real browser: a colleague's reply in Teams to a record crmkit sent shows in that
address's contact history on the addresses dashboard, as one TS contact naming its author, after a
``crmkit worker --once`` pass; a second pass (a new worker process) and a page reload still show it once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import ROOT

import crmkit
from crmkit.teams import activation
from crmkit.voila_launch import dashboard_url

from .conftest import SendSetup, voila_with_anna_signed_in

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
COMPANY = "Antwort & Partner GmbH"
REPLY = "Danke, ich rufe morgen an."


def _seed(crm: crmkit.CRM) -> None:
    activation.enable(crm)
    crm.set_setting("teams.file_replies", True)
    crm.add_address(company=COMPANY, city="Berlin", country="DE")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[SendSetup]:
    with voila_with_anna_signed_in(tmp_path_factory.mktemp("reply-flow"), output_dir / "voila-reply-flow.log",
                                   _seed) as setup:
        yield setup


def _env(flow: SendSetup) -> dict[str, str]:
    """What Voila's kernels see (voila_with_anna_signed_in): the same CRM file, sandbox and token cache."""
    return {"CRMKIT_DB": str(flow.db), "CRMKIT_SANDBOX_URL": flow.sandbox.url,
            "CRMKIT_HOME": str(flow.db.parent / "home"), "CRMKIT_USER": "admin"}


def _worker_pass(flow: SendSetup) -> str:
    """One ``crmkit worker --once`` process as Anna (a worker files its user's own sends' replies, read with that
    user's Teams account), a fresh one each time: a restart; its output."""
    run = subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(flow.db), "--user", "anna", "worker",
                          "--once",
                          "--reply-interval", "1"], cwd=ROOT, env={**os.environ, **_env(flow)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _open_contacts(page: Any) -> Any:
    page.locator(".crmkit-row:visible").first.wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".crmkit-rows .crmkit-row-menu-button").first.click()
    page.locator(".crmkit-row-menu .crmkit-row-contacts").click()
    panel = page.locator(".crmkit-contacts")
    panel.wait_for(state="visible", timeout=30_000)
    return panel


def test_a_reply_shows_once_in_the_contact_history_after_a_worker_pass(
        page: Any, flow: SendSetup, monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> None:
    from playwright.sync_api import expect

    person = flow.recipients[0]
    for key, value in _env(flow).items():
        monkeypatch.setenv(key, value)
    anna = crmkit.open(flow.db, "anna")  # the setup by the core: Anna sends the record to a colleague
    try:
        sent = anna.teams.send(1, to=[person["userPrincipalName"]], subject="Neuer Lead")
        assert sent["status"].tolist() == ["sent"]
        chat, message = anna.store.read(lambda tx: tx.rows(
            "SELECT chat_id, message_id FROM outbox WHERE batch_id = ?", [sent.attrs["batch_ids"][0]]))[0]
    finally:
        anna.teams.close()
        anna.store.close()
    r = flow.sandbox.admin.post(f"/_sandbox/chats/{chat}/replies", json={
        "from": person["userPrincipalName"], "reply_to": message, "content": REPLY, "content_type": "text"})
    assert r.status_code == 201, r.text
    assert "replies filed: 1" in _worker_pass(flow)

    page.goto(dashboard_url(flow.voila_port, "addresses.ipynb") + "?user=anna", wait_until="commit")
    panel = _open_contacts(page)
    expect(panel).to_contain_text(COMPANY)
    rows = panel.locator(".crmkit-contact")
    expect(rows).to_have_count(1, timeout=30_000)  # the send recorded no contact: this one is the reply
    expect(rows).to_contain_text(f"Antwort von {person['displayName']}")
    expect(rows).to_contain_text("Teams")  # the type TS, by its label
    page.screenshot(path=str(output_dir / "reply-flow-1-filed.png"), full_page=True)

    # a second pass by a new worker process files nothing more; a reload shows the reply once still
    again = _worker_pass(flow)
    assert "was active" in again and "replies filed" not in again, again  # the line names only a count > 0
    page.reload(wait_until="commit")
    panel = _open_contacts(page)
    expect(panel.locator(".crmkit-contact")).to_have_count(1, timeout=30_000)
    expect(panel.locator(".crmkit-contact")).to_contain_text(f"Antwort von {person['displayName']}")
    page.screenshot(path=str(output_dir / "reply-flow-2-reloaded.png"), full_page=True)

    # the panel shows date, type, subject and user; the reply's text is the contact's notes
    crm = crmkit.open(flow.db, "admin")
    try:
        contacts = crm.contacts(1)
        assert contacts[["type_code", "notes"]].values.tolist() == [["TS", REPLY]]
        assert person["displayName"] in contacts["subject"].iloc[0]
    finally:
        crm.store.close()
