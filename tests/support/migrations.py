"""Databases as an older crmkit left them: migrations 1..k applied, as ``crmkit.migrations.migrate`` does."""

from __future__ import annotations

from pathlib import Path

import duckdb

from crmkit.migrations import MIGRATIONS


def database_at_level(path: Path, k: int) -> duckdb.DuckDBPyConnection:
    """Create ``path`` with migrations 1..k applied and recorded; returns the open connection for test data."""
    con = duckdb.connect(str(path))
    con.execute("BEGIN TRANSACTION")
    con.execute("CREATE TABLE _crmkit_migrations (id INTEGER PRIMARY KEY, name VARCHAR, "
                "applied_at TIMESTAMP DEFAULT current_timestamp)")
    for mid, name, statements in MIGRATIONS[:k]:
        for sql in statements:
            con.execute(sql)
        con.execute("INSERT INTO _crmkit_migrations (id, name) VALUES (?, ?)", [mid, name])
    con.execute("COMMIT")
    return con
