"""Message templates with record placeholders: ``Hallo {first_name}, {company} hat geantwortet.``

A template is checked when an action is saved (unknown placeholder → :class:`ValidationError`),
and rendered per address when the action runs. Values are always escaped: a company called
``<script>…`` arrives as that text, never as markup.
"""

from __future__ import annotations

import html
import string
from collections.abc import Mapping
from typing import Any

from ..errors import ValidationError, catalog_error
from ..text_rules import inert

__all__ = ["ADDRESS_PLACEHOLDERS", "CONTEXT_PLACEHOLDERS", "PLACEHOLDERS", "check_template", "render_message",
           "render_subject", "template_fields"]

ADDRESS_PLACEHOLDERS: tuple[str, ...] = (
    "id", "company", "salutation", "title", "first_name", "last_name", "department", "street", "postal_code",
    "city", "country", "phone", "email",
)
CONTEXT_PLACEHOLDERS: tuple[str, ...] = ("campaign", "activity", "reaction")
PLACEHOLDERS: tuple[str, ...] = ADDRESS_PLACEHOLDERS + CONTEXT_PLACEHOLDERS
MAX_SUBJECT = 200  # leaves room for the system's subject prefix under Teams' 255


def _parts(template: str) -> list[tuple[str, str | None]]:
    """(literal, placeholder-or-None) pairs; ``{{`` and ``}}`` are literal braces."""
    if not isinstance(template, str):
        raise catalog_error(ValidationError, "error.msg.template_text")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise catalog_error(ValidationError, "error.msg.template_brace") from exc  # Python's words stay in the chain
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (spec or conversion or name not in PLACEHOLDERS):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise catalog_error(ValidationError, "error.msg.template_placeholder", shown=shown,
                                known=", ".join("{" + p + "}" for p in PLACEHOLDERS))
        out.append((literal, name))
    return out


def check_template(template: str) -> list[str]:
    """The placeholders a template uses, in order; raises :class:`ValidationError` for unknown ones."""
    return list(dict.fromkeys(name for _literal, name in _parts(template) if name is not None))


def template_fields(*templates: str) -> list[str]:
    """Address columns the templates put into a message (for the transfer log); ``id`` is no personal data."""
    used = [n for t in templates for n in check_template(t)]
    return sorted({n for n in used if n in ADDRESS_PLACEHOLDERS and n != "id"})


def _value(values: Mapping[str, Any], name: str) -> str:
    # A stored value may predate the input rule: its controls and bidi overrides are dropped.
    value = values.get(name)
    return "" if value is None else inert(str(value))


def render_message(template: str, values: Mapping[str, Any]) -> str:
    """The message text for the send path, which sanitises text with a ``<`` as HTML and escapes the rest.

    Values are HTML-escaped into an HTML template. A plain template stays plain text (the send path
    escapes it once; escaping here too would show ``&amp;``), unless a value holds a ``<``: then
    the text is sent as escaped HTML inside a ``<span>``, which only makes the send path treat it
    as HTML (the sanitiser drops the span itself).
    """
    parts = [(inert(literal), name) for literal, name in _parts(template)]  # a template saved before the rule
    is_html = "<" in template
    out = []
    for literal, name in parts:
        out.append(literal if is_html else html.escape(literal, quote=False))
        if name is not None:
            out.append(html.escape(_value(values, name), quote=False))
    rendered = "".join(out)
    if is_html:
        return rendered
    plain = html.unescape(rendered)
    return plain if "<" not in plain else "<span>" + rendered.replace("\n", "<br>") + "</span>"


def render_subject(template: str, values: Mapping[str, Any]) -> str:
    """The subject: plain text (the send path escapes it), one line, at most :data:`MAX_SUBJECT` characters."""
    text = inert("".join(literal + (_value(values, name) if name else "") for literal, name in _parts(template)))
    text = " ".join(text.split())
    return text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 1] + "…"
