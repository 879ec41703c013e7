"""The sandbox tenant's own page texts in German and English (``static/catalog.json``).

The sandbox stands for Microsoft's sign-in pages and Teams, so it keeps its own small catalog
instead of crmkit's: it must not depend on CRM internals.

Which language a page speaks:

1. ``ui_locales`` (OpenID Connect: space-separated language tags, most wanted first) where the
   flow carries it — a query parameter of ``/devicelogin``, ``/adminconsent`` and ``/authorize``,
   kept as a hidden field through the sign-in's form posts;
2. otherwise the browser's ``Accept-Language`` (highest q first, ties in the order given);
3. otherwise English, as Microsoft's sign-in falls back to English for languages it has not got.

Only German and English exist; ``de-AT`` counts as German, ``fr`` is skipped.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Literal

from starlette.requests import Request

Lang = Literal["de", "en"]
LANGUAGES: tuple[Lang, ...] = ("de", "en")
DEFAULT_LANG: Lang = "en"
_CATALOG = Path(__file__).with_name("static") / "catalog.json"


@cache
def catalog() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads(_CATALOG.read_text(encoding="utf-8"))
    return data


def t(key: str, lang: Lang, **values: object) -> str:
    """The catalog text for ``key`` in ``lang`` with ``{placeholders}`` filled (values not escaped)."""
    text = catalog()[key][lang]
    return text.format(**{k: str(v) for k, v in values.items()}) if values else text


def has(key: str) -> bool:
    return key in catalog()


def _primary(tag: str) -> Lang | None:
    head = tag.strip().split("-", 1)[0].split("_", 1)[0].lower()
    return head if head in LANGUAGES else None  # type: ignore[return-value]


def from_ui_locales(value: str | None) -> Lang | None:
    """The first German or English tag of an OIDC ``ui_locales`` value (space-separated)."""
    for tag in (value or "").split():
        lang = _primary(tag)
        if lang:
            return lang
    return None


_QUALITY = re.compile(r";\s*q\s*=\s*([0-9.]+)")


def from_accept_language(header: str | None) -> Lang | None:
    """The best German or English entry of an ``Accept-Language`` header (RFC 9110 weights)."""
    ranked: list[tuple[float, int, Lang]] = []
    for i, item in enumerate((header or "").split(",")):
        tag, _, params = item.partition(";")
        m = _QUALITY.search(";" + params) if params else None
        try:
            q = float(m.group(1)) if m else 1.0
        except ValueError:
            q = 0.0
        lang = _primary(tag)
        if lang and q > 0:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def request_lang(request: Request, ui_locales: str | None = None) -> Lang:
    """The language of the page answering ``request`` (see the module docstring)."""
    if ui_locales is None:
        ui_locales = request.query_params.get("ui_locales")
    return (from_ui_locales(ui_locales) or from_accept_language(request.headers.get("accept-language"))
            or DEFAULT_LANG)
