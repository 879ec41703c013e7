"""Teams settings, display-format editor, personal-data form and transfer-log monitor, driven like a user would."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import crmkit
from crmkit import privacy
from crmkit.crm import CRM
from crmkit.teams import activation, display_format, sessions
from crmkit.widgets.display_format_editor import DisplayFormatEditor
from crmkit.widgets.privacy import PrivacySettings, TransferLogMonitor, svg_bar_chart
from crmkit.widgets.teams_settings import TeamsSettings

pytestmark = pytest.mark.widgets

EVIL = "<script>alert(1)</script>"


@pytest.fixture(autouse=True)
def _as_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sessions opened here stand for dashboard kernels (pytest itself is a script, never asked to reopen).
    monkeypatch.setenv("CRMKIT_SESSION_KIND", "dashboard")


@pytest.fixture
def crm(crm: CRM) -> CRM:
    crm.add_user("sam", "Sam Sales", roles=["sales"])
    crm.add_user("pia", "Pia Privacy", roles=["privacy_officer"])
    return crm


def as_user(crm: CRM, name: str) -> CRM:
    return CRM(crm.store, name)


def _teams_state(crm: CRM) -> tuple[object, ...]:
    return (crm.setting("teams.enabled"), crm.store.one("SELECT count(*) FROM contact_types WHERE code = 'TS'"),
            crm.store.one("SELECT count(*) FROM audit"))


# -- Teams settings ----------------------------------------------------------------------------------------

def test_admin_enables_with_the_checkbox(crm: CRM) -> None:
    sessions.register_session(crm)
    view = TeamsSettings(crm, "de")
    assert view.enabled.description == "Microsoft Teams-Integration aktivieren"
    assert "crmkit-teams-enable" in view.enabled._dom_classes
    assert not view.enabled.disabled and view.enabled.value is False
    view.enabled.value = True
    assert crm.setting("teams.enabled") is True
    assert crm.store.one("SELECT label FROM contact_types WHERE code = 'TS'") == "Teams"
    assert "systemweit aktiviert" in view.status.value
    # This session opened before the switch: it is told to reopen, and listed among those to reopen.
    assert "crmkit-teams-reopen" in view.status.value and "neu" in view.status.value
    assert "Administrator" in view.sessions.value  # the display name, not the login
    view.enabled.value = False
    assert crm.setting("teams.enabled") is False
    assert view.error.layout.display == "none"
    assert TeamsSettings(crm, "en").enabled.description == "Enable Microsoft Teams integration"


def test_user_without_teams_admin_sees_a_disabled_switch_and_the_core_refuses(crm: CRM) -> None:
    sam = as_user(crm, "sam")
    view = TeamsSettings(sam, "en")
    assert view.enabled.disabled
    assert "Only a Microsoft Teams administrator" in view.status.value
    before = _teams_state(crm)
    view.enabled.value = True  # as a forged front-end message would
    assert view.enabled.value is False
    assert isinstance(view.error.exc, crmkit.PermissionDenied)
    assert _teams_state(crm) == before


def test_taken_code_is_explained_and_nothing_changes(crm: CRM) -> None:
    crm.add_contact_type("TS", "Telefonschulung <b>")
    before = _teams_state(crm)
    view = TeamsSettings(crm, "de")
    view.enabled.value = True
    assert view.enabled.value is False
    assert view.error.layout.display != "none"
    assert "crmkit-teams-code-taken" in view.error.value
    assert "»TS«" in view.error.value and "Telefonschulung &lt;b&gt;" in view.error.value
    assert "anderes Kürzel" in view.error.value and "change_contact_type_code" in view.error.value
    assert _teams_state(crm) == before
    # After the fix the same switch works, and the error goes away.
    crm.change_contact_type_code("TS", "TSCH")
    view.enabled.value = True
    assert crm.setting("teams.enabled") is True and view.error.layout.display == "none"


# -- display-format editor ---------------------------------------------------------------------------------

@pytest.fixture
def address(crm: CRM) -> int:
    return crm.add_address(company=EVIL, salutation="Frau", first_name="Anna", last_name="Müller",
                           postal_code="50667", city="Köln", phone="0221 123456", email="anna@mueller.example")


def test_editor_previews_live_and_escapes(crm: CRM, address: int) -> None:
    editor = DisplayFormatEditor(crm, "de")
    assert editor.preview_address.value == address
    assert "&lt;script&gt;" in editor.card_preview.value and "<script" not in editor.card_preview.value
    assert "&lt;script&gt;" in editor.table_preview.value and "<script" not in editor.table_preview.value
    assert "Firma, Name, PLZ / Ort, Telefon, E-Mail" in editor.logged_fields.value  # labels, not keys

    row = editor.rows[editor.fmt.index("company")]
    row.label_de.value = "Unternehmen"
    assert "Unternehmen" in editor.table_preview.value and "Unternehmen" in editor.card_preview.value
    phone = editor.rows[editor.fmt.index("phone")]
    phone.kind.value = "phone"
    phone.pattern.value = "e164"
    assert "+49221123456" in editor.table_preview.value
    editor.preview_lang.value = "en"
    assert "Postcode / city" in editor.table_preview.value
    assert display_format.load_format(crm) == display_format.default_format()  # nothing saved yet


def test_editor_add_remove_reorder_and_save(crm: CRM, address: int) -> None:
    editor = DisplayFormatEditor(crm, "en")
    editor.add_field.value = "department"
    editor.add_button.click()
    dept = editor.rows[-1]
    assert dept.field == "department" and "department" not in [v for _l, v in editor.add_field.options]
    dept.empty.value = "text"
    dept.empty_text.value = "n/a"
    assert "n/a" in editor.table_preview.value
    editor.rows[editor.fmt.index("email")].remove.click()
    editor.rows[editor.fmt.index("department")].up.click()
    assert editor.fmt.field_names[-2:] == ("department", "phone")
    editor.rows[0].down.click()
    assert editor.fmt.field_names[:2] == ("name", "company")
    assert re.findall(r"<th[^>]*>([^<]*)</th>", editor.table_preview.value)[:2] == ["Name", "Company"]

    editor.save_button.click()
    assert "saved" in editor.message.value
    stored = display_format.load_format(crm)
    assert stored.field_names == ("name", "company", "street", "postal_city", "country", "department", "phone")
    assert stored.fields[stored.index("department")].empty_text == "n/a"
    assert len(crm.audit_log(scope="display_format")) == 1

    editor.reset_button.click()
    assert editor.fmt == display_format.default_format()
    editor.save_button.click()
    assert display_format.load_format(crm) == display_format.default_format()


def test_editor_shows_validation_errors_and_keeps_the_last_preview(crm: CRM, address: int) -> None:
    editor = DisplayFormatEditor(crm, "de")
    before = editor.table_preview.value
    row = editor.rows[0]
    row.kind.options = [("Datum", "date")]  # company can only be text: force an invalid combination
    assert isinstance(editor.error.exc, crmkit.ValidationError)
    assert editor.table_preview.value == before
    editor.save_button.click()
    assert isinstance(editor.error.exc, display_format.DisplayFormatError)
    assert crm.store.one("SELECT count(*) FROM display_formats") == 0


def test_editor_for_a_missing_address_shows_the_sample(crm: CRM) -> None:
    editor = DisplayFormatEditor(crm, "en")
    assert editor.preview_address.value == 0 and "Muster GmbH" in editor.table_preview.value
    editor.preview_address.value = 42
    assert "No address with this number" in editor.card_preview.value


def test_editor_is_read_only_without_teams_admin(crm: CRM, address: int) -> None:
    editor = DisplayFormatEditor(as_user(crm, "sam"), "en")
    assert editor.save_button.disabled and editor.add_button.disabled and editor.rows[0].label_en.disabled
    assert "Only a Microsoft Teams administrator" in editor.note.value
    assert editor.save() is False
    assert isinstance(editor.error.exc, crmkit.PermissionDenied)
    assert "&lt;script&gt;" in editor.table_preview.value  # the preview still works


# -- personal-data form --------------------------------------------------------------------------------------

def test_policy_form_applies_to_the_store(crm: CRM) -> None:
    pia = as_user(crm, "pia")
    form = PrivacySettings(pia, "de")
    assert form.channel_actions["teams_manual"].description == "Teams (von Hand)"
    form.channel_actions["teams_campaign"].value = "log_purpose"
    form.channel_actions["file_export"].value = "block"
    form.field_boxes["email"].value = False
    form.field_boxes["department"].value = True
    form.retention.value = 365
    form.apply_button.click()
    assert privacy.policies(crm) == {"teams_manual": "log", "teams_campaign": "log_purpose", "file_export": "block"}
    assert "email" not in privacy.personal_fields(crm) and "department" in privacy.personal_fields(crm)
    assert privacy.retention_days(crm) == 365
    assert "übernommen" in form.message.value
    audit = crm.audit_log()
    assert set(audit[audit.user_name == "pia"]["key"]) == {
        "policy.teams_campaign", "policy.file_export", "personal_fields", "privacy.retention_days"}


def test_policy_form_is_read_only_without_privacy_admin(crm: CRM) -> None:
    form = PrivacySettings(as_user(crm, "sam"), "en")
    assert form.apply_button.disabled and form.channel_actions["teams_manual"].disabled
    form.channel_actions["teams_manual"].value = "allow"
    form.apply_button.click()  # disabled in the browser; the core refuses anyway
    assert isinstance(form.error.exc, crmkit.PermissionDenied)
    assert privacy.policy(crm, "teams_manual") == "log"


def test_block_flags_from_the_form(crm: CRM, address: int) -> None:
    form = PrivacySettings(as_user(crm, "pia"), "en")
    assert "No address carries a block flag" in form.flags_table.value
    form.flag_address.value = address
    form.flag_choice.value = "no_teams"
    form.set_flag_button.click()
    assert privacy.address_flags(crm)[["address_id", "flag"]].values.tolist() == [[address, "no_teams"]]
    assert "Not via Teams" in form.flags_table.value
    assert privacy.check_transfer(crm, "teams_manual", [address]).blocked == {address: "flag:no_teams"}
    form.clear_flag_button.click()
    assert privacy.address_flags(crm).empty
    form.flag_address.value = 999
    form.set_flag_button.click()
    assert isinstance(form.error.exc, crmkit.NotFound)


# -- transfer-log monitor ------------------------------------------------------------------------------------

@pytest.fixture
def logged(crm: CRM, address: int) -> CRM:
    other = crm.add_address(company="Zweite AG")
    day = datetime(2025, 5, 1, 10, 0)
    rows = [
        privacy.new_record(crm, channel="teams_manual", address_id=address, fields=["company", "name"],
                           outcome="sent", recipient_id="u-1", recipient_name="Bea <b>Boss</b>", logged_at=day),
        privacy.new_record(crm, channel="teams_campaign", trigger="campaign", address_id=other, fields=["company"],
                           outcome="sent", recipient_id="u-2", recipient_name="Carl", logged_at=day),
        privacy.new_record(crm, channel="file_export", address_id=other, fields=["company"], outcome="sent",
                           recipient_id="export.csv", purpose="Messe", logged_at=day + timedelta(days=2)),
    ]
    crm.store.write(lambda tx: privacy.log_transfers(tx, rows))
    return crm


def test_monitor_filters_chart_and_escaping(logged: CRM, address: int) -> None:
    monitor = TransferLogMonitor(as_user(logged, "pia"), "en")
    assert "3 transfers" in monitor.count.value
    assert "Bea &lt;b&gt;Boss&lt;/b&gt;" in monitor.table.value and "<b>Boss" not in monitor.table.value
    svg = monitor.chart.value
    assert svg.startswith("<svg") and svg.count("<rect") == 3 + 3  # 3 bars + 3 legend swatches
    assert "Teams (by hand)" in svg and "2025-05-01" in svg and "2025-05-03" in svg

    monitor.address.value = str(address)
    assert len(monitor.frame) == 1 and "1 transfers" in monitor.count.value
    monitor.address.value = ""
    monitor.recipient.value = "carl"
    assert monitor.frame["recipient_id"].tolist() == ["u-2"]
    monitor.recipient.value = "u-1"
    assert monitor.frame["recipient_id"].tolist() == ["u-1"]
    monitor.recipient.value = ""
    monitor.channel.value = "file_export"
    assert monitor.frame["purpose"].tolist() == ["Messe"]
    monitor.channel.value = ""
    monitor.since.value = "2025-05-02"  # typed in the language's format (English: ISO)
    assert len(monitor.frame) == 1
    monitor.until.value = "02.05.2025"  # the other language's format is understood too
    assert monitor.frame.empty and "No transfers found" in monitor.table.value
    monitor.until.value = "5/2/2025"
    assert isinstance(monitor.error.exc, crmkit.ValidationError) and "write it as 2026-12-31" in monitor.error.value
    monitor.since.value = monitor.until.value = ""
    monitor.address.value = "abc"
    assert isinstance(monitor.error.exc, crmkit.ValidationError)


def test_monitor_exports(logged: CRM, tmp_path: Path) -> None:
    monitor = TransferLogMonitor(as_user(logged, "pia"), "de", export_dir=tmp_path / "exports")
    monitor.channel.value = "teams_manual"
    monitor.export_csv.click()
    files = sorted((tmp_path / "exports").glob("*.csv"))
    assert len(files) == 1
    assert pd.read_csv(files[0])["recipient_id"].tolist() == ["u-1"]
    assert "1 Zeilen exportiert" in monitor.export_result.value and 'download="' in monitor.export_result.value
    monitor.channel.value = ""
    assert monitor.export("xlsx") is not None
    (xlsx,) = (tmp_path / "exports").glob("*.xlsx")
    assert len(pd.read_excel(xlsx)) == 3


def test_monitor_needs_privacy_read_log(logged: CRM) -> None:
    monitor = TransferLogMonitor(as_user(logged, "sam"), "en")
    assert isinstance(monitor.error.exc, crmkit.PermissionDenied)
    assert monitor.table.value == "" and monitor.export_csv.disabled


def test_chart_escapes_and_handles_empty() -> None:
    assert "No transfers found" in svg_bar_chart(pd.DataFrame(columns=["bucket", "channel", "n"]), "en")
    counts = pd.DataFrame({"bucket": [pd.Timestamp("2025-01-01")], "channel": ["teams_manual"], "n": [4]})
    svg = svg_bar_chart(counts, "de")
    assert "<title>01.01.2025 · Teams (von Hand): 4</title>" in svg


def test_activation_and_widget_agree(crm: CRM) -> None:
    view = TeamsSettings(crm, "en")
    activation.enable(crm)
    view.refresh()
    assert view.enabled.value is True
