"""What text may hold when it enters crmkit, and how stored text is shown: one rule, used everywhere.

Input, :func:`check_text`: C0 and C1 control characters (U+0000-U+001F, U+007F-U+009F) are refused
with a :class:`~crmkit.errors.ControlCharacters` error that names the field. A field that holds
lines (contact notes, a message's text, descriptions) keeps tab, line feed and CR LF; one-line
fields (names, address fields, subjects, settings) keep none of them. A subject also refuses the
bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): placed after the
fixed "cobra CRM - " prefix they reorder what follows it, so the recipient reads another subject
than the one logged. Refused rather than stripped: the sender sees why, and what is logged is what
was typed.

Output, :func:`inert`: text already stored (before this rule, or written around crmkit) is shown
with those characters removed, so a record value cannot ring, cut off or reorder the text around
it in a card, an HTML table or a message.

>>> check_text("Eva", "first_name")
'Eva'
>>> inert("Ev\\u202ea\\x07")
'Eva'
"""

from __future__ import annotations

import re
from typing import overload

from .errors import ControlCharacters

__all__ = ["BIDI_CONTROLS", "check_text", "inert"]

BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROLS = r"\x00-\x1f\x7f-\x9f"
_ONE_LINE = re.compile(f"[{_CONTROLS}]")
_LINES = re.compile(r"\r(?!\n)|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # tab, LF and CR LF allowed
_BIDI = re.compile(f"[{BIDI_CONTROLS}]")
_INERT = re.compile(f"\\r(?!\\n)|[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f{BIDI_CONTROLS}]")
MAX_SHOWN = 5  # code points named in a message


def _codes(found: list[str]) -> str:
    unique = list(dict.fromkeys(found))
    shown = ", ".join(f"U+{ord(c):04X}" for c in unique[:MAX_SHOWN])
    return shown + (f" (+{len(unique) - MAX_SHOWN})" if len(unique) > MAX_SHOWN else "")


def _label(field: str, lang: str, label_key: str | None) -> str:
    from .i18n import t

    for key in (label_key, f"address.{field}"):
        if key and t(key, lang) != key:
            return f"{t(key, lang)} ({field})"
    return field


@overload
def check_text(value: str, field: str, *, lines: bool = ..., bidi: bool = ..., label_key: str | None = ...) -> str: ...
@overload
def check_text(value: None, field: str, *, lines: bool = ..., bidi: bool = ...,
               label_key: str | None = ...) -> None: ...


def check_text(value: str | None, field: str, *, lines: bool = False, bidi: bool = False,
               label_key: str | None = None) -> str | None:
    """``value`` unchanged, or :class:`ControlCharacters` naming ``field`` and the refused code points.

    Args:
        value: the text as entered (None and non-text pass through; their own checks come elsewhere).
        field: the field's name, kept on the error as ``field``.
        lines: the field holds lines: tab, line feed and CR LF are allowed.
        bidi: also refuse bidirectional embeddings, overrides and isolates (subjects).
        label_key: catalog key of the field's label (default ``address.<field>`` when there is one).
    """
    if not isinstance(value, str):
        return value
    found = (_LINES if lines else _ONE_LINE).findall(value)
    key = "error.msg.control_characters"
    if not found and bidi:
        found, key = _BIDI.findall(value), "error.msg.bidi_controls"
    if not found:
        return value
    params = {"field": field, "codes": _codes(found), "label_de": _label(field, "de", label_key),
              "label_en": _label(field, "en", label_key)}
    from .i18n import t

    raise ControlCharacters(t(key, "en", **params), field=field).localized(key, **params)


def inert(text: str) -> str:
    """``text`` with control characters (but tab, LF, CR LF) and bidi embeddings/overrides/isolates removed."""
    return _INERT.sub("", text)


_NOT_IN_NAMES = re.compile(r"[^a-z0-9._-]+")


def account_name(upn: str) -> str:
    """The name a directory account goes by in crmkit and in the hub: the local part of its UPN, lower-case,
    anything but ``a-z 0-9 . _ -`` made ``-``, no ``.``/``-``/``_`` at either end; e.g.
    ``Lea.Hoffmann@contoso.example`` -> ``lea.hoffmann``. Empty when nothing is left (the caller refuses it)."""
    return _NOT_IN_NAMES.sub("-", upn.split("@", 1)[0].lower()).strip(".-_")

