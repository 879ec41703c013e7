"""The system-wide settings dashboard (»Systemweite Einstellungen«), and how a dashboard picks its CRM session.

:func:`settings_dashboard` builds the whole page: one tab each for the Teams activation, the Teams
display format, the personal-data policy with the transfer-log monitor, the contact types, the
campaign sender account, admin consent, and the directory account each CRM user signs in with
(:mod:`crmkit.widgets.directory_links`). A user's own Microsoft 365 accounts and language are
not system matters: they live on the users' own page (:mod:`crmkit.widgets.my_settings`), which
this page links to. Every tab is an existing view; rights are checked in the core (controls the
user may not use are disabled, the missing right in the tooltip), and a tab whose view cannot be
built shows the core's refusal instead.
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
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs

import ipywidgets as widgets

from ..auth import Microsoft365
from ..errors import CrmkitError, UnknownUser
from ..i18n import LANGUAGES, t
from .app import wait_for_voila_request
from .campaign_account import AdminConsentPanel, CampaignAccountForm
from .common import ErrorBox, error_html
from .contact_types import ContactTypesView
from .directory_links import DirectoryLinksView
from .display_format_editor import DisplayFormatEditor
from .header import DashboardHeader
from .privacy import PrivacySettings, TransferLogMonitor
from .record_link import RecordLinkSetting
from .teams_settings import TeamsSettings

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["SettingsApp", "dashboard_link", "open_dashboard", "open_dashboard_crm", "open_error_box", "query_user",
           "settings_dashboard"]

W = TypeVar("W", bound=widgets.Widget)

log = logging.getLogger(__name__)


def query_user(query: str | None = None) -> str | None:
    """The ``user`` parameter of the page's URL query (Voila's ``QUERY_STRING``), if any."""
    query = os.environ.get("QUERY_STRING", "") if query is None else query
    values = parse_qs(query.lstrip("?")).get("user") or []
    name = values[-1].strip() if values else ""
    return name or None


def dashboard_link(notebook: str, text: str, crm: CRM) -> str:
    """An HTML link to another dashboard next to this one (Voila serves them side by side), keeping
    a demo's ``?user=NAME`` so the page opens as the same CRM user."""
    user = query_user()
    href = notebook + (f"?user={html.escape(crm.user.name)}" if user and user == crm.user.name else "")
    return (f'<a href="{html.escape(href)}" target="_self" style="color:#0f6cbd;text-decoration:underline">'
            f"{html.escape(text)}</a>")


def _demo_tenant(crm: CRM) -> bool:
    """True when crmkit talks to the built-in sandbox tenant, not to a real Microsoft tenant."""
    from ..config import TeamsConfig

    try:
        return TeamsConfig.resolve(crm).sandbox
    except CrmkitError:
        return False


_duckdb_warm = False


def _warm_duckdb() -> None:
    """Pay DuckDB's first-use costs (its first instance, first query, first DataFrame: ~20 ms) while a
    preheated kernel waits for its visitor, not after the request (the first store is ~5 ms quicker).
    Touches no database file: the data is read at request time."""
    global _duckdb_warm
    if _duckdb_warm:
        return
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SELECT 1 AS warm").df()
    finally:
        con.close()
    _duckdb_warm = True


def open_dashboard_crm() -> CRM:
    """The CRM session of a dashboard, opened at request time.

    The user is ``CRMKIT_USER`` (default ``admin``). A ``?user=NAME`` in the page's URL picks
    another CRM user, but only while crmkit runs against the sandbox tenant: it lets a demo show
    several users from one server, and would let anyone act as anyone against a real tenant. In team mode
    (:mod:`crmkit.mode`) a ``?user=`` naming anyone but the signed-in user is refused like ``user=``.

    Raises:
        CrmkitError: the database cannot be opened, or the user is unknown.
        TeamSignInRequired: team mode, and the session would come from a name (``crmkit.open`` says why).
    """
    import crmkit

    if os.environ.get("VOILA_PREHEAT") == "True":
        _warm_duckdb()
    wait_for_voila_request()
    crm = crmkit.open()
    wanted = query_user()
    if wanted and wanted != crm.user.name:
        if crm.mode == "team":  # a name in the URL is no sign-in: the core's refusal says how to sign in
            crm.store.close()
            return crmkit.open(user=wanted)  # TeamSignInRequired (wanted is not the login's user)
        if not _demo_tenant(crm):
            log.warning("ignoring ?user=%s: URL users are for demos against the sandbox tenant only", wanted)
            return crm
        crm.store.close()
        crm = crmkit.open(user=wanted)
    return crm


