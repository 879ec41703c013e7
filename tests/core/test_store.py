"""The store facade: migrations, per-operation attach (DuckDB), typed errors on bad files and newer schemas."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import crmkit
from crmkit.migrations import MIGRATIONS

pytestmark = pytest.mark.core


def test_new_file_gets_every_migration(db_path: Path) -> None:
    crmkit.open(db_path)
    con = duckdb.connect(str(db_path))
    ids = [r[0] for r in con.execute("SELECT id FROM _crmkit_migrations ORDER BY id").fetchall()]
    con.close()
    assert ids == [m[0] for m in MIGRATIONS]


def test_file_is_not_locked_between_operations(db_path: Path) -> None:
    crm = crmkit.open(db_path)
    crm.add_address(company="Acme GmbH", city="Berlin")
    # Another connection (as another process would) can write while the session stays open.
    con = duckdb.connect(str(db_path))
    con.execute("UPDATE addresses SET city = 'Bonn'")
    con.close()
    assert crm.addresses()["city"].tolist() == ["Bonn"]


def test_tracer_sees_sql_and_params(db_location: str) -> None:
    seen: list[tuple[str, list[object]]] = []
    crm = crmkit.open(db_location, tracer=lambda sql, params: seen.append((sql, list(params))))
    seen.clear()
    crm.addresses(city="Köln")
    assert any("city = ?" in sql and params == ["Köln"] for sql, params in seen)


def test_missing_folder_is_a_path_error(tmp_path: Path) -> None:
    with pytest.raises(crmkit.DatabasePathError, match="does not exist"):
        crmkit.open(tmp_path / "nope" / "crm.duckdb")
    assert not (tmp_path / "nope").exists()


def test_directory_is_a_path_error(tmp_path: Path) -> None:
    with pytest.raises(crmkit.DatabasePathError, match="folder"):
        crmkit.open(tmp_path)


def test_corrupt_file_is_refused_and_left_alone(db_path: Path) -> None:
    junk = b"this is not a database\n" * 200
    db_path.write_bytes(junk)
    with pytest.raises(crmkit.NotACrmkitDatabase, match="crmkit init"):
        crmkit.open(db_path)
    assert db_path.read_bytes() == junk


def test_foreign_duckdb_is_refused_and_left_alone(db_path: Path) -> None:
    con = duckdb.connect(str(db_path))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    before = db_path.read_bytes()
    with pytest.raises(crmkit.NotACrmkitDatabase, match="invoices"):
        crmkit.open(db_path)
    con = duckdb.connect(str(db_path))
    assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["invoices"]
    con.close()
    assert len(db_path.read_bytes()) == len(before)


def test_newer_schema_is_refused(db_location: str) -> None:
    crmkit.open(db_location).store.execute(
        "INSERT INTO _crmkit_migrations (id, name) VALUES (9999, 'from the future')")
    with pytest.raises(crmkit.NotACrmkitDatabase, match="newer crmkit"):
        crmkit.open(db_location)


def test_failed_write_leaves_nothing(crm: crmkit.CRM) -> None:
    def half(tx: crmkit.store.Tx) -> None:
        tx.execute("INSERT INTO contact_types (code, label) VALUES ('X1', 'half')")
        raise RuntimeError("crash in the middle")

    with pytest.raises(RuntimeError):
        crm.store.write(half)
    assert "X1" not in crm.contact_types()["code"].tolist()
