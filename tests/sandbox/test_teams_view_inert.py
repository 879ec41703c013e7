"""The sandbox's Teams view shows stored control and bidi characters inert, whoever posted them.

A message posted straight to the sandbox's Graph (not through crmkit, like old data) carries C0/C1
controls and bidi overrides in its subject, HTML body and Adaptive Card; the page fetched over HTTP
has none of them, and the text around them is still there.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.support.sandbox import one_on_one_chat

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_teams_view_drops_controls_and_bidi_overrides(sandbox_admin) -> None:  # type: ignore[no-untyped-def]
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    chat_id = one_on_one_chat(g, BOB)
    card = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "TextBlock", "text": "Evil\u202eAG gpj.exe", "weight": "Bolder"},
        {"type": "FactSet", "facts": [{"title": "Vor\x1bname", "value": "\x00\x07ctrl"},
                                      {"title": "Ort", "value": "Ber\x85lin\u2066x\u2069"}]}]}
    r = g.post(f"chats/{chat_id}/messages", json={
        "subject": "cobra CRM - Rechnung \u202efdp.exe",
        "body": {"contentType": "html", "content": "<p>Hallo\x07 <b>Jonas\u202d</b></p><table><tr><td>Keller\x1b[31m"
                                                   "</td></tr></table><attachment id=\"c1\"></attachment>"},
        "attachments": [{"id": "c1", "contentType": "application/vnd.microsoft.card.adaptive",
                         "content": json.dumps(card)}]})
    assert r.status_code == 201, r.text
    page = httpx.get(f"{sandbox_admin.url}/teams", params={"chat": chat_id, "as": BOB, "refresh": "0"})
    assert page.status_code == 200
    html = page.text
    assert not UNSAFE.search(html), [f"U+{ord(c):04X}" for c in UNSAFE.findall(html)]
    for shown in ("cobra CRM - Rechnung fdp.exe", "EvilAG gpj.exe", "ctrl", "Berlinx", "Vorname", "Hallo",
                  "<b>Jonas</b>", "Keller[31m"):
        assert shown in html, shown
