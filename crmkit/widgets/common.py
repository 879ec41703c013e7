"""Pieces every crmkit view shares: friendly error boxes and the language switch."""

from __future__ import annotations

import html
from collections.abc import Callable

import ipywidgets as widgets

from ..errors import (
    CrmkitError,
    DatabaseLocked,
    NotFound,
    PermissionDenied,
    StoreError,
    UnknownUser,
    ValidationError,
)
from ..i18n import LANGUAGES, t

__all__ = ["ErrorBox", "LanguageSwitch", "error_html", "error_title_key"]

# Most specific first: the first isinstance match names the title.
_TITLES: tuple[tuple[type[BaseException], str], ...] = (
    (DatabaseLocked, "error.locked"),
    (UnknownUser, "error.unknown_user"),
    (StoreError, "error.store"),
    (PermissionDenied, "error.permission"),
    (ValidationError, "error.validation"),
    (NotFound, "error.not_found"),
    (CrmkitError, "error.title"),
)


def error_title_key(exc: BaseException) -> str:
    """The catalog key of the headline for an error."""
    for kind, key in _TITLES:
        if isinstance(exc, kind):
            return key
    return "error.unexpected"


def error_html(exc: BaseException, lang: str, *, title_key: str | None = None) -> str:
    """An escaped, friendly HTML message: a headline per error type and the core's advice.

    Errors crmkit did not raise on purpose show only a generic line: their text can carry
    internals (paths, SQL) and is in the server log anyway.
    """
    key = title_key or error_title_key(exc)
    body = f"<b>{html.escape(t(key, lang))}</b>"
    if isinstance(exc, CrmkitError) and str(exc):
        body += f"<br>{html.escape(exc.text(lang))}"
    return f'<div role="alert" style="color:#a4000f;padding:4px 0">{body}</div>'


class ErrorBox(widgets.HTML):
    """Shows one error, or nothing (hidden) when ``show(None)``."""

    def __init__(self) -> None:
        super().__init__(value="", layout=widgets.Layout(display="none"))
        self.add_class("crmkit-error")
        self.exc: BaseException | None = None

    def show(self, exc: BaseException | None, lang: str) -> None:
        self.exc = exc
        self.value = "" if exc is None else error_html(exc, lang)
        self.layout.display = "none" if exc is None else None


class LanguageSwitch(widgets.Dropdown):
    """German / English; calls ``on_change(lang)`` when the user picks one."""

    def __init__(self, lang: str, on_change: Callable[[str], None]) -> None:
        super().__init__(
            options=[(t(f"language.{code}", code), code) for code in LANGUAGES], value=lang,
            description=t("language.label", lang), layout=widgets.Layout(width="auto"),
            style={"description_width": "initial"},
        )
        self.add_class("crmkit-language")
        self._on_change = on_change
        self.observe(self._changed, "value")

    def _changed(self, change: dict[str, object]) -> None:
        self._on_change(str(change["new"]))

    def relabel(self, lang: str) -> None:
        self.description = t("language.label", lang)
