"""The users' own settings page (»Benutzerspezifische Einstellungen«) and the shared dashboard header."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import pytest

import crmkit
from crmkit.crm import CRM
from crmkit.widgets.accounts import AccountsView
from crmkit.widgets.campaigns import campaigns_dashboard
from crmkit.widgets.header import DashboardHeader
from crmkit.widgets.my_settings import MySettingsApp, my_settings_dashboard

pytestmark = pytest.mark.widgets


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def crm(crm: CRM) -> CRM:
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    return crm


def _texts(widget: widgets.Widget) -> list[str]:
    """Every description, label value and HTML value under ``widget`` (what a user reads)."""
    out = []
    for name in ("description", "value"):
        value = getattr(widget, name, None)
        if isinstance(value, str) and value:
            out.append(value)
    for child in getattr(widget, "children", ()):
        out += _texts(child)
    return out


@pytest.mark.parametrize("user", ["anna", "vera"])
def test_every_user_gets_language_and_their_accounts(crm: CRM, user: str) -> None:
    app = my_settings_dashboard(CRM(crm.store, user))
    assert isinstance(app, MySettingsApp)
    assert "Benutzerspezifische Einstellungen" in app.header.title.value
    assert ("Anna Schmidt" if user == "anna" else "Vera Viewer") in app.header.user_line.value
    assert "Weitere Benutzereinstellungen" in app.more.value
    accounts = app.accounts
    assert isinstance(accounts, AccountsView)
    assert accounts.add.description == "Neuen Account hinzufügen..." and not accounts.add.disabled
    assert app.system_link.value == ""  # nothing for them on the system page


def test_the_two_rows_of_teams_smtp_boxes_are_labelled(crm: CRM) -> None:
    view = AccountsView(CRM(crm.store, "anna"), lang="de")
    texts = _texts(view)
    assert "Verwendung des ausgewählten Accounts:" in texts and "Verwendung eines neuen Accounts:" in texts
    new_row = next(c for c in view.children if "crmkit-m365-new" in c._dom_classes)
    assert list(new_row.children[:3]) == [view.new_label, view.new_teams, view.new_smtp]
    edit_row = view.edit.children[1]
    assert list(edit_row.children[:3]) == [view.edit_label, view.use_teams, view.use_smtp]
    english = AccountsView(CRM(crm.store, "anna"), lang="en")
    assert english.new_label.value == "Usage of a new account:"


def test_the_language_is_the_users_own_setting_and_relabels_the_page(crm: CRM) -> None:
    anna = CRM(crm.store, "anna")
    app = MySettingsApp(anna)
    old_accounts = app.accounts
    app.language_switch.value = "en"
    assert anna.user_setting("language") == "en" and crm.user_setting("language") is None
    assert "User settings" in app.header.title.value and "More user settings" in app.more.value
    assert app.accounts.add.description == "Add new account..."  # type: ignore[attr-defined]
    assert old_accounts.comm is None  # the German view was closed, not left in the kernel
    assert "CRM user: Anna Schmidt" in app.header.user_line.value


def test_admins_find_the_system_settings_one_click_away(crm: CRM) -> None:
    app = MySettingsApp(crm)
    assert 'href="settings.ipynb' in app.system_link.value and "Systemweite Einstellungen" in app.system_link.value


def test_the_page_opens_from_the_environment_and_explains_a_bad_user(db_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    admin = crmkit.open(db_path)
    admin.add_user("anna", "Anna Schmidt", roles=["sales"])
    admin.store.close()
    monkeypatch.setenv("CRMKIT_DB", str(db_path))
    monkeypatch.setenv("QUERY_STRING", "user=anna")
    app = my_settings_dashboard()
    assert isinstance(app, MySettingsApp) and app.crm.user.name == "anna"
    monkeypatch.setenv("QUERY_STRING", "user=nobody")
    box = my_settings_dashboard()
    assert "crmkit-open-error" in box._dom_classes and "Unknown CRM user" in box.value


def test_campaigns_page_has_the_same_header(crm: CRM) -> None:
    vera = CRM(crm.store, "vera")
    page = campaigns_dashboard(vera)
    assert isinstance(page.header, DashboardHeader)  # type: ignore[attr-defined]
    assert "Kampagnen" in page.header.title.value  # type: ignore[attr-defined]
    assert "CRM-Benutzer: Vera Viewer" in page.header.user_line.value  # type: ignore[attr-defined]
    assert "crmkit-settings-user" in page.header.user_line._dom_classes  # type: ignore[attr-defined]
    recorder = page.recorder  # type: ignore[attr-defined]
    page.header.language_switch.value = "en"  # type: ignore[attr-defined]
    assert vera.user_setting("language") == "en"
    assert "Campaigns" in page.header.title.value and "CRM user: Vera Viewer" in page.header.user_line.value  # type: ignore[attr-defined]
    assert page.recorder is not recorder and page.recorder.lang == "en"  # type: ignore[attr-defined]
    assert recorder.comm is None


@pytest.mark.parametrize("page", ["settings", "my_settings", "campaigns"])
def test_a_refused_language_change_says_why_and_changes_nothing(crm: CRM, page: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from crmkit.errors import DatabaseLocked
    from crmkit.widgets.common import error_html
    from crmkit.widgets.settings_app import SettingsApp

    builders = {"settings": SettingsApp, "my_settings": MySettingsApp, "campaigns": campaigns_dashboard}
    view = builders[page](crm)
    header: DashboardHeader = view.header

    def locked(name: str, value: object) -> None:
        raise DatabaseLocked("the CRM database is busy")

    with monkeypatch.context() as mp:
        mp.setattr(crm, "set_user_setting", locked)
        header.language_switch.value = "en"
    assert header.language_switch.value == "de" and view.lang == "de" and header.lang == "de"
    assert isinstance(view.error.exc, DatabaseLocked) and view.error.layout.display is None  # shown
    assert view.error.value == error_html(view.error.exc, "de")  # in the language still on the page
    assert crm.language == "de"  # nothing stored

    header.language_switch.value = "en"  # the next pick goes through, and the page follows
    assert crm.language == "en" and view.lang == "en" and header.lang == "en" and view.error.exc is None
    assert "CRM user" in header.user_line.value
