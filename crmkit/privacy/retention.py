"""How long the transfer log keeps rows: the retention period, the purge by age, the compaction after it.

Changes when the rules for keeping data change. :func:`purge_transfer_log` is the only way rows
leave the log; it and :func:`compact_transfer_log` need ``privacy.admin`` and are audited.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from ..errors import ValidationError
from ._common import now as _now

if TYPE_CHECKING:
    from ..crm import CRM
    from ..session import Session
    from ..store import Tx

__all__ = [
    "compact_transfer_log",
    "purge_transfer_log",
    "retention_days",
    "set_retention_days",
]

# PostgreSQL's index in the access report's order (POSTGRES_ONLY[12] in crmkit/migrations.py).
_PG_ORDER_INDEX = "transfer_log_address_time"


def retention_days(crm: Session) -> int:
    """Days a transfer-log row is kept (the system setting ``privacy.retention_days``)."""
    return int(crm.setting("privacy.retention_days"))


def set_retention_days(crm: CRM, days: int) -> None:
    """Change the retention period (needs ``privacy.admin``); audited as a system setting.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
        ValidationError: not a whole number of days from 1 to 36500.
    """
    crm.require("privacy.admin")
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36_500:
        raise ValidationError("The retention period is a whole number of days from 1 to 36500.")
    crm.set_setting("privacy.retention_days", days)


def purge_transfer_log(crm: Session) -> int:
    """Delete rows older than ``privacy.retention_days`` (needs ``privacy.admin``); audited with the count.

    The only way rows leave the log. Returns the number deleted.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
        ValidationError: the retention setting is not a positive number of days.
    """
    crm.require("privacy.admin")
    days = crm.setting("privacy.retention_days")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValidationError(f"privacy.retention_days is {days!r}; set a positive number of days first.")
    cutoff = _now() - timedelta(days=days)

    def run(tx: Tx) -> int:
        count = int(tx.one("SELECT count(*) FROM transfer_log WHERE logged_at < ?", [cutoff]))
        if count:
            tx.execute("DELETE FROM transfer_log WHERE logged_at < ?", [cutoff])
        crm.audit(tx, "privacy", "transfer_log.purge", None,
                   {"deleted": count, "older_than": cutoff.isoformat(), "retention_days": days})
        return count

    return crm.store.write(run)


def compact_transfer_log(crm: Session) -> int:
    """Rewrite the transfer log in address order (needs ``privacy.admin``); return its row count. Audited.

    The log grows in time order, so one address's rows are scattered over the file and an access
    report fetches each from a different block. Rewritten in (address_id, logged_at) order they sit
    together. Measured on 10 million rows (1 million addresses, 2 shared cores, through
    :func:`access_report` with the store's per-operation attach): p50 ~25-28 ms compacted versus
    ~35-60 ms in time order with the ``address_id`` index (and ~110-180 ms without any index).
    Run it after a purge at a quiet time (the worker's nightly maintenance): it holds the write
    lock for ~2.5 minutes per 10 million rows, and other processes wait at most their lock timeout.
    On PostgreSQL it is ``CLUSTER`` by the index on (address_id, logged_at, id), which the report reads
    in order; it locks the table while it runs, so readers and senders wait too.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
    """
    crm.require("privacy.admin")

    def run(tx: Tx) -> int:
        if tx.dialect == "postgresql":
            from ..store.pg_roles import compact_transfer_log as owners_compaction

            # PostgreSQL rewrites a table in an index's order itself (indexes, grants and the sequence stay):
            # the index on (address_id, logged_at, id) of migration 12 is the order DuckDB's copy below sorts by.
            # CLUSTER is the table owner's: a per-user login runs it through the owner's function (pg_roles);
            # without synced roles crmkit connects as the owner and runs it itself.
            count = owners_compaction(tx)
            if count is None:
                tx.execute(f"CLUSTER transfer_log USING {_PG_ORDER_INDEX}")
                count = int(tx.rows("SELECT count(*) FROM transfer_log")[0][0])
            crm.audit(tx, "privacy", "transfer_log.compact", None, {"rows": count})
            return count
        # Re-create the table and its indexes from their own DDL, so this follows later migrations.
        table_sql = tx.rows(
            "SELECT sql FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = 'main' "
            "AND table_name = 'transfer_log'"
        )[0][0]
        index_sqls = [r[0] for r in tx.rows(
            "SELECT sql FROM duckdb_indexes() WHERE database_name = current_database() AND schema_name = 'main' "
            "AND table_name = 'transfer_log' AND sql IS NOT NULL"
        )]
        index_names = [r[0] for r in tx.rows(
            "SELECT index_name FROM duckdb_indexes() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = 'transfer_log' AND sql IS NOT NULL"
        )]
        tx.execute("CREATE TABLE _transfer_log_sorted AS SELECT * FROM transfer_log "
                   "ORDER BY address_id, logged_at, id")
        for name in index_names:
            tx.execute(f'DROP INDEX "{name}"')
        tx.execute("DROP TABLE transfer_log")
        tx.execute(table_sql)
        tx.execute("INSERT INTO transfer_log SELECT * FROM _transfer_log_sorted")
        tx.execute("DROP TABLE _transfer_log_sorted")
        for sql in index_sqls:
            tx.execute(sql)
        count = int(tx.rows("SELECT count(*) FROM transfer_log")[0][0])
        crm.audit(tx, "privacy", "transfer_log.compact", None, {"rows": count})
        return count

    return crm.store.write(run)
