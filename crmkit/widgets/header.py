"""The head every crmkit dashboard page shares, and how views explain a control the user may not use.

:class:`DashboardHeader` is the title with the language switch beside it and the line naming the
CRM user below (the settings pages, the user's own settings and the campaigns page use it).
:func:`disable_without` disables controls the session user lacks the right for and puts the reason
in their tooltip; the core still checks the right when it is asked.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..i18n import t
from ..rights import RIGHTS
from .common import LanguageSwitch

if TYPE_CHECKING:
    from ..crm import CRM, User

__all__ = ["DashboardHeader", "disable_without", "missing_right_text"]


class DashboardHeader(widgets.VBox):
    """Title (``title_key`` from the catalog) and language switch in one row, "CRM user: …" below.

    ``on_language(lang)`` is called when the user picks another language; the page stores it and
    calls :meth:`relabel`. Attributes: ``title``, ``language_switch``, ``user_line``.
    """

    def __init__(self, crm: CRM, title_key: str, lang: str, on_language: Callable[[str], None]) -> None:
        self.crm = crm
        self.title_key = title_key
        self.title = widgets.HTML()
        self.title.add_class("crmkit-title")
        self.language_switch = LanguageSwitch(lang, on_language)
        self.user_line = widgets.HTML()
        # crmkit-settings-user: the class the settings page's line had, which browser tests look for.
        self.user_line.add_class("crmkit-user-line")
        self.user_line.add_class("crmkit-settings-user")
        super().__init__([
            widgets.HBox([self.title, self.language_switch],
                         layout=widgets.Layout(justify_content="space-between", align_items="center")),
            self.user_line,
        ])
        self.add_class("crmkit-dashboard-header")
        self.relabel(lang)

    def relabel(self, lang: str) -> None:
        """Every text in ``lang``; the switch shows ``lang`` without calling back."""
        self.title.value = f"<h2 style='margin:4px 0'>{html.escape(t(self.title_key, lang))}</h2>"
        self.user_line.value = html.escape(t("settings.user_line", lang, user=self.crm.user.display_name))
        self.language_switch.relabel(lang)
        if self.language_switch.value != lang:
            handler = self.language_switch._on_change
            self.language_switch._on_change = lambda _lang: None
            try:
                self.language_switch.value = lang
            finally:
                self.language_switch._on_change = handler


def missing_right_text(user: User, rights: Iterable[str], lang: str) -> str | None:
    """Why ``user`` may not do what needs any of ``rights``, in ``lang``; None when they may."""
    rights = tuple(rights)
    if any(user.can(r) for r in rights):
        return None
    index = 0 if lang == "de" else 1
    labels = [RIGHTS[r][index] for r in rights]
    if len(labels) == 1:  # the same wording as the addresses and campaigns pages' tooltips
        return t("rights.missing", lang, label=labels[0], right=rights[0])
    return t("rights.missing_any", lang, rights=", ".join(labels))


def disable_without(controls: Iterable[widgets.Widget], user: User, rights: Iterable[str], lang: str) -> bool:
    """Disable ``controls`` and give them the reason as tooltip when ``user`` lacks all of ``rights``.

    Returns whether the user may use them. Controls the user may use are left as they are.
    """
    reason = missing_right_text(user, rights, lang)
    if reason is None:
        return True
    for control in controls:
        control.disabled = True
        control.tooltip = reason
    return False
