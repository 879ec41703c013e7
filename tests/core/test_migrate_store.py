"""Moving a CRM between stores: ``crmkit migrate-store`` / :func:`crmkit.store.copy.migrate_store`.

A CRM with demo data, users, settings, a transfer log (``fields`` arrays, microsecond timestamps), contacts,
an outbox with unfinished rows and campaigns goes DuckDB → PostgreSQL → DuckDB and comes back table by table
the same; a target holding data is refused and left as it was; a copy that does not verify rolls back; the
CLI never prints the password of a URL. The tests that need the server carry the postgres tier.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit import demo_data
from crmkit.errors import DatabasePathError, StoreError, StoreNotEmpty
from crmkit.migrations import DERIVED_TABLES
from crmkit.privacy import TransferRecord, log_transfers
from crmkit.store import Store, Tx
from crmkit.store import copy as store_copy
from crmkit.store.copy import migrate_store, table_checksums
from crmkit.teams import outbox

PYTHON = sys.executable
ODD_JSON = '{"b" :  [1, 2.50],\n "a": "ä – 😀", "c": null}'  # spacing, key order, non-ASCII: kept byte for byte


def build_crm(location: str | Path) -> None:
    """A CRM with a bit of everything crmkit stores, written through crmkit's own functions."""
    crm = crmkit.open(location)
    demo_data.generate(crm, 300, seed=7)  # addresses, sub-addresses, contacts, the demo users
    crm.add_user("zoë", "Zoë Ünal", roles=["sales"], email=None)
    crm.set_setting("teams.subject_prefix", "CRM – ")
    crm.set_user_setting("language", "en")
    first = crm.add_address(kind="person", first_name="Jürgen", last_name="Øster", company="",
                            street=None, city="Zürich", email="j@example.test")
    crm.add_contact(first, "TEL", "Rückruf", notes="Zeile 1\nZeile 2\t“zitiert”")
    with_micros = datetime(2026, 3, 4, 5, 6, 7, 123456)
    records = [
        TransferRecord(user_name="admin", channel="teams_manual", address_id=first, fields=["first_name", "city"],
                       outcome="sent", recipient_id="r-1", recipient_name="Lea Hoffmann", purpose="Rückruf",
                       message_id="m-1", message_key="k-1", logged_at=with_micros),
        TransferRecord(user_name="admin", channel="file_export", address_id=first, fields=[], outcome="blocked",
                       detail="", logged_at=with_micros),
    ]

    def write(tx: Tx) -> None:
        log_transfers(tx, records)
        batch = outbox.create_batch(tx, user="admin", account="anna.schmidt@contoso.example", channel="teams",
                                    trigger="manual", purpose="Rückruf", subject="Leads ✓",
                                    options={"importance": "normal", "chat": "oneOnOne"}, record_contact=True,
                                    idempotency_key="copy-test")
        outbox.add_messages(tx, batch, [
            outbox.OutboxMessage(payload={"text": f"Adresse {i} – ü"}, marker=f"mk-{i}", chat_kind="oneOnOne",
                                 members=["u-1", "u-2"], recipients=[{"id": "u-2", "name": "Lea"}],
                                 address_ids=[first], field_names={str(first): ["first_name"]})
            for i in range(3)
        ])
        # a document exactly as some other writer left it (crmkit's own json.dumps would normalise it)
        tx.execute("INSERT INTO display_formats VALUES ('copy.test', ?, ?, 'admin')", [ODD_JSON, with_micros])

    crm.store.write(write)
    ids = crm.store.read(lambda tx: [r[0] for r in tx.rows("SELECT id FROM outbox ORDER BY seq")])
    outbox.claim(crm.store, ids[:1])  # one row in flight (sending), two pending
    campaign = crm.campaigns.add_campaign("Frühjahr", "Messe – Stand 4")
    activity = crm.campaigns.add_activity(campaign, "Einladung")
    crm.campaigns.add_participants(activity, [first, 1, 2])
    reaction = crm.campaigns.add_reaction(activity, "Zusage")
    crm.campaigns.record_reaction(reaction, [first], notes="per Telefon")
    crm.store.close()


