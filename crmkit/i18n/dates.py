"""Dates typed by a user, read in either UI language's format.

Apart from :mod:`crmkit.i18n` because a bad date raises a catalog error: crmkit.errors reads its texts
from crmkit.i18n, so crmkit.i18n itself imports no error class (no import cycle).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import ValidationError, catalog_error
from . import DATE_FORMATS, DEFAULT_LANGUAGE

__all__ = ["parse_date", "parse_datetime"]


def parse_date(text: str, lang: str | None = None) -> Any:
    """A date typed by a user: the language's format first (31.12.2026 / 2026-12-31), then the other one;
    ``None`` for an empty field.

    Raises:
        ValidationError: not a date in either format (the message names the expected one).
    """
    moment = _parse(text, lang, "")
    return None if moment is None else moment.date()


def parse_datetime(text: str, lang: str | None = None) -> Any:
    """A date and time typed by a user (31.12.2026 14:30 / 2026-12-31 14:30) as a naive datetime, or None.

    Raises:
        ValidationError: not a date and time in either language's format.
    """
    return _parse(text, lang, " %H:%M")


def _parse(text: str, lang: str | None, time: str) -> Any:
    text = " ".join((text or "").split())
    if not text:
        return None
    lang = lang if lang in DATE_FORMATS else DEFAULT_LANGUAGE
    for pattern in (DATE_FORMATS[lang], *(p for code, p in DATE_FORMATS.items() if code != lang)):
        try:
            return datetime.strptime(text, pattern + time)
        except ValueError:
            continue
    raise catalog_error(ValidationError, "error.msg.bad_date", value=repr(text),
                        example_de="31.12.2026" + (" 14:30" if time else ""),
                        example_en="2026-12-31" + (" 14:30" if time else ""))
