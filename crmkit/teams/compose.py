"""Build the Graph chatMessage bodies crmkit sends: prefixed subject, sanitised text, the record.

Pure functions; nothing here talks to the store or the network, so the preview shows exactly
what the sender will post.
"""

from __future__ import annotations

import html
import json
import uuid
from collections.abc import Iterable, Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from ..errors import MessageTooLarge, ValidationError, catalog_error
from ..text_rules import check_text
from .options import CHOICES, DEFAULTS, PAYLOAD_OPTIONS, check_choice

__all__ = [
    "ADAPTIVE_CARD",
    "MAX_MESSAGE_BYTES",
    "build_message",
    "check_message_text",
    "message_size",
    "new_compose_key",
    "prefixed_subject",
    "sanitize_html",
    "split_rows",
]

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
# Teams takes about 28 KB per post (text, links, mentions); keep a margin for what the service adds.
MAX_MESSAGE_BYTES = 27 * 1024

_ALLOWED_TAGS = {"b", "strong", "i", "em", "u", "br", "p", "ul", "ol", "li", "a", "code", "pre", "blockquote"}
_VOID = {"br"}
_SCHEMES = {"http", "https", "mailto"}


class _Sanitizer(HTMLParser):
    """Keeps a small allowlist of formatting tags; every other tag is dropped, all text escaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.skip = 0  # inside <script>/<style>: drop the content too

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
            return
        if tag not in _ALLOWED_TAGS or self.skip:
            return
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if urlsplit(href).scheme.lower() not in _SCHEMES:
                return
            self.out.append(f'<a href="{html.escape(href, quote=True)}">')
        else:
            self.out.append(f"<{tag}>")
        if tag not in _VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
            return
        if tag in self.open:
            while self.open:  # close what was left open inside, so the markup stays balanced
                last = self.open.pop()
                self.out.append(f"</{last}>")
                if last == tag:
                    break

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self.open))


def sanitize_html(text: str) -> str:
    """The sender's text as safe HTML: formatting tags kept, scripts and attributes dropped.

    Plain text keeps its line breaks.
    """
    if not isinstance(text, str):
        raise ValidationError("The message text must be a string.")
    if "<" not in text:
        return html.escape(text, quote=False).replace("\n", "<br>")
    parser = _Sanitizer()
    parser.feed(text)
    return parser.result()


def check_message_text(text: str) -> str:
    """The sender's text as given, or :class:`ValidationError` (not text) / ``ControlCharacters``.

    The text holds lines: tab and line breaks are kept, other control characters refused.
    """
    if not isinstance(text, str):
        raise ValidationError("The message text must be a string.")
    return check_text(text, "message", lines=True, label_key="teams.message")


def prefixed_subject(subject: str, prefix: str) -> str:
    """The subject with the system's prefix ("cobra CRM - "), never doubled.

    Raises:
        ValidationError: no subject, or longer than 255 characters.
        ControlCharacters: control characters, or bidi controls that would reorder it after the prefix.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise catalog_error(ValidationError, "error.msg.subject_missing")
    check_text(subject, "subject", bidi=True, label_key="teams.subject")
    subject = " ".join(subject.split())
    if len(subject) > 255:
        raise catalog_error(ValidationError, "error.msg.subject_too_long")
    return subject if subject.startswith(prefix) else prefix + subject


def build_message(
    subject: str, text: str, *, record_html: str = "", card: dict[str, Any] | None = None,
    attachment_id: str | None = None, **options: Any,
) -> dict[str, Any]:
    """A Graph ``chatMessage`` request body.

    The subject goes in ``subject``, which Teams shows as the message's heading line; the body is
    the sanitised text, then the record: an HTML table (``record_html``) and/or an Adaptive Card
    attachment referenced by ``<attachment id>``. (The body used to start with the subject in bold
    as well, so Teams showed it twice.)

    ``options`` are the send options the body carries as they are (:data:`~crmkit.teams.options.PAYLOAD_OPTIONS`,
    e.g. ``importance="high"``; a missing one takes its default), each checked.
    """
    unknown = sorted(set(options) - set(PAYLOAD_OPTIONS))
    if unknown:
        raise TypeError(f"build_message() got unexpected keyword arguments {unknown}")
    carried = {name: options.get(name, DEFAULTS[name]) for name in PAYLOAD_OPTIONS}
    for name, value in carried.items():
        if name in CHOICES:
            check_choice(name, value)
    parts: list[str] = []
    if text and text.strip():
        parts.append(f"<p>{sanitize_html(text)}</p>")
    if record_html:
        parts.append(record_html)
    payload: dict[str, Any] = {"subject": subject, **carried}
    if card is not None:
        if not attachment_id:
            raise ValueError("a card needs the attachment id that marks it in the body")
        parts.append(f'<attachment id="{attachment_id}"></attachment>')
        payload["attachments"] = [{
            "id": attachment_id, "contentType": ADAPTIVE_CARD, "contentUrl": None,
            "content": json.dumps(card, ensure_ascii=False), "name": None, "thumbnailUrl": None,
        }]
    # Graph needs body content: a message of a subject alone carries it in the body too.
    content = "".join(parts) or f"<p>{html.escape(subject, quote=False)}</p>"
    payload["body"] = {"contentType": "html", "content": content}
    return payload


def message_size(payload: dict[str, Any]) -> int:
    """Bytes of the request body as it goes over the wire."""
    return len(json.dumps(payload, ensure_ascii=False).encode())


def check_size(payload: dict[str, Any]) -> None:
    size = message_size(payload)
    if size > MAX_MESSAGE_BYTES:
        kb = f"{size / 1024:.1f}"
        raise catalog_error(MessageTooLarge, "error.msg.too_large", kb_en=kb, kb_de=kb.replace(".", ","))


def split_rows(rows: Sequence[str], build: Any, limit: int = MAX_MESSAGE_BYTES) -> Iterable[list[str]]:
    """Group rendered table rows into chunks whose built message stays under ``limit`` bytes.

    ``build(chunk)`` returns the payload for a chunk; a single row that is too large on its own
    raises :class:`MessageTooLarge`.
    """
    chunk: list[str] = []
    for row in rows:
        trial = [*chunk, row]
        if message_size(build(trial)) <= limit:
            chunk = trial
            continue
        if not chunk:
            check_size(build(trial))  # raises: the row alone is over the limit
        yield chunk
        chunk = [row]
        check_size(build(chunk))
    if chunk:
        yield chunk


def new_compose_key() -> str:
    """A fresh idempotency key for one composed message (``crm.teams.send(..., idempotency_key=)``).

    A compose keeps its key until the user starts a new message, so pressing Send again, or a
    double click, yields the batch already made instead of posting twice.
    """
    return f"compose:{uuid.uuid4().hex}"
