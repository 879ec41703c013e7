"""``Store.write(fn, isolation=...)``: a write's isolation level chosen by the caller (the claims' READ COMMITTED
for FOR UPDATE SKIP LOCKED), applied by PostgreSQL to every attempt, accepted and ignored by DuckDB (one level)."""

from __future__ import annotations

import pytest

from crmkit.errors import ValidationError
from crmkit.store import Store, Tx

pytestmark = pytest.mark.core


def _level(tx: Tx) -> str:
    return str(tx.one("SHOW transaction_isolation"))


def test_a_write_runs_at_the_isolation_asked_for_and_is_still_retried_from_the_start(db_location: str) -> None:
    store = Store(db_location)
    seen: list[str] = []

    def claim(tx: Tx) -> int:
        tx.execute("UPDATE users SET display_name = display_name || '!' WHERE name = 'admin'")
        if tx.dialect == "postgresql":
            seen.append(_level(tx))
            if len(seen) == 1:  # a conflict the first time: retried from the start, at the same level
                import psycopg.errors

                raise psycopg.errors.DeadlockDetected("deadlock detected (injected)")
        return 1

    assert store.write(claim, isolation="read committed") == 1
    assert store.one("SELECT display_name FROM users WHERE name = 'admin'").endswith("!")
    if store.dialect == "postgresql":
        assert seen == ["read committed", "read committed"]
        assert store.write(_level) == "repeatable read"  # the default: DuckDB's snapshot isolation
        assert store.write(_level, isolation="serializable") == "serializable"
        assert store.write(_level) == "repeatable read"  # a pooled connection keeps no level of a write before


def test_an_unknown_isolation_level_is_refused_before_anything_runs(db_location: str) -> None:
    store = Store(db_location)
    ran: list[bool] = []
    with pytest.raises(ValidationError, match="read committed"):
        store.write(lambda tx: ran.append(True), isolation="read uncommitted")  # type: ignore[arg-type]
    assert ran == []
