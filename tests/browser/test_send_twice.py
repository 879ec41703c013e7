"""Pressing Absenden twice in a real browser delivers each message once (issue 11, item 7).

Voila runs the addresses dashboard with the committed ``dashboards/voila.json`` against a real
sandbox tenant; Anna is signed in to Teams beforehand through the sandbox's device-code page with
the ``CRMKIT_HOME`` Voila's kernels use. What arrived is counted in the sandbox's chats.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import SandboxAdmin

import crmkit
from crmkit.teams import activation
from crmkit.voila_launch import dashboard_url

from .conftest import SendSetup, voila_with_anna_signed_in

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
COMPANY = "Doppelklick GmbH"
SUBJECT = "Nur einmal bitte"


def _seed(crm: crmkit.CRM) -> None:
    activation.enable(crm)
    crm.add_address(company=COMPANY, city="Berlin", country="DE")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[SendSetup]:
    with voila_with_anna_signed_in(tmp_path_factory.mktemp("send-twice"), output_dir / "voila-send-twice.log",
                                   _seed) as send_setup:
        yield send_setup


def _arrived(sandbox: SandboxAdmin) -> list[dict[str, Any]]:
    return [m for m in sandbox.get("messages")["value"] if m.get("subject") == f"cobra CRM - {SUBJECT}"]


def test_a_double_click_on_absenden_delivers_one_message_per_recipient(page: Any, setup: SendSetup,
                                                                       output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(setup.voila_port, "addresses.ipynb") + "?user=anna", wait_until="commit")
    row = page.locator(".crmkit-row:visible").first
    row.wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".crmkit-rows .crmkit-row-select input").first.check()  # the first row's box
    action = page.locator(".crmkit-teams-action")
    expect(action).to_be_enabled(timeout=30_000)
    action.click()
    compose = page.locator(".crmkit-compose")
    compose.wait_for(state="visible", timeout=30_000)
    search = compose.locator(".crmkit-compose-search input")
    for person in setup.recipients:
        search.fill("")
        search.press_sequentially(person["displayName"][:4], delay=60)
        compose.locator(".crmkit-compose-suggestion:visible", has_text=person["displayName"]).click(timeout=30_000)
        expect(compose.locator(".crmkit-compose-chip", has_text=person["displayName"])).to_be_visible()
    compose.locator(".crmkit-compose-subject input").fill(SUBJECT)
    compose.locator(".crmkit-compose-preview-button").click()
    preview = compose.locator(".crmkit-compose-preview")
    expect(preview.locator(".crmkit-compose-message-preview")).to_have_count(2, timeout=30_000)

    send = compose.locator(".crmkit-compose-send")
    send.dblclick()
    expect(compose.locator(".crmkit-compose-results tr[data-status=sent]")).to_have_count(2, timeout=60_000)
    expect(compose.locator(".crmkit-compose-status")).to_contain_text("2 gesendet")
    new = compose.locator(".crmkit-compose-new")
    expect(new).to_be_visible(timeout=10_000)
    expect(new).to_have_text("Neue Nachricht")
    expect(send).to_be_disabled()
    expect(preview.locator(".crmkit-compose-message-preview")).to_have_count(0)  # the stale preview is gone
    page.screenshot(path=str(output_dir / "send-twice-1-sent.png"), full_page=True)

    # Pressed again once the result shows (a disabled button in the page swallows it; force the events)
    send.dblclick(force=True)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:  # a second send would post within this window
        assert len(_arrived(setup.sandbox)) == 2
        time.sleep(0.5)
    chats = setup.sandbox.get("chats")["value"]
    per_chat = {c["id"]: c["message_count"] for c in chats if c["message_count"]}
    assert sorted(per_chat.values()) == [1, 1], per_chat  # exactly one message per recipient, one chat each
    members = {m for c in chats if c["message_count"] for m in c["members"]}
    assert {p["id"] for p in setup.recipients} <= members
    expect(compose.locator(".crmkit-compose-results tr[data-status=sent]")).to_have_count(2)

    new.click()
    expect(send).to_be_enabled(timeout=10_000)
    expect(compose.locator(".crmkit-compose-subject input")).to_have_value("")
    expect(compose.locator(".crmkit-compose-chip")).to_have_count(0)
    expect(new).to_be_hidden()
    page.screenshot(path=str(output_dir / "send-twice-2-new-message.png"), full_page=True)
    assert len(_arrived(setup.sandbox)) == 2
