"""A real browser (Debian Chromium via Playwright) opens the sandbox's Teams view after a message was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.sandbox import one_on_one_chat

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
BOB = "jonas.becker@contoso.example"


def test_teams_view_shows_the_message(sandbox_admin, page):

    g = sandbox_admin.graph()
    chat_id = one_on_one_chat(g, BOB)
    card = {"type": "AdaptiveCard", "version": "1.4",
            "body": [{"type": "TextBlock", "text": "ACME GmbH – Stage: Negotiation", "weight": "Bolder"}]}
    r = g.post(f"chats/{chat_id}/messages", json={
        "subject": "CRM record",
        "body": {"contentType": "html", "content": '<p>Hello <b>Jonas</b>, here is the record.</p>'
                                                   '<attachment id="card1"></attachment>'},
        "attachments": [{"id": "card1", "contentType": "application/vnd.microsoft.card.adaptive",
                         "content": json.dumps(card)}]})
    assert r.status_code == 201, r.text

    OUTPUT.mkdir(exist_ok=True)
    page.goto(f"{sandbox_admin.url}/teams?as={BOB}&refresh=0", wait_until="domcontentloaded")
    msg = page.get_by_test_id("message").first
    msg.get_by_text("here is the record").wait_for(state="visible", timeout=15_000)
    assert page.get_by_test_id("adaptive-card").get_by_text("Stage: Negotiation").is_visible()
    assert page.get_by_text("CRM record", exact=True).is_visible()
    assert "Anna Schmidt" in page.get_by_test_id("chat-link").first.inner_text()
    page.screenshot(path=str(OUTPUT / "sandbox-teams-view.png"), full_page=True)
    assert (OUTPUT / "sandbox-teams-view.png").stat().st_size > 0
