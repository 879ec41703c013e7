"""The settings dashboard for admins, and how a dashboard picks its CRM session.

:func:`settings_dashboard` builds the whole page: one tab each for the Teams activation, the Teams
display format, the personal-data policy with the transfer-log monitor, "My Microsoft 365
accounts", the campaign sender account, and admin consent. Every tab is an existing view; rights
are checked in the core, and a tab whose view cannot be built shows the core's refusal instead.
A tab's view is built when the tab is first shown: the page comes up with one view's widgets,
not all six (the display format editor alone has some 300), which is what makes it interactive
about as fast as a one-button notebook. The view modules are imported when this module is, so
under Voila's preheating that cost is paid before anyone asks for the page.

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

from ..auth import Microsoft365
from ..errors import CrmkitError, UnknownUser
from ..i18n import LANGUAGES, t
from .accounts import AccountsView
from .app import wait_for_voila_request
from .campaign_account import AdminConsentPanel, CampaignAccountForm
from .common import ErrorBox, LanguageSwitch, error_html
from .display_format_editor import DisplayFormatEditor
from .privacy import PrivacySettings, TransferLogMonitor
from .teams_settings import TeamsSettings

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

    Each tab's view is built the first time the tab is selected (or its property below is read).

    Attributes (for tests): ``tabs`` (the Tab), ``views`` (tab key → the view or its error box, for
    the tabs built so far), ``language_switch``, and the views ``teams``, ``display_format``,
    ``privacy``, ``transfer_log``, ``accounts``, ``campaign``, ``consent`` (built on first access;
    None when that view could not be built).
    """

    TAB_KEYS: tuple[str, ...] = ("teams", "display_format", "privacy", "accounts", "campaign", "consent")
    TAB_TITLES: dict[str, str] = {
        "teams": "settings.tab.teams", "display_format": "display_format.label", "privacy": "privacy.personal_data",
        "accounts": "m365.my_accounts", "campaign": "settings.tab.campaign", "consent": "consent.title",
    }

    def __init__(self, crm: CRM, *, export_dir: str | Path | None = None) -> None:
        self.crm = crm
        self.export_dir = export_dir
        self.lang = crm.language
        self._m365: Microsoft365 | None = None
        self.title = widgets.HTML()
        self.user_line = widgets.HTML()
        self.user_line.add_class("crmkit-settings-user")
        self.language_switch = LanguageSwitch(self.lang, self._language_picked)
        self.error = ErrorBox()
        # One pane per tab; a pane gets its view when the tab is first shown.
        self.panes = {key: widgets.VBox() for key in self.TAB_KEYS}
        for key, pane in self.panes.items():
            pane.add_class(f"crmkit-settings-pane-{key}")
        self.tabs = widgets.Tab(children=tuple(self.panes.values()), selected_index=0)
        self.tabs.add_class("crmkit-settings-tabs")
        self.views: dict[str, widgets.Widget] = {}
        super().__init__([
            widgets.HBox([self.title, self.language_switch],
                         layout=widgets.Layout(justify_content="space-between", align_items="center")),
            self.user_line, self.error, self.tabs,
        ])
        self.add_class("crmkit-settings")
        self._build()
        self.tabs.observe(self._tab_selected, "selected_index")

    # -- building ----------------------------------------------------------------------------------

    def _build(self) -> None:
        """Label everything in ``self.lang``, drop the built views, and build the selected tab's."""
        lang = self.lang
        self.title.value = f"<h2 style='margin:4px 0'>{html.escape(t('settings.system', lang))}</h2>"
        self.user_line.value = html.escape(t("settings.user_line", lang, user=self.crm.user.display_name))
        self.language_switch.relabel(lang)
        self.tabs.titles = tuple(t(self.TAB_TITLES[key], lang) for key in self.TAB_KEYS)
        old, self.views = self.views, {}
        for pane in self.panes.values():
            pane.children = ()
        for view in old.values():
            view.close()
        self._ensure(self.TAB_KEYS[self.tabs.selected_index or 0])

    def _ensure(self, key: str) -> widgets.Widget:
        """The view of tab ``key``, built now if it was not yet (or its error box)."""
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = self._guarded(getattr(self, f"_{key}_tab"))
            self.panes[key].children = (view,)
        return view

    def _tab_selected(self, change: dict[str, object]) -> None:
        index = change["new"]
        if isinstance(index, int) and 0 <= index < len(self.TAB_KEYS):
            self._ensure(self.TAB_KEYS[index])

    def _m365_service(self) -> Microsoft365:
        if self._m365 is None:  # one Microsoft 365 service for the three account tabs
            self._m365 = self.crm.teams.m365
        return self._m365

    def _teams_tab(self) -> widgets.Widget:
        return TeamsSettings(self.crm, self.lang)

    def _display_format_tab(self) -> widgets.Widget:
        return DisplayFormatEditor(self.crm, self.lang)

    def _accounts_tab(self) -> widgets.Widget:
        return AccountsView(m365=self._m365_service(), lang=self.lang)

    def _campaign_tab(self) -> widgets.Widget:
        return CampaignAccountForm(m365=self._m365_service(), lang=self.lang)

    def _consent_tab(self) -> widgets.Widget:
        return AdminConsentPanel(m365=self._m365_service(), lang=self.lang)

    def _privacy_tab(self) -> widgets.Widget:
        from ..config import crmkit_home

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
        view = self._ensure(key)
        if index is not None:
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
