"""The transfer log on PostgreSQL, beyond the shared tests: several senders at once, and a sender's role.

On DuckDB one process writes at a time, so log_transfers' duplicate check (message key, address, recipient)
sees every committed row. On a server, senders run side by side at REPEATABLE READ: the check alone would
let two of them log the same triple, so PostgreSQL keeps a unique index on it and the insert turns a race
into a serialization failure, which ``Store.write`` retries (the retry's check then sees the other's row).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from support.postgres import PgCluster, fresh_database_url

import crmkit
from crmkit import privacy
from crmkit.privacy import TransferRecord
from crmkit.store import Store
from crmkit.store.postgres import close_pools

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh migrated crmkit database on the session's cluster (the template conftest's fixtures clone)."""
    template = pg_cluster.template_for("crm", lambda url: Store(url).close())
    with fresh_database_url(pg_cluster, template) as url:
        yield url


def _record(address_id: int, recipient: str, key: str = "k") -> TransferRecord:
    return TransferRecord(user_name="admin", channel="teams_manual", address_id=address_id, fields=["email"],
                          outcome="sent", recipient_id=recipient, message_key=key)


@pytest.mark.parametrize("path", ["row", "bulk"])
@pytest.mark.parametrize("mode", ["error", "ignore"])
def test_two_senders_racing_on_one_triple_log_it_once(pg_url: str, mode: str, path: str) -> None:
    crm = crmkit.open(pg_url)
    a = crm.add_address(company="Firma", last_name="Race")
    others = [_record(a, f"o{i}") for i in range(privacy.BULK_ROWS + 1)] if path == "bulk" else []
    snapshot_taken, first_committed = threading.Event(), threading.Event()
    attempts: list[int] = []
    outcome: dict[str, object] = {}

    def second_sender() -> None:
        store = Store(pg_url)

        def run(tx: crmkit.store.Tx) -> int:
            attempts.append(1)
            tx.one("SELECT count(*) FROM transfer_log")  # its snapshot: before the first sender commits
            snapshot_taken.set()
            first_committed.wait(20)
            return privacy.log_transfers(tx, [*others, _record(a, "r1")], on_conflict=mode)

        try:
            outcome["written"] = store.write(run)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=second_sender)
    thread.start()
    assert snapshot_taken.wait(20)
    assert crm.store.write(lambda tx: privacy.log_transfers(tx, [_record(a, "r1")])) == 1
    first_committed.set()
    thread.join(30)
    assert not thread.is_alive()

    rows = crm.store.read(lambda tx: tx.rows("SELECT message_key, address_id, recipient_id FROM transfer_log"))
    assert sorted(rows).count(("k", a, "r1")) == 1
    assert len(attempts) == 2  # the race was retried with a fresh snapshot
    if mode == "error":
        assert isinstance(outcome.get("error"), privacy.DuplicateTransfer)
        assert len(rows) == 1  # nothing of the second sender's call was written
    else:
        assert outcome == {"written": len(others)}
        assert len(rows) == 1 + len(others)


def test_a_sender_needs_no_update_or_delete_right_to_log(pg_url: str, pg_cluster: PgCluster) -> None:
    """Appends are INSERTs only: a role with INSERT on the log and SELECT on the columns the duplicate check
    reads logs rows on both paths, and its duplicate is refused as for anyone."""
    crm = crmkit.open(pg_url)
    a = crm.add_address(company="Firma", last_name="Sender")
    role = f"h3_sender_{pg_cluster.unique_name('r')}"
    dedupe_columns = "message_key, address_id, recipient_id, dedupe_key"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for grant in (f"GRANT SELECT ON _crmkit_migrations TO {role}",
                      f"GRANT INSERT, SELECT ({dedupe_columns}) ON transfer_log TO {role}",
                      f"GRANT USAGE ON SEQUENCE transfer_log_seq TO {role}"):
            admin.execute(grant)
    as_sender = pg_url.replace("postgresql://postgres@", f"postgresql://{role}@")
    try:
        store = Store(as_sender)
        assert store.write(lambda tx: privacy.log_transfers(tx, [_record(a, "r1")])) == 1
        many = [_record(a, f"m{i}") for i in range(privacy.BULK_ROWS + 1)]
        assert store.write(lambda tx: privacy.log_transfers(tx, many)) == len(many)
        with pytest.raises(privacy.DuplicateTransfer):
            store.write(lambda tx: privacy.log_transfers(tx, [_record(a, "r1")]))
        assert store.write(lambda tx: privacy.log_transfers(tx, many, on_conflict="ignore")) == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            store.write(lambda tx: tx.execute("DELETE FROM transfer_log"))
        assert crm.store.one("SELECT count(*) FROM transfer_log") == 1 + len(many)
    finally:
        close_pools(as_sender)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_privacy_officers_own_login_compacts_the_log(pg_url: str) -> None:
    """With per-user logins (crmkit.store.pg_roles) CLUSTER is the table owner's: compact_transfer_log runs it
    through the owner's function, which privacy.admin's login may execute."""
    from crmkit.store.pg_roles import drop_database_roles, sync_database_roles, user_role

    crm = crmkit.open(pg_url)
    crm.add_user("pia", "Pia Privacy", roles=["privacy_officer"])
    a, b = (crm.add_address(company="Firma", last_name=name) for name in ("B", "A"))
    crm.store.write(lambda tx: privacy.log_transfers(tx, [_record(b, "r1"), _record(a, "r2"), _record(b, "r3")]))
    sync_database_roles(crm.store)
    pia_url = pg_url.replace("postgres@", f"{user_role(pg_url.rsplit('/', 1)[1], 'pia')}@", 1)
    try:
        pia = crmkit.open(pia_url)
        assert pia.user.name == "pia"
        assert privacy.compact_transfer_log(pia) == 3
        physical = crm.store.df("SELECT address_id FROM transfer_log")["address_id"].tolist()
        assert physical == sorted(physical) == [a, b, b]
        audit = crm.audit_log(scope="privacy")
        assert audit[audit.key == "transfer_log.compact"]["user_name"].tolist() == ["pia"]
    finally:
        close_pools(pia_url)
        drop_database_roles(crm.store)
