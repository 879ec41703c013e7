"""The CRM session: users and rights, settings with audit, addresses, contacts, safe SQL filters."""

from __future__ import annotations

import pytest

import crmkit
from crmkit.rights import BUILTIN_ROLES, RIGHTS
from crmkit.settings import SETTINGS

pytestmark = pytest.mark.core


def _snapshot(crm: crmkit.CRM) -> dict[str, list[tuple]]:
    tables = ["users", "user_roles", "system_settings", "user_settings", "audit", "contact_types", "addresses",
              "contacts"]
    # sorted here: ORDER BY ALL is DuckDB's only
    return {t: sorted(crm.store.read(lambda tx, t=t: tx.rows(f"SELECT * FROM {t}")), key=repr) for t in tables}


@pytest.fixture
def team(crm: crmkit.CRM) -> crmkit.CRM:
    for name, role in [("vera", "viewer"), ("anna", "sales"), ("tom", "teams_admin"), ("petra", "privacy_officer")]:
        crm.add_user(name, name.title(), roles=[role])
    return crm


def test_unknown_user_is_typed_and_names_known_users(db_location: str) -> None:
    crmkit.open(db_location)
    with pytest.raises(crmkit.UnknownUser, match="admin"):
        crmkit.open(db_location, user="mallory")