def open_dashboard(build: Callable[[CRM], W], crm: CRM | None, page: str) -> W | widgets.HTML:
    """``build(crm)``; without ``crm`` the session comes from :func:`open_dashboard_crm`, and a failure
    returns :func:`open_error_box` instead of raising, because Voila hides tracebacks."""
    if crm is None:
        try:
            crm = open_dashboard_crm()
        except CrmkitError as exc:
            log.warning("%s dashboard: cannot open the CRM: %s", page, exc)
            return open_error_box(exc)
    return build(crm)


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
    the tabs built so far), ``header`` with ``title``, ``language_switch``, ``user_line``,
    ``user_settings`` (the link to the user's own settings page), and the views ``teams``,
    ``display_format``, ``privacy``, ``transfer_log``, ``contact_types``, ``campaign``, ``consent``,
    ``directory_links`` (built on first access; None when that view could not be built).
    """

    TAB_KEYS: tuple[str, ...] = ("teams", "display_format", "privacy", "contact_types", "campaign", "consent",
                                 "directory_links")
    TAB_TITLES: dict[str, str] = {
        "teams": "settings.tab.teams", "display_format": "display_format.label", "privacy": "privacy.personal_data",
        "contact_types": "settings.tab.contact_types", "campaign": "settings.tab.campaign",
        "consent": "consent.title", "directory_links": "settings.tab.directory_links",
    }

    def __init__(self, crm: CRM, *, export_dir: str | Path | None = None) -> None:
        # The build's reads (language, the first tab's data) share one attachment of the file, which
        # is released when the page is built (issue 12, item 13: one ATTACH instead of six).
        with crm.store.read_session():
            self._init(crm, export_dir)
        self.tabs.observe(self._tab_selected, "selected_index")

    def _init(self, crm: CRM, export_dir: str | Path | None) -> None:
        self.crm = crm
        self.export_dir = export_dir
        self.lang = crm.language
        self._m365: Microsoft365 | None = None
        self.header = DashboardHeader(crm, "settings.system", self.lang, self._language_picked)
        self.title, self.language_switch, self.user_line = (
            self.header.title, self.header.language_switch, self.header.user_line)
        # Each widget model is a message to the browser and a view it builds before the page is
        # interactive, and each change after construction one more (item 13): widgets whose layout
        # never changes share one Layout, and the first build passes classes, texts and children to
        # the constructors instead of setting them afterwards (what _build does on a language switch).
        fixed = widgets.Layout()
        # The user line's style too (never changed): the seventh tab's pane costs no model more.
        self.user_settings = widgets.HTML(self._user_settings_html(), layout=fixed, style=self.header.user_line.style,
                                          _dom_classes=("crmkit-user-settings-link",))
        self.error = self.header.error
        # One pane per tab; a pane gets its view when the tab is first shown, the first one now.
        first = self.TAB_KEYS[0]
        self.views: dict[str, widgets.Widget] = {first: self._guarded(getattr(self, f"_{first}_tab"))}
        self.panes = {key: widgets.VBox((self.views[key],) if key in self.views else (), layout=fixed,
                                        _dom_classes=(f"crmkit-settings-pane-{key}",))
                      for key in self.TAB_KEYS}
        self.tabs = widgets.Tab(children=tuple(self.panes.values()), selected_index=0, titles=self._tab_titles(),
                                _dom_classes=("crmkit-settings-tabs",))
        super().__init__([self.header, self.user_settings, self.error, self.tabs], _dom_classes=("crmkit-settings",))

    # -- building ----------------------------------------------------------------------------------

    def _build(self) -> None:
        """Label everything in ``self.lang``, drop the built views, and build the selected tab's."""
        self.header.relabel(self.lang)
        self.user_settings.value = self._user_settings_html()
        self.tabs.titles = self._tab_titles()
        old, self.views = self.views, {}
        for pane in self.panes.values():
            pane.children = ()
        for view in old.values():
            view.close()
        self._ensure(self.TAB_KEYS[self.tabs.selected_index or 0])

    def _user_settings_html(self) -> str:
        link = dashboard_link("my_settings.ipynb", t("settings.user", self.lang), self.crm)
        return f'<p class="crmkit-muted">{t("settings.user_settings_hint", self.lang, link=link)}</p>'

    def _tab_titles(self) -> tuple[str, ...]:
        return tuple(t(self.TAB_TITLES[key], self.lang) for key in self.TAB_KEYS)

    def _ensure(self, key: str) -> widgets.Widget:
        """The view of tab ``key``, built now if it was not yet (or its error box)."""
        view = self.views.get(key)
        if view is None:
            with self.crm.store.read_session():  # a tab's reads: one attachment, released when built
                view = self.views[key] = self._guarded(getattr(self, f"_{key}_tab"))
            self.panes[key].children = (view,)
        return view

    def _tab_selected(self, change: dict[str, object]) -> None:
        index = change["new"]
        if isinstance(index, int) and 0 <= index < len(self.TAB_KEYS):
            self._ensure(self.TAB_KEYS[index])

    def _m365_service(self) -> Microsoft365:
        if self._m365 is None:  # one Microsoft 365 service for the two account tabs
            self._m365 = self.crm.teams.m365
        return self._m365

    def _teams_tab(self) -> widgets.Widget:
        return TeamsSettings(self.crm, self.lang, on_open_contact_types=self.show_contact_types)

    def _display_format_tab(self) -> widgets.Widget:
        # What a Teams message shows: the fields, and where its »Im CRM öffnen« leads (crmkit.record_links)
        editor = self._guarded(lambda: DisplayFormatEditor(self.crm, self.lang))
        link = self._guarded(lambda: RecordLinkSetting(self.crm, self.lang))
        return _Parts(editor, link)

    def _contact_types_tab(self) -> widgets.Widget:
        return ContactTypesView(self.crm, self.lang)

    def show_contact_types(self, code: str | None = None) -> widgets.Widget | None:
        """Open the contact-type tab (re-read), on the type with ``code`` if given: the Teams
        refusal's way out when another type holds TS."""
        self.tabs.selected_index = self.TAB_KEYS.index("contact_types")
        view = self.contact_types
        if isinstance(view, ContactTypesView):
            view.refresh(select=code)
        return view

    def _campaign_tab(self) -> widgets.Widget:
        return CampaignAccountForm(m365=self._m365_service(), lang=self.lang)

    def _consent_tab(self) -> widgets.Widget:
        return AdminConsentPanel(m365=self._m365_service(), lang=self.lang)

    def _directory_links_tab(self) -> widgets.Widget:
        return DirectoryLinksView(self.crm, self.lang)

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
        return self._view("display_format", 0)

    @property
    def record_link(self) -> widgets.Widget | None:
        """The link base of »Im CRM öffnen« (:class:`~crmkit.widgets.record_link.RecordLinkSetting`), in the
        display format's tab."""
        return self._view("display_format", 1)

    @property
    def privacy(self) -> widgets.Widget | None:
        return self._view("privacy", 0)

    @property
    def transfer_log(self) -> widgets.Widget | None:
        return self._view("privacy", 1)

    @property
    def contact_types(self) -> widgets.Widget | None:
        return self._view("contact_types")

    @property
    def campaign(self) -> widgets.Widget | None:
        return self._view("campaign")

    @property
    def consent(self) -> widgets.Widget | None:
        return self._view("consent")

    @property
    def directory_links(self) -> widgets.Widget | None:
        return self._view("directory_links")

    # -- events ------------------------------------------------------------------------------------

    def _language_picked(self, lang: str) -> None:  # stored by the header
        self.lang = lang
        selected = self.tabs.selected_index
        self._build()
        self.tabs.selected_index = selected


class _Parts(widgets.VBox):
    """A tab of several views, one below the other; closing it closes them too."""

    def __init__(self, *parts: widgets.Widget) -> None:
        super().__init__(parts)
        self._crmkit_parts = parts

    def close(self) -> None:
        for part in self._crmkit_parts:
            part.close()
        super().close()


def settings_dashboard(crm: CRM | None = None) -> widgets.Widget:
    """The system-wide settings dashboard (admins; others see the same page read-only).

    Without ``crm`` it opens the session with :func:`open_dashboard_crm` (at request time under
    Voila's preheating); if that fails it returns a box saying why instead of raising, because
    Voila hides tracebacks.
    """
    return open_dashboard(SettingsApp, crm, "settings")