def rows_by_table(location: str | Path) -> dict[str, list[str]]:
    """Every table's rows as sorted reprs of the values the driver returns (independent of copy.py's checksum);
    PostgreSQL's derived tables (migrations.DERIVED_TABLES) left out, after checking them against their source."""
    store = Store(str(location))

    def run(tx: Tx) -> dict[str, list[str]]:
        names = [r[0] for r in tx.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema = current_schema() AND table_type = 'BASE TABLE'")]
        out = {}
        if "address_count" in names:  # the trigger-kept total of the record table
            assert tx.one("SELECT n FROM address_count") == tx.one("SELECT count(*) FROM addresses")
        for name in names:
            if name in DERIVED_TABLES:
                continue
            cols = [r[0] for r in tx.rows(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
                "AND table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position", [name])]
            out[name] = sorted(repr(r) for r in tx.rows(f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} '
                                                           f'FROM "{name}"'))
        return out

    try:
        return store.read(run)
    finally:
        store.close()


ID_TABLES = ("addresses", "audit", "transfer_log", "campaigns")  # ids from max(id)+1 or from a sequence


def ids_of(location: str) -> dict[str, list[int]]:
    store = Store(location)
    try:
        return {t: store.read(lambda tx, t=t: [r[0] for r in tx.rows(f"SELECT id FROM {t}")]) for t in ID_TABLES}
    finally:
        store.close()


def add_after_copy(location: str) -> None:
    """A new row in each of ID_TABLES: none may take the id of a copied one."""
    crm = crmkit.open(location)
    try:
        address = crm.add_address(kind="person", last_name="Neu", city="Wien")
        crm.set_setting("teams.subject_prefix", "Neu – ")  # an audit row (audit_seq)
        crm.campaigns.add_campaign("Nach dem Umzug")  # campaigns_seq
        crm.store.write(lambda tx: log_transfers(tx, [TransferRecord(
            user_name="admin", channel="file_export", address_id=address, fields=["city"], outcome="sent")]))
    finally:
        crm.store.close()


@pytest.mark.postgres
def test_round_trip_duckdb_postgres_duckdb_is_lossless(tmp_path: Path, pg_database_url: str) -> None:
    first, back = tmp_path / "first.duckdb", tmp_path / "back.duckdb"
    build_crm(first)
    original = rows_by_table(first)
    assert len(original["addresses"]) > 300 and len(original["outbox"]) == 3

    there = migrate_store(str(first), pg_database_url)
    assert there.verified and there.rows == sum(len(v) for v in original.values())
    on_pg = rows_by_table(pg_database_url)
    assert on_pg == original  # the same Python values from psycopg as from DuckDB, every table

    home = migrate_store(pg_database_url, str(back))
    assert home.verified
    assert rows_by_table(back) == original
    assert table_checksums(str(back)) == table_checksums(str(first)) == table_checksums(pg_database_url)
    assert {t.name: (t.rows, t.checksum) for t in home.tables} == table_checksums(str(first))

    # the types that could bend on the way: arrays, microseconds, empty text vs NULL, JSON text, the outbox
    store = Store(str(back))
    try:
        log = store.df("SELECT fields, logged_at, detail FROM transfer_log WHERE address_id = "
                       "(SELECT max(address_id) FROM transfer_log) ORDER BY id")
        assert [list(f) for f in log["fields"]] == [["first_name", "city"], []]
        assert log["logged_at"][0] == datetime(2026, 3, 4, 5, 6, 7, 123456)
        assert log["detail"].isna()[0] and log["detail"][1] == ""
        assert store.one("SELECT spec FROM display_formats WHERE area = 'copy.test'") == ODD_JSON
        assert store.one("SELECT company FROM addresses WHERE last_name = 'Øster'") == ""
        assert store.one("SELECT street FROM addresses WHERE last_name = 'Øster'") is None
        outbox_states = store.read(lambda tx: sorted(r[0] for r in tx.rows("SELECT status FROM outbox")))
        assert outbox_states == ["pending", "pending", "sending"]
    finally:
        store.close()

    # ids after the copy continue past the copied ones, on both
    for location in (pg_database_url, str(back)):
        old = ids_of(location)
        add_after_copy(location)
        new = ids_of(location)
        for table, ids in new.items():
            assert len(set(ids)) == len(ids), f"{table}: a new id collided with a copied one"
            added = set(ids) - set(old[table])
            assert added and min(added) > max(old[table]), table


