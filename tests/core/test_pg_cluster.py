"""The throwaway PostgreSQL server the postgres tier runs on (tests/support/postgres.py, fixtures in
tests/conftest.py): PostgreSQL 15, UTF8, loopback only, contrib present, empty databases per test, templates
cloned with their tables, nothing left behind after stop()."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support.postgres import PgCluster, fresh_database, fresh_database_url

pytestmark = pytest.mark.postgres

USER_TABLES = ("SELECT table_schema || '.' || table_name FROM information_schema.tables "
               "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")


def one(url: str, query: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def user_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(USER_TABLES).fetchall()]


@pytest.fixture
def second_pg_database_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A second database made the way ``pg_database_url`` makes its one (a fixture runs once per test)."""
    with fresh_database_url(pg_cluster) as url:
        yield url


def test_the_server_is_postgresql_15_in_utf8(pg_database_url: str) -> None:
    assert int(str(one(pg_database_url, "SHOW server_version_num"))) // 10000 == 15
    assert one(pg_database_url, "SHOW server_encoding") == "UTF8"
    assert one(pg_database_url, "SELECT pg_encoding_to_char(encoding) FROM pg_database "
                                "WHERE datname = current_database()") == "UTF8"
    assert one(pg_database_url, "SELECT datctype FROM pg_database WHERE datname = current_database()") == "C.UTF-8"
    assert one(pg_database_url, "SELECT length('Jörg Ärger')") == 10  # characters, not bytes
    # the test settings took effect (initdb's own postgresql.conf would say on / 100)
    assert one(pg_database_url, "SHOW fsync") == "off"
    assert one(pg_database_url, "SHOW max_connections") == "200"


def test_the_server_listens_on_loopback_only(pg_cluster: PgCluster, pg_database_url: str) -> None:
    assert one(pg_database_url, "SHOW listen_addresses") == "127.0.0.1"
    assert str(one(pg_database_url, "SELECT host(inet_server_addr())")) == "127.0.0.1"
    assert one(pg_database_url, "SELECT inet_server_port()") == pg_cluster.port
    # the Unix socket lies in the cluster's own folder, not in /var/run/postgresql beside a system server
    assert one(pg_database_url, "SHOW unix_socket_directories") == str(pg_cluster.folder)
    assert pg_cluster.admin_url == f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/postgres"


def test_each_test_gets_its_own_empty_database(pg_database_url: str, second_pg_database_url: str) -> None:
    first = one(pg_database_url, "SELECT current_database()")
    second = one(second_pg_database_url, "SELECT current_database()")
    assert first != second
    assert user_tables(pg_database_url) == [] and user_tables(second_pg_database_url) == []
    with psycopg.connect(pg_database_url) as conn:
        conn.execute("CREATE TABLE addresses (id int PRIMARY KEY)")
    assert user_tables(pg_database_url) == ["public.addresses"]
    assert user_tables(second_pg_database_url) == []


def test_a_fresh_database_is_dropped_afterwards_even_while_connected(pg_cluster: PgCluster) -> None:
    with fresh_database_url(pg_cluster) as url:
        name = url.rsplit("/", 1)[1]
        left_open = psycopg.connect(url)  # a pool a test forgot to close must not block the drop
    try:
        with psycopg.connect(pg_cluster.admin_url) as admin:
            assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)
        with pytest.raises(psycopg.OperationalError):
            left_open.execute("SELECT 1")  # ended by DROP DATABASE ... WITH (FORCE)
    finally:
        left_open.close()


def test_pg_trgm_from_contrib_can_be_created(pg_database_url: str) -> None:
    with psycopg.connect(pg_database_url) as conn:
        conn.execute("CREATE EXTENSION pg_trgm")
        assert conn.execute("SELECT similarity('Müller', 'Mueller') > 0.2, "
                            "'Schmidt' % 'Schmitt'").fetchone() == (True, True)
        conn.execute("CREATE TABLE a (name text)")
        conn.execute("CREATE INDEX a_trgm ON a USING gin (name gin_trgm_ops)")


def test_a_template_is_built_once_and_cloned_with_its_tables(pg_cluster: PgCluster) -> None:
    builds: list[str] = []
    held: list[psycopg.Connection] = []

    def build(url: str) -> None:
        builds.append(url)
        conn = psycopg.connect(url, autocommit=True)
        conn.execute("CREATE TABLE contacts (id int PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO contacts VALUES (1, 'Anna Muster'), (2, 'Jörg Ärger')")
        held.append(conn)  # left open on purpose: cloning must not meet ObjectInUse

    try:
        name = pg_cluster.template_for("pg_cluster_test", build)
        assert name == "tpl_pg_cluster_test"
        assert pg_cluster.template_for("pg_cluster_test", build) == name and len(builds) == 1
        clones = [fresh_database(pg_cluster, template=name) for _ in range(2)]
        try:
            for clone in clones:
                url = pg_cluster.url(clone)
                assert user_tables(url) == ["public.contacts"]
                with psycopg.connect(url) as conn:
                    assert conn.execute("SELECT name FROM contacts ORDER BY id").fetchall() == [
                        ("Anna Muster",), ("Jörg Ärger",)]
                    conn.execute("DELETE FROM contacts")  # a clone is a copy: the template keeps its rows
            with psycopg.connect(pg_cluster.admin_url) as admin:
                assert admin.execute("SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s",
                                     (name,)).fetchone() == (True, False)
            assert one(pg_cluster.url(fresh_database(pg_cluster, template=name)), "SELECT count(*) FROM contacts") == 2
        finally:
            for clone in clones:
                pg_cluster.drop_database(clone)
    finally:
        for conn in held:
            conn.close()
        pg_cluster.drop_database("tpl_pg_cluster_test")  # a template can be dropped (IS_TEMPLATE false first)
    with psycopg.connect(pg_cluster.admin_url) as admin:
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = 'tpl_pg_cluster_test'"
                             ).fetchone() == (0,)


def test_a_failed_template_build_leaves_no_database(pg_cluster: PgCluster) -> None:
    def build(url: str) -> None:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE half (id int)")
        raise RuntimeError("migration 3 failed")

    with pytest.raises(RuntimeError, match="migration 3 failed"):
        pg_cluster.template_for("pg_cluster_broken", build)
    with psycopg.connect(pg_cluster.admin_url) as admin:
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = 'tpl_pg_cluster_broken'"
                             ).fetchone() == (0,)


def test_stop_ends_the_server_and_removes_its_folder(pg_cluster: PgCluster) -> None:
    cluster = PgCluster(pg_cluster.bin_dir).start()  # a second one: the session's must live on
    folder, url = cluster.folder, cluster.admin_url
    assert isinstance(folder, Path) and (folder / "data" / "PG_VERSION").read_text().strip() == "15"
    assert one(url, "SELECT 1") == 1
    cluster.stop()
    assert not folder.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=3)
    cluster.stop()  # twice is harmless
    assert set(cluster.timings) == {"initdb", "start", "stop"}
