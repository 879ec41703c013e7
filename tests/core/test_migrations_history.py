"""Migrations are history: an applied migration never changes, and every older database upgrades.

A database made at any older migration level (with data in it) opened by the normal path ends with
exactly the schema and seed rows of a database created fresh, its data kept. What a migration
creates does not follow today's code: changing a feature constant (the built-in roles, the searched
columns) changes nothing in migrations 1 or 6.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from support.migrations import database_at_level

from crmkit.migrations import MIGRATIONS, statements_for
from crmkit.rights import BUILTIN_ROLES, RIGHTS
from crmkit.store import Store

pytestmark = pytest.mark.core

SEEDED = ("roles", "role_rights", "users", "user_roles", "contact_types")


def _schema(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every catalog fact of the open database (tables with their DDL, columns, indexes,
    constraints, sequences, views) and its seeded rows: what a fresh and an upgraded one share."""
    db = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    w = f"database_name = '{db}'"

    def q(sql: str) -> list[tuple[Any, ...]]:
        return con.execute(sql).fetchall()

    out = {
        "tables": q(f"SELECT table_name, column_count, has_primary_key, index_count, check_constraint_count, sql "
                    f"FROM duckdb_tables() WHERE {w} ORDER BY ALL"),
        "columns": q(f"SELECT table_name, column_name, column_index, column_default, is_nullable, data_type "
                     f"FROM duckdb_columns() WHERE {w} ORDER BY ALL"),
        "indexes": q(f"SELECT index_name, table_name, is_unique, is_primary, expressions, sql "
                     f"FROM duckdb_indexes() WHERE {w} ORDER BY ALL"),
        "constraints": q(f"SELECT table_name, constraint_index, constraint_type, constraint_text, expression, "
                         f"constraint_column_names FROM duckdb_constraints() WHERE {w} ORDER BY ALL"),
        # Not start_value: DuckDB stores a used sequence with its next value as the start.
        "sequences": q(f"SELECT sequence_name, min_value, max_value, increment_by, cycle "
                       f"FROM duckdb_sequences() WHERE {w} ORDER BY ALL"),
        "views": q(f"SELECT view_name, sql FROM duckdb_views() WHERE {w} AND NOT internal ORDER BY ALL"),
        "migrations": q("SELECT id, name FROM _crmkit_migrations ORDER BY id"),
        "seed:roles": q("SELECT * FROM roles ORDER BY ALL"),
        "seed:role_rights": q("SELECT * FROM role_rights ORDER BY ALL"),
        "seed:users": q("SELECT name, display_name, email, active FROM users WHERE name = 'admin'"),
        "seed:user_roles": q("SELECT * FROM user_roles WHERE user_name = 'admin' ORDER BY ALL"),
        "seed:contact_types": q("SELECT code, label FROM contact_types WHERE code IN "
                                "('TEL', 'EM', 'BR', 'BE', 'NO') ORDER BY ALL"),
    }
    return out


