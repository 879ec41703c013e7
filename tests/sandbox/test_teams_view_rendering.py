"""The sandbox's Teams view shows a message as Teams does.

* Adaptive Card text (TextBlock, Fact title and value) is Teams' markdown subset: bold, italic,
  lists and links are formatted, a backslash escape shows the character without the backslash
  (crmkit writes ``\\+49`` and ``\\<GmbH\\>`` so a record value shows as typed).
* The message's ``subject`` is its heading line, once: crmkit's message (built by the real
  builder) does not repeat it as a bold first line of the body.
* Rendering markdown keeps the page inert: HTML in card text shows as text, no script, no
  ``javascript:`` link.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from crmkit.teams.compose import build_message, prefixed_subject
from crmkit.teams.display_format import default_format
from tests.support.sandbox import one_on_one_chat

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"
RECORD = {"company": "<GmbH> Müller & Söhne", "first_name": "Jonas", "last_name": "Becker",
          "street": "**Haupt**straße 1", "postal_code": "10115", "city": "Berlin", "country": "DE",
          "phone": "+49 30 1234567", "email": "a_b_c@x.example"}


class _Text(HTMLParser):
    """The text a browser shows (no <style>/<title>), one string per text node."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "title", "head"):
            self._hidden += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title", "head"):
            self._hidden = max(0, self._hidden - 1)

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    p = _Text()
    p.feed(html)
    return " ".join(" ".join(p.parts).split())


def _chat(sandbox_admin: Any) -> tuple[httpx.Client, str]:
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    return g, one_on_one_chat(g, BOB)


def _view(sandbox_admin: Any, chat_id: str) -> str:
    page = httpx.get(f"{sandbox_admin.url}/teams", params={"chat": chat_id, "as": BOB, "refresh": "0"})
    assert page.status_code == 200
    return page.text


def test_crmkit_message_shows_values_as_typed_and_the_subject_once(sandbox_admin: Any) -> None:
    g, chat_id = _chat(sandbox_admin)
    subject = prefixed_subject("Neuer Lead", "cobra CRM - ")
    payload = build_message(subject, "Bitte heute anrufen.", card=default_format().card(RECORD, "de"),
                            attachment_id="card1")
    assert g.post(f"chats/{chat_id}/messages", json=payload).status_code == 201
    text = visible_text(_view(sandbox_admin, chat_id))
    for shown in ("+49 30 1234567", "<GmbH> Müller & Söhne", "**Haupt**straße 1", "a_b_c@x.example",
                  "10115 Berlin", "Telefon"):
        assert shown in text, (shown, text)
    assert "\\" not in text, text
    assert text.count("cobra CRM - Neuer Lead") == 1, text
    # The subject is the heading line: above the body text.
    assert text.index("cobra CRM - Neuer Lead") < text.index("Bitte heute anrufen.")


def test_card_markdown_is_formatted_and_inert(sandbox_admin: Any) -> None:
    g, chat_id = _chat(sandbox_admin)
    card = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "TextBlock", "wrap": True,
         "text": "Dies ist **fett**, _kursiv_ und [ein Link](https://example.org/x?a=1&b=2)\n\n- eins\n- zwei"},
        {"type": "TextBlock", "text": "1. rot\r2. grün"},
        {"type": "TextBlock", "text": "<script>alert(1)</script> <b>roh</b> [j](javascript:alert(1)) \"q\" x=\"y\""},
        {"type": "FactSet", "facts": [{"title": "**Status**", "value": "_offen_ \\*kein Stern\\*"}]}]}
    r = g.post(f"chats/{chat_id}/messages", json={
        "body": {"contentType": "html", "content": '<attachment id="c1"></attachment>'},
        "attachments": [{"id": "c1", "contentType": "application/vnd.microsoft.card.adaptive",
                         "content": json.dumps(card)}]})
    assert r.status_code == 201, r.text
    html = _view(sandbox_admin, chat_id)
    start = html.index('data-testid="adaptive-card"')
    shown = html[start:html.index("</main>")]
    assert "<strong>fett</strong>" in shown and "<em>kursiv</em>" in shown
    assert '<a href="https://example.org/x?a=1&amp;b=2" rel="noopener noreferrer">ein Link</a>' in shown
    assert "<ul><li>eins</li><li>zwei</li></ul>" in shown
    assert "<ol><li>rot</li><li>grün</li></ol>" in shown
    assert "<th><p><strong>Status</strong></p></th>" in shown and "<em>offen</em> *kein Stern*" in shown
    # Inert: markup in card text is text; only http(s)/mailto links become links.
    assert "<script" not in html and "<b>roh</b>" not in shown and "javascript:" not in shown.replace(
        "[j](javascript:alert(1))", "")
    text = visible_text(html)
    assert '<script>alert(1)</script> <b>roh</b> [j](javascript:alert(1)) "q" x="y"' in text
    assert "**" not in text and "\\" not in text
