"""The core on PostgreSQL only (issue 15): connecting, an empty or foreign database, the search words and demo
data beside DuckDB's, the CLI, and what a filter meets only there (the statement timeout, PostgreSQL's own errors).

The tests that run on both backends are the core suite's ``[postgresql]`` variants; these need a server.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import psycopg
import pytest
from support.postgres import PgCluster

import crmkit
from crmkit import demo_data, errors, sql_filter
from crmkit.migrations import MIGRATIONS

pytestmark = pytest.mark.postgres

PASSWORD = "Tr0ub4dor-s3cret"  # a made-up password; what the messages must never show


def _unused_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), exc.text("de") if isinstance(exc, errors.CrmkitError) else ""):
        assert PASSWORD not in text, text


def test_a_server_that_is_down_is_database_unavailable_saying_what_to_check() -> None:
    port = _unused_loopback_port()
    with pytest.raises(errors.DatabaseUnavailable) as info:
        crmkit.open(f"postgresql://crm:{PASSWORD}@127.0.0.1:{port}/crm")
    message = str(info.value)
    assert isinstance(info.value, errors.StoreError)
    assert f"127.0.0.1:{port}" in message and "running" in message and "host and port" in message, message
    assert "nicht erreichbar" in info.value.text("de") and "CRMKIT_DB" in info.value.text("de")
    _assert_no_secret(info.value)


@pytest.mark.parametrize(("user", "database", "named"), [
    ("nobody", "postgres", 'role "nobody" does not exist'),
    ("postgres", "no_such_crm", 'database "no_such_crm" does not exist'),
])
def test_a_refused_login_is_database_login_refused(pg_cluster: PgCluster, user: str, database: str, named: str) -> None:
    url = f"postgresql://{user}:{PASSWORD}@127.0.0.1:{pg_cluster.port}/{database}"
    with pytest.raises(errors.DatabaseLoginRefused) as info:
        crmkit.open(url)
    message = str(info.value)
    assert named in message and "role, its password and the database name" in message, message
    assert "Anmeldung abgelehnt" in info.value.text("de")
    _assert_no_secret(info.value)


def test_an_empty_database_gets_every_migration_on_open(pg_database_url: str) -> None:
    crm = crmkit.open(pg_database_url)
    assert crm.store.dialect == "postgresql"
    assert crm.store.applied_migrations == [m[0] for m in MIGRATIONS]
    assert crm.users()["name"].tolist() == ["admin"]
    assert crmkit.open(pg_database_url).store.applied_migrations == []  # the second open changes nothing


def test_a_database_of_something_else_is_refused_and_left_unchanged(pg_database_url: str) -> None:
    with psycopg.connect(pg_database_url, autocommit=True) as con:
        con.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total NUMERIC)")
        con.execute("INSERT INTO invoices VALUES (1, 99.5)")
    with pytest.raises(errors.NotACrmkitDatabase, match="invoices") as info:
        crmkit.open(pg_database_url)
    assert "left it unchanged" in str(info.value)
    with psycopg.connect(pg_database_url) as con:
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()]
        assert tables == ["invoices"]
        assert con.execute("SELECT id, total FROM invoices").fetchall() == [(1, 99.5)]


def test_demo_data_search_words_and_search_match_duckdb(pg_database_url: str) -> None:
    """The same demo addresses on both databases: the same rows, the same search words (lower case, each also
    without accents), the same search results."""
    pg, duck = crmkit.open(pg_database_url), crmkit.open(":memory:")
    for crm in (pg, duck):
        demo_data.generate(crm, 3000, seed=5)
    rows = [c.addresses(order_by="id").astype(str) for c in (pg, duck)]
    assert rows[0].equals(rows[1])
    words = [set(c.store.read(lambda tx: tx.rows("SELECT word, address_id FROM address_words"))) for c in (pg, duck)]
    assert words[0] == words[1] and len(words[0]) > 10_000
    for crm in (pg, duck):
        new = crm.add_address(company="Müller & Söhne GmbH", city="Zürich")
        crm.update_address(new, last_name="Ørsted-Brandão")  # re-indexed one by one after a change
    for search in ("muller", "müller", "MÜLL söh", "zurich", "orsted", "brandao", "berlin gmbh", "ø"):
        found = [c.addresses(search=search, columns=["id"])["id"].tolist() for c in (pg, duck)]
        assert found[0] == found[1], search
    assert pg.count_addresses(search="muller sohne zurich") == 1


def test_demo_data_comes_in_by_copy_and_replace_drops_the_old_words(pg_database_url: str) -> None:
    seen: list[str] = []
    crm = crmkit.open(pg_database_url, tracer=lambda sql, params: seen.append(sql))
    demo_data.generate(crm, 400, seed=2)
    demo_data.generate(crm, 300, seed=3, replace=True)
    assert crm.count_addresses() == 300
    assert crm.store.one("SELECT count(*) FROM address_words WHERE address_id <= 400") == 0
    assert crm.store.one("SELECT count(DISTINCT address_id) FROM address_words") == 300
    indexes = crm.store.read(lambda tx: tx.rows(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'address_words' ORDER BY indexname"))
    assert indexes == [("address_words_address",), ("address_words_word",)]  # rebuilt as they were
    assert not any(sql.lstrip().upper().startswith("INSERT INTO ADDRESSES") for sql in seen)  # COPY, not INSERT


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crmkit.cli", *args], capture_output=True, text=True, timeout=120)


def test_init_and_demo_data_on_postgresql(pg_cluster: PgCluster, pg_database_url: str) -> None:
    url = pg_database_url.replace("postgres@", f"postgres:{PASSWORD}@")  # trust: the password goes unused
    first = _cli("--db", url, "init")
    assert first.returncode == 0, first.stderr
    assert "Set up crmkit's schema in" in first.stdout and "migration(s) 1 (" in first.stdout, first.stdout
    again = _cli("--db", url, "init")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    filled = _cli("--db", url, "demo-data", "--addresses", "500", "--seed", "4")
    assert filled.returncode == 0 and "Added 500 addresses" in filled.stdout, filled.stderr
    for result in (first, again, filled):
        assert PASSWORD not in result.stdout + result.stderr
    crm = crmkit.open(pg_database_url)
    assert crm.count_addresses() == 500 and crm.count_addresses(search="gmbh") > 0


def test_a_filter_that_runs_too_long_is_stopped(pg_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    crm = crmkit.open(pg_database_url)
    for city in ("Berlin", "Wien", "Zürich"):
        crm.add_address(company=f"Firma {city}", city=city)
    monkeypatch.setattr(sql_filter, "STATEMENT_TIMEOUT_SECONDS", 0.05)
    slow = "strpos(lpad(city, 200000000, 'x'), 'zzz') > 0"  # ~200 MB of text per row
    for call in (lambda: crm.count_addresses(where=slow), lambda: crm.address_page(0, 25, where=slow)):
        with pytest.raises(errors.ValidationError) as info:
            call()
        assert info.value.key == "error.msg.filter_timeout" and "0.05 s" in str(info.value)
        assert "abgebrochen" in info.value.text("de")
    assert crm.count_addresses(where="city = ?", params=["Wien"]) == 1  # the next query runs normally


@pytest.mark.parametrize(("where", "params", "needle"), [
    ("CAST(id AS HUGEINT) = 1", [], 'type "hugeint" does not exist'),
    ("CAST(city AS DATE) IS NULL", [], "invalid input syntax for type date"),
    ("lower(id) = 'x'", [], "function lower(bigint) does not exist"),
    ("city = ? AND country = ?", ["Wien"], "placeholder"),
    ("current_date() IS NOT NULL", [], "syntax error"),
])
def test_what_postgresql_refuses_while_running_is_a_validation_error(
    pg_database_url: str, where: str, params: list[str], needle: str,
) -> None:
    crm = crmkit.open(pg_database_url)
    crm.add_address(company="Wiener Bau", city="Wien")
    with pytest.raises(errors.ValidationError) as info:
        crm.addresses(where=where, params=params)
    assert info.value.key == "error.msg.filter_cannot_run" and needle in str(info.value), str(info.value)
    assert "kann nicht ausgeführt werden" in info.value.text("de")


def test_the_loading_text_language_is_read_from_a_postgresql_database(pg_database_url: str) -> None:
    from crmkit.i18n import stored_language

    crm = crmkit.open(pg_database_url)
    crm.add_user("ben", "Ben Wagner", roles=["sales"])
    crm.set_user_setting("language", "en")
    assert stored_language(pg_database_url, "admin") == "en"
    assert stored_language(pg_database_url, "admin", url_user="ben") == "de"  # ben has none: the system default
    crm.set_setting("ui.default_language", "en")
    assert stored_language(pg_database_url, "ben") == "en"
    down = f"postgresql://crm:{PASSWORD}@127.0.0.1:{_unused_loopback_port()}/crm"
    assert stored_language(down, "admin") == "de"  # any trouble: the default


@pytest.mark.parametrize("kwargs", [
    {"city": "Berlin"}, {"city": "Berlin", "order_by": "last_name"}, {"order_by": "city desc"},
    {"search": "gmbh"}, {"search": "müller", "order_by": "company"}, {"country": "AT", "where": "kind = ?",
                                                                    "params": ["person"]},
    {}, {"order_by": "postal_code"},
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "all")
def test_record_table_pages_are_duckdbs(pg_database_url: str, kwargs: dict[str, object]) -> None:
    """PostgreSQL's page query (ids by index first, then the rows) gives DuckDB's pages and totals."""
    pg, duck = crmkit.open(pg_database_url), crmkit.open(":memory:")
    for crm in (pg, duck):
        demo_data.generate(crm, 2000, seed=9)
    size = 7
    total = duck.count_addresses(**{k: v for k, v in kwargs.items() if k != "order_by"})  # type: ignore[arg-type]
    last = total // size
    # pages in the back half are read from the end (reversed order): both sides of the middle, the last ones
    for page in sorted({0, 1, last // 2, last // 2 + 1, last - 1, last, last + 3}):
        got = [c.address_page(page, size, **kwargs) for c in (pg, duck)]  # type: ignore[arg-type]
        assert got[0][1] == got[1][1] == total
        assert got[0][0].astype(str).equals(got[1][0].astype(str)), (page, got[0][0]["id"].tolist(),
                                                                      got[1][0]["id"].tolist())


def test_the_unfiltered_total_is_kept_exact_by_the_database(pg_database_url: str) -> None:
    """address_count (migration 12) follows every way addresses arrive or go: one address, a bulk load by COPY,
    a reload that deletes the old ones, and two sessions adding at once; the record table's total is it."""
    crm = crmkit.open(pg_database_url)

    def counted() -> tuple[int, int]:
        return (crm.store.one("SELECT n FROM address_count"), crm.store.one("SELECT count(*) FROM addresses"))

    assert counted() == (0, 0)
    crm.add_address(kind="company", company="Zählwerk GmbH")
    assert counted() == (1, 1)
    demo_data.generate(crm, 300, seed=3)  # COPY: one statement, one update of the count
    n = counted()[1]
    assert n > 300 and counted() == (n, n)
    demo_data.generate(crm, 120, seed=4, replace=True)  # DELETE FROM addresses, then COPY again
    n = counted()[1]
    assert counted() == (n, n) and crm.address_page(0, 25)[1] == n
    other = crmkit.open(pg_database_url)
    for session in (crm, other):  # a second session of the same database counts into the same row
        session.add_address(kind="person", last_name="Zweig")
    assert counted() == (n + 2, n + 2) and crm.address_page(0, 25)[1] == n + 2
