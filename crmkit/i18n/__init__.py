"""UI texts in German and English, from one catalog (``catalog.json``).

German labels follow the reference CRM's wording. Keys are dotted (``table.next``); each maps to
``{"de": ..., "en": ...}``. :func:`t` falls back to English, then to the key itself, so a missing
text shows up as its key instead of breaking a view; a test keeps the catalog complete.

>>> t("address.city", "de")
'Ort'
>>> t("table.page", "en", page=2, pages=5, total="1,000")
'Page 2 of 5 (1,000 addresses)'

Dates: German ``dd.mm.yyyy`` (the reference's), English ISO ``yyyy-mm-dd``, which no reader takes for
mm/dd or dd/mm; times are 24-hour ``HH:MM`` in both (:func:`format_date`, :func:`format_datetime`).

>>> from datetime import datetime
>>> format_datetime(datetime(2026, 3, 4, 9, 5), "de"), format_datetime(datetime(2026, 3, 4, 9, 5), "en")
('04.03.2026 09:05', '2026-03-04 09:05')
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["DATE_FORMATS", "DEFAULT_LANGUAGE", "LANGUAGES", "catalog", "field_label", "format_count",
           "format_date", "format_datetime", "relocalize", "stored_language", "t"]

LANGUAGES: tuple[str, ...] = ("de", "en")
DEFAULT_LANGUAGE = "de"
_FALLBACK = "en"
DATE_FORMATS: dict[str, str] = {"de": "%d.%m.%Y", "en": "%Y-%m-%d"}


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


def _when(value: Any, pattern: str) -> str:
    if value is None or str(value) == "NaT":
        return ""
    return str(value.strftime(pattern)) if hasattr(value, "strftime") else str(value)


def format_date(value: Any, lang: str | None = None) -> str:
    """A date (or the date of a timestamp) as the language writes it; ``""`` for None/NaT."""
    return _when(value, DATE_FORMATS.get(lang or DEFAULT_LANGUAGE, DATE_FORMATS[_FALLBACK]))


def format_datetime(value: Any, lang: str | None = None, *, seconds: bool = False) -> str:
    """A timestamp as the language writes it, 24-hour, to the minute (or second); ``""`` for None/NaT."""
    date = DATE_FORMATS.get(lang or DEFAULT_LANGUAGE, DATE_FORMATS[_FALLBACK])
    return _when(value, f"{date} %H:%M:%S" if seconds else f"{date} %H:%M")


def field_label(key: str, lang: str | None = None) -> str:
    """The label of an address field (``company`` → Firma / Company) for a user; the key if it has none."""
    return t(f"address.{key}", lang) if f"address.{key}" in catalog() else key


@cache
def _english_pattern(key: str) -> re.Pattern[str]:
    parts = re.split(r"({\w+})", catalog()[key][_FALLBACK])
    seen: set[str] = set()
    out = []
    for part in parts:
        if re.fullmatch(r"{\w+}", part):
            name = part[1:-1]
            out.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")  # a placeholder used twice
            seen.add(name)
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + r"\Z", re.S)


def relocalize(text: str, lang: str | None, keys: Sequence[str],
               value_text: Callable[[str, str, str | None], str | None] | None = None) -> str:
    """A stored English text that was made from one of ``keys`` (``t(key, "en", ...)``), in ``lang``.

    For texts kept as English in the database (for logs and the API) but shown to users: the English
    template is matched, its values are put into the ``lang`` template. Values are relocalized the same
    way (a nested text), or given by ``value_text(name, value, lang)`` when it returns a string. A text
    no key matches comes back unchanged.
    """
    for key in keys:
        match = _english_pattern(key).match(text)
        if match is None:
            continue
        values = {}
        for name, value in match.groupdict().items():
            given = value_text(name, value, lang) if value_text else None
            values[name] = given if given is not None else relocalize(value, lang, keys, value_text)
        return t(key, lang, **values)
    return text


_page_engine: Any = None  # one in-memory DuckDB for stored_language(), as the store keeps one per process
_page_lock = threading.Lock()


def stored_language(path: str | None, user: str | None, url_user: str | None = None) -> str:
    """The UI language of ``user`` in the CRM file at ``path``, read without opening a CRM session.

    For the page Voila sends before any kernel has read the user's setting: its loading text. The user
    is ``url_user`` (a demo's ``?user=``) only where the dashboards honour it, against the sandbox tenant
    (no ``teams.tenant_id``). Any trouble (no file, a write lock held, an old schema) gives the default
    language: this only picks the words of a loading text.
    """
    global _page_engine
    if not path or path == ":memory:":
        return DEFAULT_LANGUAGE
    if str(path).startswith(("postgresql://", "postgres://")):
        return _stored_language_pg(str(path), user, url_user)
    import duckdb

    with _page_lock:
        try:
            if _page_engine is None:
                _page_engine = duckdb.connect(":memory:")
            quoted = str(path).replace("'", "''")
            for wait in (0.02, 0.05, 0.1, 0):  # a kernel writing holds the file for milliseconds; then give up
                try:
                    _page_engine.execute(f"ATTACH '{quoted}' AS crmkit_page (READ_ONLY)")
                    break
                except duckdb.IOException as exc:
                    if not wait or "lock" not in str(exc).lower():
                        raise
                    time.sleep(wait)
            try:
                tenant, default = _page_engine.execute(
                    "SELECT (SELECT value FROM crmkit_page.system_settings WHERE key = 'teams.tenant_id'), "
                    "(SELECT value FROM crmkit_page.system_settings WHERE key = 'ui.default_language')").fetchone()
                name = url_user if url_user and tenant in (None, "null", '""') else user or "admin"
                own = _page_engine.execute(
                    "SELECT value FROM crmkit_page.user_settings WHERE user_name = ? AND key = 'language'",
                    [name]).fetchone()
            finally:
                _page_engine.execute("DETACH crmkit_page")
        except (duckdb.Error, OSError):
            return DEFAULT_LANGUAGE
    return _language_of(own[0] if own else None, default)


def _language_of(own: str | None, default: str | None) -> str:
    for raw in (own, default):
        value = json.loads(raw) if raw else None
        if value in LANGUAGES:
            return str(value)
    return DEFAULT_LANGUAGE


_PG_PAGE_TIMEOUT = 3  # seconds to connect for a loading text; a server that does not answer gets the default


def _stored_language_pg(url: str, user: str | None, url_user: str | None) -> str:
    """:func:`stored_language` on a PostgreSQL database: one short read-only connection (no pool, no migration)."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=_PG_PAGE_TIMEOUT, application_name="crmkit-page") as con:
            con.read_only = True
            tenant, default = con.execute(
                "SELECT (SELECT value FROM system_settings WHERE key = 'teams.tenant_id'), "
                "(SELECT value FROM system_settings WHERE key = 'ui.default_language')").fetchone() or (None, None)
            name = url_user if url_user and tenant in (None, "null", '""') else user or "admin"
            own = con.execute("SELECT value FROM user_settings WHERE user_name = %s AND key = 'language'",
                              [name]).fetchone()
    except (psycopg.Error, OSError):
        return DEFAULT_LANGUAGE
    return _language_of(own[0] if own else None, default)
