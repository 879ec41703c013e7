"""The settings dashboard, and how dashboards open their session (CRMKIT_USER, ``?user=`` for demos)."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import pytest

import crmkit
from crmkit import privacy
from crmkit.crm import CRM
from crmkit.errors import PermissionDenied
from crmkit.teams import activation, display_format
from crmkit.widgets.campaigns import campaigns_dashboard
from crmkit.widgets.common import ErrorBox
from crmkit.widgets.my_settings import my_settings_dashboard
from crmkit.widgets.settings_app import (
    SettingsApp,
    open_dashboard_crm,
    query_user,
    settings_dashboard,
)
from crmkit.widgets.teams_action import teams_address_dashboard

pytestmark = pytest.mark.widgets


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The account views resolve the Microsoft configuration; keep its secrets folder private to the test.
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def crm(crm: CRM) -> CRM:
    crm.add_address(company="Muster GmbH", city="Köln", country="DE", phone="0221 123456")
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    return crm


def test_admin_sees_every_tab_in_the_users_language(crm: CRM) -> None:
    app = settings_dashboard(crm)
    assert isinstance(app, SettingsApp)
    # The user's own accounts moved to the users' page (issue 12, item 8); contact types came in (item 9).
    assert app.tabs.titles == ("Microsoft Teams", "Anzeigeformat", "Personenbezogene Daten", "Kontaktarten",
                               "Kampagnen Account", "Administratorzustimmung", "Verzeichniskonten")
    for view in (app.teams, app.display_format, app.privacy, app.transfer_log, app.contact_types, app.campaign,
                 app.consent, app.directory_links):
        assert view is not None
    assert not hasattr(app, "accounts")
    assert "Systemweite Einstellungen" in app.title.value and "Administrator" in app.user_line.value
    assert 'href="my_settings.ipynb' in app.user_settings.value
    assert "Benutzerspezifische Einstellungen" in app.user_settings.value
    app.consent.organization.checkbox.value = True  # type: ignore[union-attr]
    assert crm.teams.m365.consent_url().split("?")[0] in app.consent.organization.link.value  # type: ignore[union-attr]
    app.consent.add("eva@contoso.example")  # type: ignore[union-attr]
    assert "eva@contoso.example" in app.consent.rows["eva@contoso.example"].box.children[0].description  # type: ignore[union-attr]
    app.consent.close()  # type: ignore[union-attr]  # stops its watch of the link handed out


def test_a_tab_is_built_when_first_shown(crm: CRM) -> None:
    app = SettingsApp(crm)
    assert list(app.views) == ["teams"]  # the page comes up with the Teams switch only
    assert app.panes["display_format"].children == ()
    app.tabs.selected_index = 1
    assert list(app.views) == ["teams", "display_format"]
    assert app.panes["display_format"].children == (app.views["display_format"],)
    editor = app.views["display_format"]
    app.tabs.selected_index = 0
    app.tabs.selected_index = 1
    assert app.views["display_format"] is editor  # built once, kept while the language stays
    app.language_switch.value = "en"
    assert list(app.views) == ["display_format"] and app.tabs.selected_index == 1
    assert editor.comm is None  # the old view is closed, not left behind in the kernel
    assert app.panes["teams"].children == ()


def test_activate_and_edit_the_display_format(crm: CRM) -> None:
    app = SettingsApp(crm)
    app.teams.enabled.value = True  # type: ignore[union-attr]
    assert crm.setting("teams.enabled") is True
    assert "TS" in crm.contact_types()["code"].tolist()
    assert "aktiviert" in app.teams.status.value  # type: ignore[union-attr]

    editor = app.display_format
    before = editor.card_preview.value  # type: ignore[union-attr]
    row = editor.rows[editor.fmt.index("company")]  # type: ignore[union-attr]
    row.label_de.value = "Unternehmen"
    after = editor.card_preview.value  # type: ignore[union-attr]
    assert after != before and "Unternehmen" in after
    editor.save_button.click()  # type: ignore[union-attr]
    stored = display_format.load_format(crm)
    assert stored.fields[stored.index("company")].label_de == "Unternehmen"


def test_language_switch_stores_the_setting_and_rebuilds(crm: CRM) -> None:
    app = SettingsApp(crm)
    app.tabs.selected_index = 2
    app.language_switch.value = "en"
    assert crm.user_setting("language") == "en"
    assert app.tabs.titles[:3] == ("Microsoft Teams", "Display format", "Personal data")
    assert app.tabs.selected_index == 2
    assert "System-wide settings" in app.title.value
    assert app.teams.enabled.description == "Enable Microsoft Teams integration"  # type: ignore[union-attr]


def test_a_sales_user_sees_read_only_views_and_the_cores_refusals(crm: CRM) -> None:
    anna = CRM(crm.store, "anna")
    app = SettingsApp(anna)
    assert app.teams.enabled.disabled  # type: ignore[union-attr]
    assert app.display_format.save_button.disabled  # type: ignore[union-attr]
    monitor = app.transfer_log
    assert isinstance(monitor.error.exc, PermissionDenied)  # type: ignore[union-attr]
    assert "Dafür fehlt Ihnen das Recht" in monitor.error.value  # type: ignore[union-attr]
    # the right is checked in the core, not only by the disabled box
    with pytest.raises(PermissionDenied):
        activation.set_enabled(anna, True)


def test_a_view_that_cannot_be_built_shows_why_and_the_rest_works(crm: CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise PermissionDenied("No privacy for you.", right="privacy.admin")

    monkeypatch.setattr(privacy, "policies", refuse)
    app = SettingsApp(crm)
    assert app.privacy is None and app.transfer_log is not None and app.teams is not None
    box = app.views["privacy"].children[0]  # type: ignore[attr-defined]
    assert isinstance(box, ErrorBox) and "No privacy for you." in box.value


def test_query_user() -> None:
    assert query_user("user=anna") == "anna"
    assert query_user("?foo=1&user=%20eva%20") == "eva"
    assert query_user("foo=1") is None and query_user("user=") is None and query_user("") is None


def test_dashboards_open_the_env_user_or_the_url_user_in_demos(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = crmkit.open(db_path)
    admin.add_user("anna", "Anna Schmidt", roles=["sales"])
    admin.store.close()
    monkeypatch.setenv("CRMKIT_DB", str(db_path))
    monkeypatch.setenv("CRMKIT_USER", "admin")
    assert open_dashboard_crm().user.name == "admin"
    monkeypatch.setenv("QUERY_STRING", "user=anna")
    assert open_dashboard_crm().user.name == "anna"  # sandbox tenant: a demo
    assert campaigns_dashboard().crm.user.name == "anna"  # every dashboard opens the same way
    monkeypatch.setenv("CRMKIT_TENANT_ID", "contoso.example")
    monkeypatch.setenv("CRMKIT_CLIENT_ID", "5e1c7a0d-3b2f-4d8e-9c6a-7f0b1e2d3c4a")
    assert open_dashboard_crm().user.name == "admin"  # a real tenant: the URL picks nobody


def test_unknown_user_gets_an_explanation_not_a_traceback(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crmkit.open(db_path).store.close()
    monkeypatch.setenv("CRMKIT_DB", str(db_path))
    monkeypatch.setenv("QUERY_STRING", "user=nobody")
    for build in (settings_dashboard, teams_address_dashboard, campaigns_dashboard, my_settings_dashboard):
        box = build()
        assert isinstance(box, widgets.HTML) and "crmkit-open-error" in box._dom_classes
        assert "Unbekannter CRM-Benutzer" in box.value and "Unknown CRM user" in box.value


def test_addresses_dashboard_carries_the_teams_action(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crm = crmkit.open(db_path)
    crm.add_address(company="Muster GmbH", city="Köln")
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    crm.store.close()
    monkeypatch.setenv("CRMKIT_DB", str(db_path))
    monkeypatch.setenv("QUERY_STRING", "user=anna")
    table = teams_address_dashboard()
    action = table.teams_action
    assert action.crm.user.name == "anna" and action.button.disabled
    table.selected_ids = [1]
    action.button.click()
    assert "ausgeschaltet" in action.error.value or "switched off" in action.error.value


# -- issue 12: contact types as the TS clash's way out; disabled actions say why -------------------------------

def test_the_ts_refusal_opens_the_contact_types_and_the_fix_lets_teams_on(crm: CRM) -> None:
    crm.add_contact_type("TS", "Telefonschulung")
    app = SettingsApp(crm)
    teams = app.teams
    teams.enabled.value = True  # type: ignore[union-attr]
    assert crm.setting("teams.enabled") is False and teams.enabled.value is False  # type: ignore[union-attr]
    assert "Telefonschulung" in teams.error.value  # type: ignore[union-attr]
    button = teams.open_contact_types  # type: ignore[union-attr]
    assert button.layout.display is None and button.description == "Kontaktarten öffnen"
    button.click()
    assert app.TAB_KEYS[app.tabs.selected_index] == "contact_types"  # type: ignore[index]
    types = app.contact_types
    assert types.choice.value == "TS"  # type: ignore[union-attr]  # on the type that holds the code
    assert "Telefonschulung" in types.table.value  # type: ignore[union-attr]
    types.new_code.value = "TSCH"  # type: ignore[union-attr]
    types.change_code.click()  # type: ignore[union-attr]
    assert "»TSCH«" in types.status.value and types.error.exc is None  # type: ignore[union-attr]
    assert crm.store.one("SELECT label FROM contact_types WHERE code = 'TSCH'") == "Telefonschulung"
    assert crm.audit_log(scope="contact_types").iloc[0]["new_value"] == '"TSCH"'
    app.tabs.selected_index = 0
    teams.enabled.value = True  # type: ignore[union-attr]
    assert crm.setting("teams.enabled") is True and button.layout.display == "none"
    assert crm.store.one("SELECT label FROM contact_types WHERE code = 'TS'") == "Teams"


def test_contact_types_tab_refuses_bad_input_in_the_users_language(crm: CRM) -> None:
    types = SettingsApp(crm).contact_types
    types.choice.value = "TEL"  # type: ignore[union-attr]
    for code, text in (("", "fehlt"), ("EM", "»E-Mail«"), ("ZU LANG", "ohne Leerzeichen")):
        types.new_code.value = code  # type: ignore[union-attr]
        types.change_code.click()  # type: ignore[union-attr]
        assert text in types.error.value  # type: ignore[union-attr]
    types.new_label.value = ""  # type: ignore[union-attr]
    types.rename.click()  # type: ignore[union-attr]
    assert "Bezeichnung" in types.error.value  # type: ignore[union-attr]
    types.new_label.value = "Anruf"  # type: ignore[union-attr]
    types.rename.click()  # type: ignore[union-attr]
    assert types.error.exc is None and "»Anruf«" in types.status.value  # type: ignore[union-attr]
    assert crm.store.one("SELECT label FROM contact_types WHERE code = 'TEL'") == "Anruf"


def test_a_user_without_the_rights_sees_every_action_disabled_with_the_reason(crm: CRM) -> None:
    anna = CRM(crm.store, "anna")
    app = SettingsApp(anna)
    reasons = {
        "teams": [app.teams.enabled],  # type: ignore[union-attr]
        "display format": [app.display_format.save_button, app.display_format.reset_button,  # type: ignore[union-attr]
                           app.display_format.rows[1].up],  # type: ignore[union-attr]
        "privacy": [app.privacy.apply_button, app.privacy.set_flag_button],  # type: ignore[union-attr]
        "transfer log": [app.transfer_log.refresh_button, app.transfer_log.export_csv],  # type: ignore[union-attr]
        "contact types": [app.contact_types.change_code, app.contact_types.rename],  # type: ignore[union-attr]
        "campaign": [app.campaign.save, app.campaign.test],  # type: ignore[union-attr]
        "consent": [app.consent.record],  # type: ignore[union-attr]
    }
    rights = {"teams": "Microsoft Teams-Verwalter", "display format": "Microsoft Teams-Verwalter",
              "privacy": "Personenbezogene Daten verwalten", "transfer log": "Weitergabeprotokoll lesen",
              "contact types": "Systemverwalter, Microsoft Teams-Verwalter",
              "campaign": "Kampagnen einrichten, Microsoft Teams-Verwalter", "consent": "Microsoft Teams-Verwalter"}
    for area, controls in reasons.items():
        for control in controls:
            assert control.disabled, area
            assert rights[area] in (control.tooltip or ""), (area, control.tooltip)
    # English after the switch
    app.language_switch.value = "en"
    assert "Microsoft Teams administrator" in app.teams.enabled.tooltip  # type: ignore[union-attr]
    # The core still checks: a forged click changes nothing.
    before = crm.contact_types().values.tolist()
    types = app.contact_types
    types.new_code.value = "XX"  # type: ignore[union-attr]
    assert types.apply_code() is False  # type: ignore[union-attr]
    assert isinstance(types.error.exc, PermissionDenied)  # type: ignore[union-attr]
    assert crm.contact_types().values.tolist() == before


def test_an_admin_sees_no_reason_tooltips(crm: CRM) -> None:
    app = SettingsApp(crm)
    assert not app.teams.enabled.disabled and not app.teams.enabled.tooltip  # type: ignore[union-attr]
    assert not app.contact_types.change_code.disabled and not app.contact_types.change_code.tooltip  # type: ignore[union-attr]
    assert not app.display_format.save_button.tooltip  # type: ignore[union-attr]