@pytest.mark.postgres
def test_a_target_with_data_is_refused_and_left_unchanged(tmp_path: Path, pg_database_url: str) -> None:
    source = tmp_path / "source.duckdb"
    build_crm(source)
    crm = crmkit.open(pg_database_url)
    crm.add_address(kind="person", last_name="Schon da")
    crm.set_setting("teams.subject_prefix", "Eigene – ")  # a seeded table untouched, an audit row added
    crm.store.close()
    before = rows_by_table(pg_database_url)
    with pytest.raises(StoreNotEmpty) as caught:
        migrate_store(str(source), pg_database_url)
    text = str(caught.value)
    assert "addresses" in text and "audit" in text and "system_settings" in text and "roles" not in text
    assert "enthält schon Daten" in caught.value.text("de")
    assert rows_by_table(pg_database_url) == before
    # a seeded row changed is data too (a renamed role), even with every count as in a new database
    fresh = tmp_path / "fresh.duckdb"
    store = Store(str(fresh))
    store.execute("UPDATE roles SET label_en = 'Sellers' WHERE name = 'sales'")
    store.close()
    with pytest.raises(StoreNotEmpty, match="roles"):
        migrate_store(str(source), str(fresh))


def drop_last(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return rows[:-1]


def bend_one(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same number of rows, one text value of the last changed by one character."""
    last = list(rows[-1])
    i = next(i for i, v in enumerate(last) if isinstance(v, str) and v)
    last[i] = last[i][:-1] + chr(ord(last[i][-1]) ^ 1)
    return [*rows[:-1], tuple(last)]


@pytest.mark.postgres
@pytest.mark.parametrize(("bend", "why"), [(drop_last, "2 rows sent, 1 rows back"),
                                           (bend_one, "2 rows sent, 2 rows back, checksums differ")])
def test_a_copy_that_does_not_verify_rolls_back(tmp_path: Path, pg_database_url: str, monkeypatch: pytest.MonkeyPatch,
                                                bend: Any, why: str) -> None:
    source = tmp_path / "source.duckdb"
    build_crm(source)
    empty = table_checksums(pg_database_url)
    real = store_copy._writer

    def lossy(tx: Tx, table: str, columns: Any) -> Any:
        write = real(tx, table, columns)
        return (lambda rows: write(bend(rows))) if table == "transfer_log" else write

    monkeypatch.setattr(store_copy, "_writer", lossy)
    with pytest.raises(StoreError, match=f"transfer_log: {why}") as caught:
        migrate_store(str(source), pg_database_url)
    assert not isinstance(caught.value, StoreNotEmpty)
    assert table_checksums(pg_database_url) == empty  # nothing of the copy committed
    monkeypatch.setattr(store_copy, "_writer", real)
    assert migrate_store(str(source), pg_database_url).verified  # and the target is still empty


@pytest.mark.core
def test_duckdb_to_duckdb_and_the_refusals(tmp_path: Path) -> None:
    source, target = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    build_crm(source)
    report = migrate_store(str(source), str(target))
    assert report.verified and rows_by_table(target) == rows_by_table(source)
    with pytest.raises(StoreNotEmpty):
        migrate_store(str(source), str(target))
    with pytest.raises(StoreError, match="same database"):
        migrate_store(str(source), str(source))


@pytest.mark.core
def test_a_missing_source_file_is_refused_not_created(tmp_path: Path) -> None:
    missing, target = tmp_path / "typo.duckdb", tmp_path / "target.duckdb"
    with pytest.raises(DatabasePathError, match="no database at"):
        migrate_store(str(missing), str(target))
    assert not missing.exists() and not target.exists()


@pytest.mark.postgres
def test_a_value_the_target_refuses_names_the_table_and_leaves_no_file(tmp_path: Path, pg_database_url: str) -> None:
    """PostgreSQL keeps JSON columns as TEXT; a document that is no JSON (written by some other tool) cannot
    go into DuckDB's JSON type: a typed error naming the table, and the new target file is removed again."""
    crm = crmkit.open(pg_database_url)
    crm.add_address(kind="person", last_name="Da")
    crm.store.execute("INSERT INTO display_formats VALUES ('broken', '{not json', ?, 'admin')",
                      [datetime(2026, 1, 1)])
    crm.store.close()
    target = tmp_path / "target.duckdb"
    with pytest.raises(StoreError, match=r"Copying table display_formats into .*target\.duckdb failed"):
        migrate_store(pg_database_url, str(target))
    assert not target.exists() and not Path(f"{target}.wal").exists()


def crmkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    return subprocess.run([PYTHON, "-m", "crmkit.cli", *args], capture_output=True, text=True, timeout=300,
                          env=clean, check=False)


@pytest.mark.postgres
def test_cli_copies_shows_tables_and_never_the_password(tmp_path: Path, pg_database_url: str) -> None:
    source = tmp_path / "source.duckdb"
    build_crm(source)
    secret = "s3cret"
    with_password = pg_database_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in with_password
    done = crmkit_cli("migrate-store", str(source), with_password)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()
    assert len(summary) == 1 and "verified" in summary[0] and pg_database_url in summary[0]
    tables = table_checksums(str(source))
    for name, (rows, _) in tables.items():
        assert any(line.split()[:2] == [name, f"{rows:,}"] for line in done.stderr.splitlines()), name
    assert f"{len(tables)} tables, {sum(r for r, _ in tables.values()):,} rows" in summary[0]
    assert table_checksums(pg_database_url) == tables

    again = crmkit_cli("migrate-store", str(source), with_password)
    assert again.returncode == 2 and again.stdout == ""
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crmkit: error: ") and "already holds data" in lines[0]
    assert secret not in again.stderr


# -- the README's section, run as written ----------------------------------------------------------------

README_SECTION = "Run crmkit on PostgreSQL"
SHOWN_SERVER = "db.example.org:5432"  # the server the README's lines name; the test's cluster stands in


def _line_pattern(line: str, host: str) -> re.Pattern[str]:
    """A line of the README's printed output as a pattern: any numbers, paths and column widths."""
    line = line.replace("/home/you/crm.duckdb", "\0PATH\0").replace(SHOWN_SERVER, "\0HOST\0")
    parts = re.split(r"(\0PATH\0|\0HOST\0|\d[\d,.]*\d|\d| +)", line)
    out = []
    for part in parts:
        if part == "\0PATH\0":
            out.append(r"/\S*/crm\.duckdb")
        elif part == "\0HOST\0":
            out.append(re.escape(host))
        elif re.fullmatch(r"\d[\d,.]*\d|\d", part or "x"):
            out.append(r"\d[\d,.]*")
        elif part and part.strip() == "":
            out.append(" +")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))


