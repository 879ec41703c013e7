"""Writing addresses and contacts needs the right ``records.write`` (issue 14 item 3: one path, one rights check).

The read-only role ``viewer`` (»Nur lesen«) used to write addresses and contacts; now the core refuses
it with PermissionDenied naming the right in both languages, and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from support.dbstate import db_snapshot, snapshot_diff
from support.migrations import database_at_level

import crmkit
from crmkit import errors
from crmkit.crm import CRM
from crmkit.migrations import MIGRATIONS
from crmkit.rights import BUILTIN_ROLES
from crmkit.store import Store

pytestmark = pytest.mark.core

WRITES: list[tuple[str, Callable[[CRM], Any]]] = [
    ("add_address", lambda c: c.add_address(company="Neu GmbH", city="Bonn")),
    ("update_address", lambda c: c.update_address(1, city="Köln")),
    ("add_contact", lambda c: c.add_contact(1, "TEL", "Anruf")),
]


@pytest.fixture
def admin() -> CRM:
    crm = crmkit.open(":memory:")
    crm.add_address(company="Müller GmbH", city="Berlin")
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    crm.add_user("anna", "Anna Sales", roles=["sales"])
    return crm


@pytest.mark.parametrize(("name", "write"), WRITES, ids=[w[0] for w in WRITES])
def test_viewer_is_refused_and_nothing_is_written(admin: CRM, name: str, write: Callable[[CRM], Any]) -> None:
    vera = CRM(admin.store, "vera")
    before = db_snapshot(admin.store)
    with pytest.raises(errors.PermissionDenied) as caught:
        write(vera)
    assert caught.value.right == "records.write"
    assert caught.value.user == "vera"
    assert "Adressen und Kontakte bearbeiten" in caught.value.text("de")
    assert "Edit addresses and contacts" in caught.value.text("en")
    after = db_snapshot(admin.store)
    assert after == before, snapshot_diff(before, after)


def test_rights_come_before_input_checks(admin: CRM) -> None:
    vera = CRM(admin.store, "vera")
    # bad input from a user without the right: the refusal, not the input error
    with pytest.raises(errors.PermissionDenied):
        vera.add_contact(999, "ZZ", "")
    with pytest.raises(errors.PermissionDenied):
        vera.add_address()


def test_sales_may_write_addresses_and_contacts(admin: CRM) -> None:
    anna = CRM(admin.store, "anna")
    new = anna.add_address(company="Neu GmbH", city="Bonn")
    anna.update_address(new, city="Köln")
    contact = anna.add_contact(new, "TEL", "Anruf")
    assert anna.address(new)["city"] == "Köln"
    assert anna.address(new)["modified_by"] == "anna"
    row = anna.contacts(new)
    assert list(row["id"]) == [contact] and list(row["user_name"]) == ["anna"]


def test_built_in_roles_holding_the_right() -> None:
    assert {r for r, held in BUILTIN_ROLES.items() if "records.write" in held} == {
        "admin", "teams_admin", "campaign_manager", "sales"}


def test_an_existing_database_gets_the_right_for_its_roles(tmp_path: Path) -> None:
    """A database at the migration level before records.write (its roles present, one of them
    missing) gains the right for the built-in roles it has, and viewer stays without it."""
    level = next(i for i, m in enumerate(MIGRATIONS) if "records.write" in " ".join(m[2]))
    path = tmp_path / "old.duckdb"
    con = database_at_level(path, level)
    assert con.execute("SELECT count(*) FROM role_rights WHERE \"right\" = 'records.write'").fetchone() == (0,)
    # an administrator had removed the role campaign_manager: it is not created again
    con.execute("DELETE FROM role_rights WHERE role = 'campaign_manager'")
    con.execute("DELETE FROM roles WHERE name = 'campaign_manager'")
    con.execute("INSERT INTO users (name, display_name) VALUES ('ben', 'Ben Berger')")
    con.execute("INSERT INTO user_roles VALUES ('ben', 'sales')")
    con.close()

    Store(path).close()
    con = duckdb.connect(str(path), read_only=True)
    try:
        holders = {r[0] for r in con.execute(
            "SELECT role FROM role_rights WHERE \"right\" = 'records.write'").fetchall()}
        roles = {r[0] for r in con.execute("SELECT name FROM roles").fetchall()}
    finally:
        con.close()
    assert holders == {"admin", "teams_admin", "sales"}
    assert "campaign_manager" not in roles
    ben = crmkit.open(path, "ben")
    try:
        ben.add_address(company="Nach dem Update GmbH")
    finally:
        ben.store.close()
