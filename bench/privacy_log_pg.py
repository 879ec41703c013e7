"""The GDPR access report over a large transfer log on PostgreSQL: bench.privacy_log's figures for the server.

Setup: a throwaway PostgreSQL 15 cluster (tests/support/postgres.py ``PgCluster``: initdb in a temp folder,
loopback only, removed afterwards; durability off, the server's other settings at their defaults), one
database migrated by ``crmkit.open``, and 10,000,000 transfer-log rows for 1,000,000 addresses written by
one ``INSERT … SELECT`` over ``generate_series`` (no Python row loop; the log's indexes dropped during the
insert and re-created from their own definitions after it, then ANALYZE): the same shape as
bench.privacy_log's DuckDB log (two years in time order, 25 users, 300 recipients, ~10 % campaign sends,
~3 % failed, ~1 % blocked, 1-4 fields, message keys and ids, dedupe keys), spread by PostgreSQL's
``hashint8extended`` instead of DuckDB's ``hash``.

(a) ``crmkit.privacy.access_report(crm, address_id)`` through the real store (pool, read-only transaction,
    rights check, DataFrame), p50/p95 over ``runs`` different addresses, on the log as written.
(b) ``crmkit.privacy.compact_transfer_log(crm)`` (CLUSTER by (address_id, logged_at, id)); its duration.
(c) The same report over ``runs`` other addresses on the compacted log. Goal (issue 15): p50 ≤ 50 ms.

Without PostgreSQL 15 on the machine (``/usr/lib/postgresql/15/bin``) the module reports nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import psycopg

import crmkit

from .common import Context, Result, p50, p95, say
from .privacy_log import ADDRESSES, RECIPIENTS, ROWS, USERS, WARMUP, time_reports

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
# tests/support is not a package on sys.path: the throwaway cluster the tests use
import support.postgres as pgsupport
from support.postgres import PG_BIN, PgCluster

# h(k): a non-negative 64-bit hash of the row number with seed k (DuckDB's hash(i, k) in bench.privacy_log).
_H = "(hashint8extended(i, {k}) & 9223372036854775807)"
# The recipient: rows 2j and 2j+1 share a message key (as on DuckDB), so they go to two neighbouring recipients
# and (message_key, address_id, recipient_id) stays unique, as transfer_log_unique requires.
_RECIPIENT = "(((hashint8extended(i / 2, 5) & 9223372036854775807) % {recipients} + i % 2) % {recipients})"

BUILD_SQL = """
INSERT INTO transfer_log (logged_at, user_name, ms_account, channel, trigger, address_id, fields, recipient_id,
                          recipient_name, purpose, outcome, message_id, message_key, detail, dedupe_key)
SELECT
    TIMESTAMP '2024-12-01 08:00:00' + make_interval(secs => i * ({span_s}::float8 / {rows})) AS logged_at,
    'user' || ({h1} % {users}) AS user_name,
    'user' || ({h1} % {users}) || '@contoso.example' AS ms_account,
    CASE WHEN {h2} % 10 = 0 THEN 'teams_campaign' ELSE 'teams_manual' END AS channel,
    CASE WHEN {h2} % 10 = 0 THEN 'campaign' ELSE 'manual' END AS trigger,
    1 + {h3} % {addresses} AS address_id,
    (ARRAY['company', 'name', 'address', 'phone', 'email']::VARCHAR[])[1:1 + {h4} % 4] AS fields,
    '00000000-0000-4000-8000-' || (100000000000 + {r}) AS recipient_id,
    'Kollegin ' || {r} AS recipient_name,
    CASE WHEN {h6} % 20 = 0 THEN 'Angebot nachfassen' END AS purpose,
    CASE WHEN {h7} % 100 < 3 THEN 'failed' WHEN {h7} % 100 = 3 THEN 'blocked' ELSE 'sent' END AS outcome,
    CASE WHEN {h7} % 100 >= 4 THEN CAST(1700000000000 + i AS VARCHAR) END AS message_id,
    md5(CAST(i / 2 AS VARCHAR)) AS message_key,
    CASE WHEN {h7} % 100 < 3 THEN 'Teams answered 403 Forbidden'
         WHEN {h7} % 100 = 3 THEN 'flag:no_transfer' END AS detail,
    hashint8extended(i, 8) AS dedupe_key
