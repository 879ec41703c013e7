"""Contact types (»Kontaktarten«): list, rename, change code; rights, validation, audit, nothing half-written."""

from __future__ import annotations

import pytest

import crmkit
from crmkit import contact_types
from crmkit.crm import CRM
from crmkit.errors import ControlCharacters, NotFound, PermissionDenied, ValidationError
from crmkit.teams import activation

pytestmark = pytest.mark.core


@pytest.fixture
def admin(crm: CRM) -> CRM:
    for name, role in (("tina", "teams_admin"), ("sam", "sales"), ("vera", "viewer"), ("pia", "privacy_officer")):
        crm.add_user(name, name.title(), roles=[role])
    crm.add_contact_type("TS", "Telefonschulung")
    address = crm.add_address(company="Muster GmbH")
    crm.store.execute("INSERT INTO contacts (id, address_id, happened_at, type_code, subject, user_name, source) "
                      "VALUES (1, ?, now(), 'TS', 'Schulung', 'admin', 'test')", [address])
    return crm


def _state(crm: CRM) -> tuple[object, ...]:
    return crm.store.read(lambda tx: (
        tx.rows("SELECT code, label FROM contact_types ORDER BY code"),
        tx.rows("SELECT id, type_code FROM contacts ORDER BY id"),
        tx.one("SELECT count(*) FROM audit"),
    ))


def test_list_shows_every_type_with_its_contacts(admin: CRM) -> None:
    frame = contact_types.contact_types(CRM(admin.store, "vera"))  # reading needs no right
    assert list(frame.columns) == ["code", "label", "contacts"]
    rows = {r.code: (r.label, r.contacts) for r in frame.itertuples()}
    assert rows["TS"] == ("Telefonschulung", 1) and rows["TEL"] == ("Telefonat", 0)


def test_a_teams_admin_moves_the_clashing_type_and_teams_can_be_switched_on(admin: CRM) -> None:
    tina = CRM(admin.store, "tina")
    with pytest.raises(crmkit.ContactTypeCodeTaken):
        activation.enable(tina)
    assert contact_types.change_code(tina, "ts", " tsch ") is True  # codes are trimmed and upper case
    assert admin.store.one("SELECT type_code FROM contacts WHERE id = 1") == "TSCH"  # its contacts follow
    assert admin.store.one("SELECT label FROM contact_types WHERE code = 'TSCH'") == "Telefonschulung"
    audit = admin.audit_log(scope="contact_types")
    assert (audit.iloc[0]["user_name"], audit.iloc[0]["key"]) == ("tina", "TS")
    assert audit.iloc[0]["new_value"] == '"TSCH"'
    assert activation.enable(tina) is True
    assert contact_types.change_code(tina, "TSCH", "TSCH") is False  # the same code: nothing written


def test_rename_is_audited(admin: CRM) -> None:
    before = len(admin.audit_log(scope="contact_types"))
    assert contact_types.rename(admin, "TS", "  Telefon-Schulung ") is True
    assert admin.store.one("SELECT label FROM contact_types WHERE code = 'TS'") == "Telefon-Schulung"
    audit = admin.audit_log(scope="contact_types")
    assert len(audit) == before + 1
    assert (audit.iloc[0]["key"], audit.iloc[0]["old_value"], audit.iloc[0]["new_value"]) == (
        "TS.label", '"Telefonschulung"', '"Telefon-Schulung"')
    assert contact_types.rename(admin, "TS", "Telefon-Schulung") is False
    assert len(admin.audit_log(scope="contact_types")) == before + 1


@pytest.mark.parametrize("user", ["sam", "vera", "pia"])
def test_without_system_or_teams_admin_nothing_is_written(admin: CRM, user: str) -> None:
    crm = CRM(admin.store, user)
    assert not contact_types.may_edit(crm)
    before = _state(admin)
    for call in (lambda: contact_types.change_code(crm, "TS", "TSCH"), lambda: contact_types.rename(crm, "TS", "X"),
                 lambda: contact_types.change_code(crm, "TS", "")):  # the right comes before the input
        with pytest.raises(PermissionDenied) as info:
            call()
        assert "system.admin" in str(info.value) and "teams.admin" in str(info.value)
        assert "Rechte" in info.value.text("de")
    assert _state(admin) == before


@pytest.mark.parametrize(("code", "new", "error", "en", "de"), [
    ("TS", "", ValidationError, "empty", "fehlt"),
    ("TS", "   ", ValidationError, "empty", "fehlt"),
    ("TS", "NINECHARS", ValidationError, "1-8", "1–8"),
    ("TS", "T S", ValidationError, "without spaces", "ohne Leerzeichen"),
    ("TS", "TEL", ValidationError, "taken by the contact type \"Telefonat\"", "»Telefonat«"),
    ("TS", "em", ValidationError, "taken", "vergeben"),
    ("TS", "T\x00S", ControlCharacters, "code", "Kürzel"),
    ("QQ", "QR", NotFound, "QQ", "»QQ«"),
    ("TS", 7, ValidationError, "empty", "fehlt"),
])
def test_bad_codes_are_refused_in_both_languages_and_nothing_is_written(
        admin: CRM, code: str, new: object, error: type[Exception], en: str, de: str) -> None:
    before = _state(admin)
    with pytest.raises(error) as info:
        contact_types.change_code(admin, code, new)  # type: ignore[arg-type]
    assert en in str(info.value)
    assert de in info.value.text("de")  # type: ignore[attr-defined]
    assert _state(admin) == before


@pytest.mark.parametrize(("label", "en", "de"), [
    ("", "needs a label", "Bezeichnung"),
    ("  ", "needs a label", "Bezeichnung"),
    ("x" * 61, "at most 60", "höchstens 60"),
    ("Tele\nfon", "label", "Kontaktart"),
])
def test_bad_labels_are_refused_and_nothing_is_written(admin: CRM, label: str, en: str, de: str) -> None:
    before = _state(admin)
    with pytest.raises(ValidationError) as info:
        contact_types.rename(admin, "TS", label)
    assert en in str(info.value) and de in info.value.text("de")
    assert _state(admin) == before
    with pytest.raises(NotFound):
        contact_types.rename(admin, "QQ", "Fine")
