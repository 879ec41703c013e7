"""UI texts in German and English, from one catalog (``catalog.json``).

German labels follow the reference CRM's wording. Keys are dotted (``table.next``); each maps to
``{"de": ..., "en": ...}``. :func:`t` falls back to English, then to the key itself, so a missing
text shows up as its key instead of breaking a view; a test keeps the catalog complete.

>>> t("address.city", "de")
'Ort'
>>> t("table.page", "en", page=2, pages=5, total="1,000")
'Page 2 of 5 (1,000 addresses)'
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "catalog", "format_count", "t"]

LANGUAGES: tuple[str, ...] = ("de", "en")
DEFAULT_LANGUAGE = "de"
_FALLBACK = "en"


@cache
def catalog() -> dict[str, dict[str, str]]:
    """The whole catalog: key → {language: text}. Read once per process."""
    text = resources.files(__name__).joinpath("catalog.json").read_text(encoding="utf-8")
    data: dict[str, dict[str, str]] = json.loads(text)
    return data


def t(key: str, lang: str | None = None, **values: Any) -> str:
    """The text for ``key`` in ``lang``; English, then the key, when it is missing.

    ``values`` fill ``{name}`` placeholders with :meth:`str.format`.
    """
    entry = catalog().get(key)
    if entry is None:
        return key
    text = entry.get(lang or DEFAULT_LANGUAGE) or entry.get(_FALLBACK) or key
    return text.format(**values) if values else text


def format_count(number: int, lang: str | None = None) -> str:
    """An integer with the language's thousands separator (1.000 in German, 1,000 in English)."""
    text = f"{int(number):,}"
    return text.replace(",", ".") if (lang or DEFAULT_LANGUAGE) == "de" else text
