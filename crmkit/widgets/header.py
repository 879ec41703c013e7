"""The head every crmkit dashboard page shares.

:class:`DashboardHeader` is the title with the language switch beside it and the line naming the
CRM user below (the settings pages, the user's own settings and the campaigns page use it), then
:class:`ModeLine`, which says the mode the session was opened in (every dashboard shows it; the addresses page
under its own title row).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..errors import CrmkitError
from ..i18n import t
from ..mode import mode_text
from .common import ErrorBox, LanguageSwitch

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["DashboardHeader", "ModeLine"]


class ModeLine(widgets.HTML):
    """"Einzelplatzmodus · nur auf diesem Rechner (127.0.0.1)" or "Teammodus · angemeldet als <name>": the mode
    ``crmkit.open`` checked the session in (``crm.mode``), in the page's language; :meth:`relabel` switches it.
    ``layout``/``style``: a neighbour's that never change, shared so the page sends fewer widget models."""

    def __init__(self, crm: CRM, lang: str, **shared: widgets.Widget) -> None:
        self.crm = crm
        super().__init__(self._html(lang), _dom_classes=("crmkit-mode-line",), **shared)

    def _html(self, lang: str) -> str:
        text = html.escape(mode_text(self.crm.mode, lang, self.crm.user.display_name))
        return f"<span style='color:#616161;font-size:90%'>{text}</span>"

    def relabel(self, lang: str) -> None:
        self.value = self._html(lang)


class DashboardHeader(widgets.VBox):
    """Title (``title_key`` from the catalog) and language switch in one row, "CRM user: …" below.

    Picking another language stores it as the user's setting (for every dashboard) and relabels the
    header; then ``on_language(lang)`` rebuilds the page. A refused store shows why in ``error`` (an
    :class:`ErrorBox` the page places where it likes) and puts the switch back.
    Attributes: ``title``, ``language_switch``, ``user_line``, ``mode_line`` (:class:`ModeLine`), ``error``,
    ``lang``.
    """

    def __init__(self, crm: CRM, title_key: str, lang: str, on_language: Callable[[str], None]) -> None:
        self.crm = crm
        self.title_key = title_key
        self.lang = lang
        self._on_language = on_language
        self.error = ErrorBox()
        self.title = widgets.HTML()
        self.title.add_class("crmkit-title")
        self.language_switch = LanguageSwitch(lang, self._picked)
        self.user_line = widgets.HTML()
        # crmkit-settings-user: the class the settings page's line had, which browser tests look for.
        self.user_line.add_class("crmkit-user-line")
        self.user_line.add_class("crmkit-settings-user")
        self.mode_line = ModeLine(crm, lang, layout=self.user_line.layout, style=self.user_line.style)
        super().__init__([
            widgets.HBox([self.title, self.language_switch],
                         layout=widgets.Layout(justify_content="space-between", align_items="center")),
            self.user_line,
            self.mode_line,
        ])
        self.add_class("crmkit-dashboard-header")
        self.relabel(lang)

    def _picked(self, lang: str) -> None:
        if lang == self.lang:
            return
        try:
            self.crm.set_user_setting("language", lang)
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            self.relabel(self.lang)
            return
        self.error.show(None, lang)
        self.relabel(lang)
        self._on_language(lang)

    def relabel(self, lang: str) -> None:
        """Every text in ``lang``; the switch shows ``lang`` without calling back."""
        self.lang = lang
        self.title.value = f"<h2 style='margin:4px 0'>{html.escape(t(self.title_key, lang))}</h2>"
        self.user_line.value = html.escape(t("settings.user_line", lang, user=self.crm.user.display_name))
        self.mode_line.relabel(lang)
        self.language_switch.relabel(lang)
        if self.language_switch.value != lang:
            handler = self.language_switch._on_change
            self.language_switch._on_change = lambda _lang: None
            try:
                self.language_switch.value = lang
            finally:
                self.language_switch._on_change = handler
