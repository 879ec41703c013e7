"""Message composition: prefix, sanitised text, card marker rule, size limit."""

from __future__ import annotations

import json

import pytest

from crmkit.errors import MessageTooLarge, ValidationError
from crmkit.teams.compose import (
    ADAPTIVE_CARD,
    MAX_MESSAGE_BYTES,
    build_message,
    check_size,
    message_size,
    prefixed_subject,
    sanitize_html,
    split_rows,
)

pytestmark = pytest.mark.core


def test_prefix_is_added_once() -> None:
    assert prefixed_subject("Angebot  Müller", "cobra CRM - ") == "cobra CRM - Angebot Müller"
    assert prefixed_subject("cobra CRM - Angebot", "cobra CRM - ") == "cobra CRM - Angebot"
    for bad in ("", "   ", None, "x" * 300):
        with pytest.raises(ValidationError):
            prefixed_subject(bad, "cobra CRM - ")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("Hallo\nWelt & Co", "Hallo<br>Welt &amp; Co"),
    ("<b>fett</b> <script>alert(1)</script>ok", "<b>fett</b> ok"),
    ('<a href="javascript:alert(1)">x</a>', "x"),
    ('<a href="https://example.org/?a=1&b=2" onclick="evil()">link</a>', '<a href="https://example.org/?a=1&amp;b=2">link</a>'),
    ('<img src=x onerror="alert(1)"><i>kursiv', "<i>kursiv</i>"),
    ("<p>a<b>b</p>c", "<p>a<b>b</b></p>c"),
    ("1 < 2 > 0", "1 &lt; 2 &gt; 0"),
])
def test_sender_text_is_sanitised(text: str, expected: str) -> None:
    assert sanitize_html(text) == expected


def test_card_is_referenced_by_attachment_marker() -> None:
    card = {"type": "AdaptiveCard", "version": "1.4", "body": []}
    payload = build_message("cobra CRM - X", "Hi", card=card, attachment_id="abc123", importance="high")
    att = payload["attachments"][0]
    assert att["id"] == "abc123" and att["contentType"] == ADAPTIVE_CARD
    assert isinstance(att["content"], str) and json.loads(att["content"]) == card
    assert '<attachment id="abc123"></attachment>' in payload["body"]["content"]
    # Teams shows the subject as the message's heading line; the body does not repeat it.
    assert payload["body"]["content"] == '<p>Hi</p><attachment id="abc123"></attachment>'
    assert payload["importance"] == "high" and payload["subject"] == "cobra CRM - X"


def test_subject_is_escaped_in_body() -> None:
    # A message of a subject alone carries it in the body too (Graph needs body content), escaped.
    payload = build_message("cobra CRM - <script>", "")
    assert payload["body"]["content"] == "<p>cobra CRM - &lt;script&gt;</p>"
    with pytest.raises(ValidationError):
        build_message("s", "", importance="loud")


def test_oversized_message_is_refused() -> None:
    payload = build_message("s", "x" * (MAX_MESSAGE_BYTES + 10))
    with pytest.raises(MessageTooLarge, match="28 KB"):
        check_size(payload)


def test_digest_rows_are_split_under_the_limit() -> None:
    rows = [f"<tr><td>{i:05d}{'y' * 900}</td></tr>" for i in range(100)]

    def build(chunk: list[str]) -> dict:
        return build_message("s", "", record_html="<table>" + "".join(chunk) + "</table>")

    chunks = list(split_rows(rows, build))
    assert sum(len(c) for c in chunks) == 100 and [r for c in chunks for r in c] == rows
    assert all(message_size(build(c)) <= MAX_MESSAGE_BYTES for c in chunks)
    assert len(chunks) >= 4
    with pytest.raises(MessageTooLarge):
        list(split_rows(["z" * (MAX_MESSAGE_BYTES + 1)], build))
