"""The users' own settings (»Datei: Benutzerspezifische Einstellungen«), open to every CRM user.

As in the reference, a user's Microsoft 365 accounts are under »Weitere Benutzereinstellungen«:
the accounts with what each is used for (Teams, SMTP) and »Neuen Account hinzufügen...«. The
language is the header's switch; it is the user's own setting and applies to every dashboard they
open. Nothing here needs a right: each user changes only their own settings (the core keeps the
accounts per CRM user). System matters stay on the system-wide page (:mod:`.settings_app`).
"""

from __future__ import annotations

import html
import logging
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..errors import CrmkitError
from ..i18n import t
from ..rights import RIGHTS
from .accounts import AccountsView
from .common import ErrorBox
from .header import DashboardHeader

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["MySettingsApp", "my_settings_dashboard"]

log = logging.getLogger(__name__)


class MySettingsApp(widgets.VBox):
    """Header (title, language, CRM user), the language hint, and »Weitere Benutzereinstellungen«
    with the user's Microsoft 365 accounts.

    Attributes (for tests): ``header`` (with ``title``, ``language_switch``, ``user_line``),
    ``language_hint``, ``more`` (the section heading), ``accounts`` (:class:`AccountsView`, or an
    :class:`ErrorBox` saying why it could not be built), ``system_link``, ``error``.
    """

    def __init__(self, crm: CRM) -> None:
        self.crm = crm
        self.lang = crm.language
        self.header = DashboardHeader(crm, "settings.user", self.lang, self._language_picked)
        self.language_switch = self.header.language_switch
        self.language_hint = widgets.HTML()
        self.language_hint.add_class("crmkit-language-hint")
        self.more = widgets.HTML()
        self.more.add_class("crmkit-more-user-settings")
        self.system_link = widgets.HTML()
        self.system_link.add_class("crmkit-system-settings-link")
        self.error = self.header.error
        self.accounts_box = widgets.VBox()
        self.accounts: widgets.Widget = ErrorBox()
        super().__init__([self.header, self.language_hint, self.error, self.more, self.accounts_box,
                          self.system_link])
        self.add_class("crmkit-my-settings")
        self._build()

    def _build(self) -> None:
        from .settings_app import dashboard_link

        lang = self.lang
        self.header.relabel(lang)
        self.language_hint.value = f'<p class="crmkit-muted">{html.escape(t("settings.language_hint", lang))}</p>'
        self.more.value = f"<h3 style='margin:8px 0 0'>{html.escape(t('settings.more_user_settings', lang))}</h3>"
        old, self.accounts = self.accounts, self._accounts_view()
        self.accounts_box.children = (self.accounts,)
        old.close()
        # Administrators find the system matters one click away; others have nothing to do there.
        # (sending and editing records are everyday rights, not system matters)
        admin = any(self.crm.user.can(r) for r in RIGHTS if r not in ("teams.send", "records.write"))
        self.system_link.value = "" if not admin else (
            f'<p class="crmkit-muted">{dashboard_link("settings.ipynb", t("settings.system", lang), self.crm)}</p>')

    def _accounts_view(self) -> widgets.Widget:
        try:
            return AccountsView(m365=self.crm.teams.m365, lang=self.lang)
        except Exception as exc:  # e.g. no Microsoft configuration: say why, keep the language switch working
            if not isinstance(exc, CrmkitError):
                log.exception("my settings: the accounts view could not be built")
            box = ErrorBox()
            box.show(exc, self.lang)
            return box

    def _language_picked(self, lang: str) -> None:  # stored by the header
        self.lang = lang
        self._build()


def my_settings_dashboard(crm: CRM | None = None) -> widgets.Widget:
    """The users' own settings page. Without ``crm`` it opens the dashboard's session (as the
    system settings do, ``?user=NAME`` in demos); if that fails it says why instead of raising."""
    from .settings_app import open_dashboard

    return open_dashboard(MySettingsApp, crm, "my settings")
