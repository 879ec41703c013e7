"""»Im CRM öffnen« in the views: the link base on the settings page, and the addresses dashboard opened by a
record's deep link (allowed, refused, unknown, malformed), bound to crmkit.record_links."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets
import pytest

import crmkit
from crmkit import record_links
from crmkit.crm import CRM
from crmkit.widgets.record_link import LinkedRecord, RecordLinkSetting
from crmkit.widgets.record_table import RecordTable
from crmkit.widgets.settings_app import SettingsApp
from crmkit.widgets.teams_action import teams_address_dashboard

pytestmark = pytest.mark.widgets

BASE = "https://hub.example.org/hub/user-redirect/voila/render/dashboards/addresses.ipynb"


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))


def test_an_admin_sets_the_link_base_on_the_settings_page(crm: CRM) -> None:
    app = SettingsApp(crm)
    app.tabs.selected_index = SettingsApp.TAB_KEYS.index("display_format")
    view = app.record_link
    assert isinstance(view, RecordLinkSetting) and app.display_format is not None
    assert view.base.value == "http://127.0.0.1:8866/voila/render/addresses.ipynb"
    view.base.value = "javascript:alert(1)"
    view.save.click()
    assert view.error.layout.display is None and "https://" in view.error.value
    assert crm.setting(record_links.SETTING) == "http://127.0.0.1:8866/voila/render/addresses.ipynb"
    view.base.value = f"  {BASE} "
    view.save.click()
    assert crm.setting(record_links.SETTING) == BASE and view.base.value == BASE
    assert view.error.layout.display == "none" and "Gespeichert" in view.status.value
    app.close()


def test_without_teams_admin_the_field_is_disabled_with_the_missing_right(crm: CRM) -> None:
    crm.add_user("vera", "Vera", roles=["viewer"])
    view = RecordLinkSetting(crmkit.CRM(crm.store, "vera"), "en")
    assert view.base.disabled and view.save.disabled
    assert "teams.admin" in view.save.tooltip or "Teams" in view.save.tooltip
    view.close()


def _dashboard(crm: CRM, monkeypatch: pytest.MonkeyPatch, query: str) -> widgets.Widget:
    monkeypatch.setenv("QUERY_STRING", query)
    return teams_address_dashboard(crm)


def test_a_deep_link_opens_the_record_beside_the_table(crm: CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    address = crm.add_address(company="Müller & Söhne GmbH", city="Berlin")
    page = _dashboard(crm, monkeypatch, f"record={address}")
    assert isinstance(page, RecordTable)
    [shown] = page.side.children
    assert isinstance(shown, LinkedRecord) and shown.address_id == address
    assert "Müller &amp; Söhne GmbH" in shown.title.value and "Berlin" in shown.fields.value
    assert "Datensatz" in shown.title.value and "Firma" in shown.fields.value
    page.language_switch.value = "en"  # the open record follows the language switch
    [shown] = page.side.children
    assert isinstance(shown, LinkedRecord) and "Record" in shown.title.value and "Company" in shown.fields.value
    assert "Schließen" not in shown.close_button.description
    page.language_switch.value = "de"
    page.close()


@pytest.mark.parametrize(("query", "says"), [("record=999999", "999999"), ("record=abc", "record=")])
def test_an_unknown_or_malformed_id_is_said_and_nothing_opens(crm: CRM, monkeypatch: pytest.MonkeyPatch,
                                                               query: str, says: str) -> None:
    page = _dashboard(crm, monkeypatch, query)
    assert isinstance(page, RecordTable) and page.side.children == ()
    assert page.error.layout.display is None and says in page.error.value
    page.close()


def test_a_visit_without_a_crm_user_is_refused_and_shows_nothing_of_the_record(
        db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crm = crmkit.open(db_path)
    address = crm.add_address(company="Müller & Söhne GmbH", city="Berlin")
    crm.store.close()
    monkeypatch.setenv("CRMKIT_DB", str(db_path))
    monkeypatch.setenv("CRMKIT_USER", "mallory")  # no CRM user of that name
    monkeypatch.setenv("QUERY_STRING", f"record={address}")
    page = teams_address_dashboard()
    assert isinstance(page, widgets.HTML) and "crmkit-record-link-refused" in page._dom_classes
    assert "Diesen Datensatz dürfen Sie nicht öffnen" in page.value and "You may not open this record" in page.value
    assert "Müller" not in page.value and "Berlin" not in page.value
    monkeypatch.setenv("QUERY_STRING", "")  # without a link: the open error as before, no record refusal
    plain = teams_address_dashboard()
    assert "crmkit-open-error" in plain._dom_classes and "crmkit-record-link-refused" not in plain._dom_classes