FROM generate_series(0::BIGINT, {last}) AS g(i)
"""


def _build(url: str, rows: int, addresses: int) -> tuple[float, float, int, int]:
    """Seconds to fill the log (drop its indexes, one INSERT … SELECT, re-create them, ANALYZE), the seconds
    of the index builds within that, how many indexes, and the size of table + indexes in bytes."""
    hashes = {f"h{k}": _H.format(k=k) for k in (1, 2, 3, 4, 6, 7)}
    sql = BUILD_SQL.format(rows=rows, last=rows - 1, addresses=addresses, users=USERS, recipients=RECIPIENTS,
                           span_s=2 * 365 * 86_400, r=_RECIPIENT.format(recipients=RECIPIENTS), **hashes)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("SET maintenance_work_mem = '512MB'")
        started = time.perf_counter()
        indexes = con.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'transfer_log'").fetchall()
        for name, _ in indexes:
            con.execute(f'DROP INDEX "{name}"')
        con.execute(sql)
        indexed = time.perf_counter()
        for _, definition in indexes:
            con.execute(definition)
        index_s = time.perf_counter() - indexed
        con.execute("ANALYZE transfer_log")
        build_s = time.perf_counter() - started
        size = int(con.execute("SELECT pg_total_relation_size('transfer_log')").fetchone()[0])  # type: ignore[index]
    return build_s, index_s, len(indexes), size


def run(ctx: Context) -> list[Result]:
    if not (PG_BIN / "initdb").exists():
        say(f"privacy_log_pg: no PostgreSQL 15 in {PG_BIN}; skipped")
        return []
    rows = ROWS if not ctx.quick else ROWS // 10
    addresses = ADDRESSES if not ctx.quick else ADDRESSES // 10
    runs = max(ctx.runs, 30) if not ctx.quick else ctx.runs
    # On disk, not tmpfs: the log, its indexes and CLUSTER's copy take ~10 GB at full size, which the page
    # cache may give back under pressure and tmpfs may not (other jobs share this machine's memory).
    pgsupport._cluster_parent = lambda: None
    cluster = PgCluster().start()
    try:
        return _measure(ctx, cluster, rows, addresses, runs)
    finally:
        from crmkit.store.postgres import close_pools

        close_pools()
        cluster.stop()


def _measure(ctx: Context, cluster: PgCluster, rows: int, addresses: int, runs: int) -> list[Result]:
    url = cluster.url(cluster.create_database("privacy_log"))
    crmkit.open(url, "admin").store.close()  # a migrated crmkit database
    say(f"privacy_log_pg: writing {rows:,} transfer-log rows for {addresses:,} addresses in one INSERT … SELECT "
        f"(cluster in {cluster.folder})")
    build_s, index_s, n_indexes, size = _build(url, rows, addresses)
    say(f"privacy_log_pg: built in {build_s:.1f} s (indexes {index_s:.1f} s), table + indexes {size / 1e6:.0f} MB")

    crm = crmkit.open(url, "admin")
    times = time_reports(crm, "SELECT DISTINCT address_id FROM transfer_log TABLESAMPLE SYSTEM (0.1) REPEATABLE (7)",
                         rows, runs, "privacy_log_pg")
    crm.store.close()
    before, compact_s, after = times.before, times.compact_s, times.after

    size_text = f"{rows:,} rows, {addresses:,} addresses"
    per = f"{min(times.counts)}-{max(times.counts)} rows per report"
    server = "PostgreSQL 15, throwaway cluster (defaults, fsync off)"
    return [
        Result(f"PostgreSQL: transfer log build: {size_text} (one INSERT … SELECT over generate_series)",
               round(build_s, 1), "s",
               note=f"{server}; of it {index_s:.1f} s re-creating the {n_indexes} indexes; table + indexes "
                    f"{size / 1e6:.0f} MB", samples=[round(build_s, 2)]),
        Result(f"PostgreSQL: `access_report` one address, {size_text}, time order (before compaction): p50",
               round(p50(before), 2), "ms", "≤ 50 ms (issue 15)", p50(before) <= 50,
               note=f"p95 {p95(before):.1f} ms; {runs} different addresses after {WARMUP} warm-ups",
               samples=[round(s, 2) for s in before]),
        Result(f"PostgreSQL: `compact_transfer_log` (CLUSTER) on {rows:,} rows", round(compact_s, 1), "s",
               samples=[round(compact_s, 2)]),
        Result(f"PostgreSQL: `access_report` one address, {size_text}, compacted: p50", round(p50(after), 2), "ms",
               "≤ 50 ms (issue 15)", p50(after) <= 50,
               note=f"p95 {p95(after):.1f} ms; {runs} different addresses after {WARMUP} warm-ups ({per})",
               samples=[round(s, 2) for s in after]),
    ]
