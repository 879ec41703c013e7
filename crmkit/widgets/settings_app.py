"""The settings dashboard for admins, and how a dashboard picks its CRM session.

:func:`settings_dashboard` builds the whole page: one tab each for the Teams activation, the Teams
display format, the personal-data policy with the transfer-log monitor, "My Microsoft 365
accounts", the campaign sender account, and admin consent. Every tab is an existing view; rights
are checked in the core, and a tab whose view cannot be built shows the core's refusal instead.

:func:`open_dashboard_crm` opens the session a dashboard works in: ``CRMKIT_DB`` and
``CRMKIT_USER``, and for demos against the sandbox tenant a ``?user=NAME`` URL parameter (Voila
hands the query string to the kernel).
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import ipywidgets as widgets

from ..errors import CrmkitError, UnknownUser
from ..i18n import LANGUAGES, t
from .app import wait_for_voila_request
from .common import ErrorBox, LanguageSwitch, error_html

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["SettingsApp", "open_dashboard_crm", "open_error_box", "query_user", "settings_dashboard"]

log = logging.getLogger(__name__)


def query_user(query: str | None = None) -> str | None:
    """The ``user`` parameter of the page's URL query (Voila's ``QUERY_STRING``), if any."""
    query = os.environ.get("QUERY_STRING", "") if query is None else query
    values = parse_qs(query.lstrip("?")).get("user") or []
    name = values[-1].strip() if values else ""
    return name or None


def _demo_tenant(crm: CRM) -> bool:
    """True when crmkit talks to the built-in sandbox tenant, not to a real Microsoft tenant."""
    from ..config import TeamsConfig

    try:
        return TeamsConfig.resolve(crm).sandbox
    except CrmkitError:
        return False


def open_dashboard_crm() -> CRM:
    """The CRM session of a dashboard, opened at request time.

    The user is ``CRMKIT_USER`` (default ``admin``). A ``?user=NAME`` in the page's URL picks
    another CRM user, but only while crmkit runs against the sandbox tenant: it lets a demo show
    several users from one server, and would let anyone act as anyone against a real tenant.

    Raises:
        CrmkitError: the database cannot be opened, or the user is unknown.
    """
    import crmkit

    wait_for_voila_request()
    crm = crmkit.open()
    wanted = query_user()
    if wanted and wanted != crm.user.name:
        if not _demo_tenant(crm):
            log.warning("ignoring ?user=%s: URL users are for demos against the sandbox tenant only", wanted)
            return crm
        crm.store.close()
        crm = crmkit.open(user=wanted)
    return crm


def open_error_box(exc: CrmkitError) -> widgets.HTML:
    """Why a dashboard could not open its CRM, in both languages (no session, so no language yet)."""
    key = "error.unknown_user" if isinstance(exc, UnknownUser) else "error.open"
    box = widgets.HTML("".join(error_html(exc, lang, title_key=key) for lang in LANGUAGES))
    box.add_class("crmkit-error")
    box.add_class("crmkit-open-error")
    return box


class SettingsApp(widgets.VBox):
    """The settings tabs for one session; the language switch stores the user's choice and rebuilds.

    Attributes (for tests): ``tabs`` (the Tab), ``views`` (tab key → the view or its error box),
    ``language_switch``, and the views ``teams``, ``display_format``, ``privacy``, ``transfer_log``,
    ``accounts``, ``campaign``, ``consent`` (None when that view could not be built).
    """

    TAB_KEYS: tuple[str, ...] = ("teams", "display_format", "privacy", "accounts", "campaign", "consent")

    def __init__(self, crm: CRM, *, export_dir: str | Path | None = None) -> None:
        self.crm = crm
        self.export_dir = export_dir
        self.lang = crm.language
        self.title = widgets.HTML()
        self.user_line = widgets.HTML()
        self.user_line.add_class("crmkit-settings-user")
        self.language_switch = LanguageSwitch(self.lang, self._language_picked)
        self.error = ErrorBox()
        self.tabs = widgets.Tab()
        self.tabs.add_class("crmkit-settings-tabs")
        self.views: dict[str, widgets.Widget] = {}
        super().__init__([
            widgets.HBox([self.title, self.language_switch],
                         layout=widgets.Layout(justify_content="space-between", align_items="center")),
            self.user_line, self.error, self.tabs,
        ])
        self.add_class("crmkit-settings")
        self._build()

    # -- building ----------------------------------------------------------------------------------

    def _build(self) -> None:
        lang = self.lang
        self.title.value = f"<h2 style='margin:4px 0'>{html.escape(t('settings.system', lang))}</h2>"
        self.user_line.value = html.escape(t("settings.user_line", lang, user=self.crm.user.display_name))
        self.language_switch.relabel(lang)
        m365 = None

        def teams_m365() -> object:
            nonlocal m365
            if m365 is None:
                m365 = self.crm.teams.m365
            return m365

        from .accounts import AccountsView
        from .campaign_account import AdminConsentPanel, CampaignAccountForm
        from .display_format_editor import DisplayFormatEditor
        from .teams_settings import TeamsSettings

        builders: dict[str, tuple[str, Callable[[], widgets.Widget]]] = {
            "teams": ("settings.tab.teams", lambda: TeamsSettings(self.crm, lang)),
            "display_format": ("display_format.label", lambda: DisplayFormatEditor(self.crm, lang)),
            "privacy": ("privacy.personal_data", self._privacy_tab),
            "accounts": ("m365.my_accounts", lambda: AccountsView(m365=teams_m365(), lang=lang)),  # type: ignore[arg-type]
            "campaign": ("settings.tab.campaign",
                         lambda: CampaignAccountForm(m365=teams_m365(), lang=lang)),  # type: ignore[arg-type]
            "consent": ("consent.title", lambda: AdminConsentPanel(m365=teams_m365(), lang=lang)),  # type: ignore[arg-type]
        }
        old = list(self.views.values())
        self.views = {}
        titles = []
        for key in self.TAB_KEYS:
            title_key, build = builders[key]
            self.views[key] = self._guarded(build)
            titles.append(t(title_key, lang))
        self.tabs.children = tuple(self.views.values())
        self.tabs.titles = tuple(titles)
        for w in old:
            w.close()

    def _privacy_tab(self) -> widgets.Widget:
        from ..config import crmkit_home
        from .privacy import PrivacySettings, TransferLogMonitor

        # Exports carry personal data: they go to the private CRMKIT_HOME, not the dashboards folder.
        export_dir = self.export_dir if self.export_dir is not None else crmkit_home() / "exports"
        settings = self._guarded(lambda: PrivacySettings(self.crm, self.lang))
        monitor = self._guarded(lambda: TransferLogMonitor(self.crm, self.lang, export_dir=export_dir))
        box = widgets.VBox([settings, monitor])
        box._crmkit_parts = (settings, monitor)  # type: ignore[attr-defined]
        return box

    def _guarded(self, build: Callable[[], widgets.Widget]) -> widgets.Widget:
        try:
            return build()
        except CrmkitError as exc:
            box = ErrorBox()
            box.show(exc, self.lang)
            return box
        except Exception as exc:
            log.exception("settings dashboard: a view could not be built")
            box = ErrorBox()
            box.show(exc, self.lang)
            return box

    # -- views by name (None when the view could not be built) --------------------------------------

    def _view(self, key: str, index: int | None = None) -> widgets.Widget | None:
        view = self.views.get(key)
        if index is not None and view is not None:
            view = getattr(view, "_crmkit_parts", (None, None))[index]
        return None if view is None or isinstance(view, ErrorBox) else view

    @property
    def teams(self) -> widgets.Widget | None:
        return self._view("teams")

    @property
    def display_format(self) -> widgets.Widget | None:
        return self._view("display_format")

    @property
    def privacy(self) -> widgets.Widget | None:
        return self._view("privacy", 0)

    @property
    def transfer_log(self) -> widgets.Widget | None:
        return self._view("privacy", 1)

    @property
    def accounts(self) -> widgets.Widget | None:
        return self._view("accounts")

    @property
    def campaign(self) -> widgets.Widget | None:
        return self._view("campaign")

    @property
    def consent(self) -> widgets.Widget | None:
        return self._view("consent")

    # -- events ------------------------------------------------------------------------------------

    def _language_picked(self, lang: str) -> None:
        if lang == self.lang:
            return
        try:
            self.crm.set_user_setting("language", lang)
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            self.language_switch.value = self.lang
            return
        self.error.show(None, lang)
        self.lang = lang
        selected = self.tabs.selected_index
        self._build()
        self.tabs.selected_index = selected


def settings_dashboard(crm: CRM | None = None) -> widgets.Widget:
    """The admins' settings dashboard.

    Without ``crm`` it opens the session with :func:`open_dashboard_crm` (at request time under
    Voila's preheating); if that fails it returns a box saying why instead of raising, because
    Voila hides tracebacks.
    """
    if crm is None:
        try:
            crm = open_dashboard_crm()
        except CrmkitError as exc:
            log.warning("settings dashboard: cannot open the CRM: %s", exc)
            return open_error_box(exc)
    return SettingsApp(crm)