@pytest.mark.postgres
def test_readme_postgresql_section_runs_as_written(tmp_path: Path, pg_cluster: Any) -> None:
    from psycopg import sql as pgsql
    from support.readme import README, blocks, sections

    from crmkit.store.postgres import close_pools

    section = sections(README.read_text(encoding="utf-8"))[README_SECTION]
    admin, setup, move = blocks(section, "bash")
    (printed,) = blocks(section, "text")
    host = f"127.0.0.1:{pg_cluster.port}"
    url = f"postgresql://crm@{host}/crm"
    assert f"export CRMKIT_DB={url.replace(host, SHOWN_SERVER)}\n" in setup
    # the README's ~/.pgpass line, with a password (the test cluster trusts any; libpq must still read it)
    pgpass = re.search(r"a line `([^`]+)`, mode 0600", section)
    assert pgpass, "the README shows the ~/.pgpass line"
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (home / ".pgpass").write_text(pgpass.group(1).replace(SHOWN_SERVER, host).replace("PASSWORD", "pw-1") + "\n")
    (home / ".pgpass").chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMKIT_", "PG"))}
    env |= {"HOME": str(home), "PATH": f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}",
            # the server's administrator of the first block: libpq's variables, as `postgres` on the server
            "PGHOST": "127.0.0.1", "PGPORT": str(pg_cluster.port), "PGUSER": "postgres"}
    made = subprocess.run([PYTHON, "-m", "crmkit.cli", "--db", "crm.duckdb", "demo-data", "--addresses", "1000",
                           "--quiet"], cwd=work, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert made.returncode == 0, made.stderr

    def drop() -> None:
        close_pools(url)
        pg_cluster.drop_database("crm")
        pg_cluster._execute(pgsql.SQL("DROP ROLE IF EXISTS crm"))

    drop()  # roles are cluster-wide: nothing of an earlier run may stand in
    try:
        script = "set -euo pipefail\n" + "\n".join(b.replace(SHOWN_SERVER, host) for b in (admin, setup, move))
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, input="pw-1\npw-1\n", text=True,
                              capture_output=True, timeout=600, check=False, start_new_session=True)  # no tty:
        assert done.returncode == 0, done.stdout + done.stderr  # createuser reads the password from stdin
        assert "pw-1" not in done.stdout + done.stderr
        output = (done.stderr + done.stdout).splitlines()
        for line in printed.splitlines():
            if line.strip() != "…":
                pattern = _line_pattern(line, host)
                assert any(pattern.fullmatch(o) for o in output), f"README shows {line!r}; printed:\n{output}"
        first = table_checksums(str(work / "crm.duckdb"))
        assert table_checksums(url) == first == table_checksums(str(work / "crm-copy.duckdb"))
        assert first["addresses"][0] == 1000
        owner = pg_cluster._execute(pgsql.SQL("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'crm'"))
        assert owner == [("crm",)]
    finally:
        drop()