def test_user_comes_from_environment(db_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    crmkit.open(db_location).add_user("anna", "Anna", roles=["sales"])
    monkeypatch.setenv("CRMKIT_USER", "anna")
    assert crmkit.open(db_location).user.rights == {"teams.send", "records.write"}


def test_database_comes_from_environment(db_location: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_DB", db_location)
    crmkit.open().add_address(company="Env GmbH")
    assert crmkit.open(db_location).count_addresses() == 1


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
def test_every_role_holds_exactly_its_rights(crm: crmkit.CRM, role: str) -> None:
    crm.add_user("u", "U", roles=[role])
    user = crmkit.CRM(crm.store, "u").user
    assert user.rights == set(BUILTIN_ROLES[role])
    for right in RIGHTS:
        session = crmkit.CRM(crm.store, "u")
        if right in user.rights:
            session.require(right)
        else:
            with pytest.raises(crmkit.PermissionDenied) as info:
                session.require(right)
            assert info.value.right == right


def test_viewer_cannot_change_system_settings_and_nothing_changes(team: crmkit.CRM) -> None:
    viewer = crmkit.CRM(team.store, "vera")
    before = _snapshot(team)
    for name, value in [("teams.enabled", True), ("teams.subject_prefix", "X - "), ("privacy.retention_days", 1)]:
        with pytest.raises(crmkit.PermissionDenied, match=SETTINGS[name].right):
            viewer.set_setting(name, value)
    with pytest.raises(crmkit.PermissionDenied):
        viewer.add_user("eve", "Eve")
    with pytest.raises(crmkit.PermissionDenied):
        viewer.add_contact_type("XX", "Something")
    with pytest.raises(crmkit.PermissionDenied):
        viewer.audit_log()
    assert _snapshot(team) == before


def test_setting_change_is_audited_with_old_and_new(team: crmkit.CRM) -> None:
    tom = crmkit.CRM(team.store, "tom")
    tom.set_setting("teams.subject_prefix", "CRM - ")
    assert tom.setting("teams.subject_prefix") == "CRM - "
    row = team.audit_log(scope="system").iloc[0]
    assert (row.user_name, row.key, row.old_value, row.new_value) == (
        "tom", "teams.subject_prefix", '"cobra CRM - "', '"CRM - "')


def test_user_setting_is_per_user_and_audited(team: crmkit.CRM) -> None:
    anna = crmkit.CRM(team.store, "anna")
    anna.set_user_setting("language", "en")
    assert anna.language == "en"
    assert crmkit.CRM(team.store, "vera").language == "de"
    assert team.audit_log(scope="user:anna").iloc[0].new_value == '"en"'


@pytest.mark.parametrize(("name", "value"), [
    ("teams.enabled", "yes"), ("ui.default_language", "fr"), ("privacy.retention_days", "ten"), ("no.such", 1),
])
def test_bad_setting_values_are_refused(crm: crmkit.CRM, name: str, value: object) -> None:
    before = _snapshot(crm)
    with pytest.raises(crmkit.ValidationError):
        crm.set_setting(name, value)
    assert _snapshot(crm) == before


def test_filters_and_paging(crm: crmkit.CRM) -> None:
    for i in range(30):
        crm.add_address(company=f"Firma {i}", city="Berlin" if i % 3 == 0 else "Wien", country="DE")
    page, total = crm.address_page(1, 4, city="Berlin")
    assert total == 10
    assert page["company"].tolist() == ["Firma 12", "Firma 15", "Firma 18", "Firma 21"]
    assert crm.count_addresses(search="firma 2") == 11  # 2, 20..29
    assert crm.count_addresses(city=["Berlin", "Wien"]) == 30
    # Firma 1 and 10-19 in Wien, i.e. without the multiples of three 12, 15, 18
    assert crm.count_addresses(where="city = ? AND company LIKE ?", params=["Wien", "Firma 1%"]) == 8


@pytest.mark.parametrize("where", [
    "1=1); DELETE FROM addresses; --",
    "1=1); DROP TABLE addresses; SELECT (1",
    "id IN (SELECT 1 FROM read_csv('/etc/passwd'))",
    "1=1; UPDATE addresses SET city = 'x'",
])
def test_sql_filter_that_tries_to_write_is_refused(crm: crmkit.CRM, where: str) -> None:
    crm.add_address(company="Keep me", city="Berlin")
    before = _snapshot(crm)
    with pytest.raises(crmkit.ValidationError):
        crm.addresses(where=where)
    assert _snapshot(crm) == before


def test_sql_filter_multi_statement_is_unsafe_query(crm: crmkit.CRM) -> None:
    with pytest.raises(crmkit.UnsafeQuery):
        crm.addresses(where="1=1); DELETE FROM addresses; --")


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"where": "no_such_column = 1"}, crmkit.ValidationError),
    ({"where": "   "}, crmkit.ValidationError),
    ({"nosuch": 1}, crmkit.ValidationError),
    ({"order_by": "id; DROP TABLE addresses"}, crmkit.ValidationError),
    ({"limit": 0}, crmkit.ValidationError),
    ({"limit": 10, "offset": -1}, crmkit.ValidationError),
    ({"columns": ["id", "password"]}, crmkit.ValidationError),
])
def test_bad_read_arguments_are_typed(crm: crmkit.CRM, kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        crm.addresses(**kwargs)


@pytest.mark.parametrize("fields", [
    {}, {"city": "Berlin"}, {"company": 42}, {"kind": "robot", "company": "X"}, {"nosuch": "x", "company": "X"},
    {"company": "x" * 501}, {"company": "X", "parent_id": 999},
])
def test_bad_address_input_is_refused_and_nothing_written(crm: crmkit.CRM, fields: dict) -> None:
    before = _snapshot(crm)
    with pytest.raises(crmkit.ValidationError):
        crm.add_address(**fields)
    assert _snapshot(crm) == before


def test_address_round_trip_records_who_and_when(crm: crmkit.CRM) -> None:
    main = crm.add_address(company="Muster AG", city="Zürich", country="CH")
    sub = crm.add_address(parent_id=main, last_name="Keller", first_name="Eva", salutation="Frau")
    crm.update_address(sub, phone="+41 44 123 45 67")
    got = crm.address(sub)
    assert (got["parent_id"], got["kind"], got["created_by"]) == (main, "person", "admin")
    assert got["phone"] == "+41 44 123 45 67"
    with pytest.raises(crmkit.NotFound):
        crm.address(12345)
    with pytest.raises(crmkit.ValidationError):
        crm.address("1; DROP TABLE addresses")


def test_contacts_need_known_type_and_address(crm: crmkit.CRM) -> None:
    a = crm.add_address(company="Kontakt GmbH")
    crm.add_contact(a, "TEL", "Rückruf wegen Angebot", notes="vormittags")
    assert crm.contacts(a)["subject"].tolist() == ["Rückruf wegen Angebot"]
    with pytest.raises(crmkit.ValidationError, match="contact type"):
        crm.add_contact(a, "ZZ", "x")
    with pytest.raises(crmkit.NotFound):
        crm.add_contact(999, "TEL", "x")
    assert len(crm.contacts()) == 1


def test_contact_type_codes_are_unique_and_can_move(crm: crmkit.CRM) -> None:
    crm.add_contact_type("TS", "Telefonschulung")
    with pytest.raises(crmkit.ValidationError, match="Telefonschulung"):
        crm.add_contact_type("TS", "Teams")
    a = crm.add_address(company="X")
    crm.add_contact(a, "TS", "Schulung")
    crm.change_contact_type_code("TS", "TSCH")
    assert crm.contacts(a)["type_code"].tolist() == ["TSCH"]
    assert "TS" not in crm.contact_types()["code"].tolist()


def test_search_matches_word_starts_with_or_without_accents(crm: crmkit.CRM) -> None:
    a = crm.add_address(company="Müller-Lüdenscheid GmbH", city="Köln", email="info@mueller.example")
    b = crm.add_address(last_name="Schmüller", first_name="Eva", city="Wien")
    assert crm.addresses(search="müller")["id"].tolist() == [a]  # a word start, not anywhere inside
    assert crm.addresses(search="Muller")["id"].tolist() == [a]  # accents folded
    assert crm.addresses(search="mueller")["id"].tolist() == [a]  # the e-mail's transliteration
    assert crm.addresses(search="eva wi")["id"].tolist() == [b]  # every word must match
    assert crm.count_addresses(search="eva köln") == 0
    crm.update_address(b, city="Köln")
    assert crm.addresses(search="eva köln")["id"].tolist() == [b]  # the index follows updates
    assert crm.count_addresses(search="wien") == 0