def _schema_of(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return _schema(con)
    finally:
        con.close()


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    path = tmp_path_factory.mktemp("fresh") / "crm.duckdb"
    Store(path).close()
    return _schema_of(path)


def _make_at_level(path: Path, k: int) -> None:
    """A database as crmkit left it when migration k was the newest, with the data a user had by then."""
    con = database_at_level(path, k)
    # Data a user had by then: a user with a role, an address (with an umlaut: the search index of
    # migration 6 must find it folded), a contact, and from migration 5 on a campaign.
    con.execute("INSERT INTO users (name, display_name) VALUES ('ben', 'Ben Berger')")
    con.execute("INSERT INTO user_roles VALUES ('ben', 'sales')")
    con.execute(
        "INSERT INTO addresses (id, kind, company, city, created_by, created_at, modified_by, modified_at) "
        "VALUES (7, 'company', 'Müller GmbH', 'Köln', 'admin', TIMESTAMP '2026-01-02 03:04:05', 'admin', "
        "TIMESTAMP '2026-01-02 03:04:05')")
    con.execute("INSERT INTO contacts (id, address_id, happened_at, type_code, subject, user_name, source) "
                "VALUES (1, 7, TIMESTAMP '2026-01-03 10:00:00', 'TEL', 'Anruf', 'ben', 'manual')")
    if k >= 5:
        con.execute("INSERT INTO campaigns (name, created_at, created_by, modified_at, modified_by) VALUES "
                    "('Frühjahr', TIMESTAMP '2026-02-01', 'admin', TIMESTAMP '2026-02-01', 'admin')")
    con.close()


@pytest.mark.parametrize("k", range(1, len(MIGRATIONS)))
def test_a_database_at_every_older_migration_upgrades_to_the_fresh_schema(
    tmp_path: Path, k: int, fresh: dict[str, list[tuple[Any, ...]]],
) -> None:
    path = tmp_path / f"at-{k}.duckdb"
    _make_at_level(path, k)
    store = Store(path)  # the normal open path applies the pending migrations
    assert store.applied_migrations == [m[0] for m in MIGRATIONS[k:]]
    store.close()
    assert _schema_of(path) == fresh
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT display_name FROM users WHERE name = 'ben'").fetchall() == [("Ben Berger",)]
        assert con.execute("SELECT role FROM user_roles WHERE user_name = 'ben'").fetchall() == [("sales",)]
        assert con.execute("SELECT company, city, created_at FROM addresses").fetchall() == [
            ("Müller GmbH", "Köln", datetime(2026, 1, 2, 3, 4, 5))]
        assert con.execute("SELECT subject, user_name, recipients, link FROM contacts").fetchall() == [
            ("Anruf", "ben", None, None)]  # columns of migration 4 added to the existing row
        if k < 6:  # migration 6 indexed the addresses that were already there, accents folded
            words = {r[0] for r in con.execute("SELECT word FROM address_words WHERE address_id = 7").fetchall()}
            assert {"müller", "muller", "gmbh", "köln", "koln"} <= words
        if k >= 5:
            assert con.execute("SELECT name FROM campaigns").fetchall() == [("Frühjahr",)]
    finally:
        con.close()


def test_an_up_to_date_database_opens_without_migrating(tmp_path: Path,
                                                        fresh: dict[str, list[tuple[Any, ...]]]) -> None:
    path = tmp_path / "crm.duckdb"
    Store(path).close()
    again = Store(path)
    assert again.applied_migrations == []
    again.close()
    assert _schema_of(path) == fresh


_PATCHED = r"""
import importlib, json, sys
import crmkit.rights as rights
rights.RIGHTS = (*rights.RIGHTS, "contacts.export")
rights.BUILTIN_ROLES["sales"] = ("teams.send", "contacts.export")
rights.BUILTIN_ROLES["auditor"] = ("privacy.read_log",)
import crmkit.addresses as addresses
addresses.SEARCHED_COLUMNS = ("company",)
import crmkit.migrations
importlib.reload(crmkit.migrations)  # as if crmkit had started with today's changed constants
from crmkit.store import Store
s = Store(":memory:")
def q(sql):
    return [list(r) for r in s.read(lambda tx: tx.rows(sql))]
print(json.dumps({"m1": [m[2] for m in crmkit.migrations.MIGRATIONS if m[0] in (1, 6)],
                  "roles": q("SELECT * FROM roles ORDER BY ALL"),
                  "role_rights": q("SELECT * FROM role_rights ORDER BY ALL")}))
"""


def _statements(mids: tuple[int, ...]) -> list[list[str]]:
    return [m[2] for m in MIGRATIONS if m[0] in mids]


def test_changing_feature_constants_does_not_change_applied_migrations() -> None:
    """A new right or role in rights.py, or another searched column, reaches databases through a new
    migration; migrations 1 and 6 stay what existing databases applied."""
    out = subprocess.run([sys.executable, "-c", _PATCHED], capture_output=True, text=True, timeout=120,
                         check=True)
    got = json.loads(out.stdout)
    assert got["m1"] == _statements((1, 6))
    store = Store(":memory:")
    roles = [list(r) for r in store.read(lambda tx: tx.rows("SELECT * FROM roles ORDER BY ALL"))]
    rr = [list(r) for r in store.read(lambda tx: tx.rows("SELECT * FROM role_rights ORDER BY ALL"))]
    assert got["roles"] == roles
    assert got["role_rights"] == rr
    assert "auditor" not in [r[0] for r in got["roles"]]


def test_fresh_database_holds_the_roles_and_rights_of_rights_py(fresh: dict[str, list[tuple[Any, ...]]]) -> None:
    """The other half of the rule: a role or right added to rights.py without the migration that
    seeds it fails here (existing databases would never see it)."""
    # the label columns are migration 1's history; views show the catalog's (tests/core/test_labels.py)
    assert [r[0] for r in fresh["seed:roles"]] == sorted(BUILTIN_ROLES)
    assert fresh["seed:role_rights"] == sorted(
        (r, right) for r, rights in BUILTIN_ROLES.items() for right in rights)
    assert {right for _, right in fresh["seed:role_rights"]} == set(RIGHTS)


# sha256 over the statements of each released migration. An applied migration is history: if one of
# these changes, write a new migration instead (add a row here once yours is released).
RELEASED = {
    1: "e5f5ed6ba48eff5ec25a4fa310276d68e96f74657ce95aa56bc73524a83159af",
    2: "7dd323ffc9ca60340cfc72f21721e337e65b4bda03f6b4da2ab1fbf9d8383eb4",
    3: "fb79c69ebbff6ffcd0a302920a0b41df3033e458e04bd1684c7d43c08cc65ff9",
    4: "b20a8c5debd9fa08396e6633894e525d5a1bdc63b47e4c41a4fac085c0157a00",
    5: "9ffedcf9adf3c03b63c6cfcfda99db86698b5e2da8d9123b3c6883c6778b917c",
    6: "693d97b27c382be52c49fabf23b37e913d0ff2f036b9bd1fa3ce145b769572ef",
    7: "48c09aa1f9efe1e1aca96ded7b07e42198c25d58db72db1a63c1e39a6717c327",
    8: "5462798e356e53fb847c9907db8d27e20813654baf2fc158fc4bd39769434bf4",
    9: "61aa9452ec36db20ad40423baa52ca870330cdf8afb30de804fb5f30fb81057e",
    10: "5aac512e71d38d7dbd8d19e6b15d14b714267b477c16bafc339e265cd986346d",
    11: "f5991f35a2c286d9fa3e27b9047582302181e5c29436844a06b8fb2c55e00d63",
    12: "d0b149639f06c2cbf9af88f4017cb570b5099dc807da6f64303476fa03eb6134",
    13: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # nothing on DuckDB
    14: "4aa22a2a2b17a7ddac41fe07120535a382973729afb850a9605e4ccc903fd5cd",
    15: "bc4d8b30bda2c4bed9798f1829cb4f661a1e6715e0f62b6ab5240ca75c5009bc",
    16: "b6e80ca8960676b4eb50a00e88392b1bd25d1c80bb4ca1eb03d2cd0949f63e76",
}
# The same over what PostgreSQL runs (statements_for: POSTGRES_INSTEAD and POSTGRES_ONLY applied); pinned from
# migration 12 on, the first release on PostgreSQL. Where the two differ is migrations.py's dialect table.
RELEASED_POSTGRESQL = {
    1: "e5f5ed6ba48eff5ec25a4fa310276d68e96f74657ce95aa56bc73524a83159af",
    2: "7dd323ffc9ca60340cfc72f21721e337e65b4bda03f6b4da2ab1fbf9d8383eb4",
    3: "d11b026aa7068a86a19fb2c4872dc51f0533c8600de63346bd0d89b84ea97b52",
    4: "b20a8c5debd9fa08396e6633894e525d5a1bdc63b47e4c41a4fac085c0157a00",
    5: "9ffedcf9adf3c03b63c6cfcfda99db86698b5e2da8d9123b3c6883c6778b917c",
    6: "f4f4d1b262894c701dd05377a01005fb51b6ad2c364d71b8240165d4f5b9b53a",
    7: "48c09aa1f9efe1e1aca96ded7b07e42198c25d58db72db1a63c1e39a6717c327",
    8: "5462798e356e53fb847c9907db8d27e20813654baf2fc158fc4bd39769434bf4",
    9: "61aa9452ec36db20ad40423baa52ca870330cdf8afb30de804fb5f30fb81057e",
    10: "5aac512e71d38d7dbd8d19e6b15d14b714267b477c16bafc339e265cd986346d",
    11: "f5991f35a2c286d9fa3e27b9047582302181e5c29436844a06b8fb2c55e00d63",
    12: "9c8dcef8ccf826b966a261895dd8c3b6ee1b8170354e83174101b5fef88710a3",
    13: "d7ac8071ecd042bc0fc50860bd3f9743e836fb8feabf5b1d32543e8f8b6250e5",
    14: "4aa22a2a2b17a7ddac41fe07120535a382973729afb850a9605e4ccc903fd5cd",
    15: "bc4d8b30bda2c4bed9798f1829cb4f661a1e6715e0f62b6ab5240ca75c5009bc",
    16: "b6e80ca8960676b4eb50a00e88392b1bd25d1c80bb4ca1eb03d2cd0949f63e76",
}


def _digest(statements: list[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()


def test_released_migrations_are_unchanged() -> None:
    by_id = {mid: statements for mid, _, statements in MIGRATIONS}
    assert {mid: _digest(by_id[mid]) for mid in RELEASED} == RELEASED
    # at most the newest migration may be unreleased (work in progress on a branch)
    assert set(by_id) - set(RELEASED) <= {max(by_id)}


def test_released_migrations_are_unchanged_on_postgresql() -> None:
    by_id = {mid: statements_for("postgresql", mid, statements) for mid, _, statements in MIGRATIONS}
    assert {mid: _digest(by_id[mid]) for mid in RELEASED_POSTGRESQL} == RELEASED_POSTGRESQL
    assert set(by_id) - set(RELEASED_POSTGRESQL) <= {max(by_id)}


def test_migration_ids_are_increasing_and_unique() -> None:
    ids = [m[0] for m in MIGRATIONS]
    assert ids == sorted(set(ids)) == list(range(1, len(ids) + 1))
