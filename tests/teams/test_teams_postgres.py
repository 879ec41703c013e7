"""The Teams feature on PostgreSQL, beyond the tests both backends run: what only a database server does."""

from __future__ import annotations

import logging

import pytest
from support.postgres import PgCluster, fresh_database_url

import crmkit
from crmkit.teams import sessions

pytestmark = pytest.mark.postgres


def test_register_session_never_fails_an_open_the_server_refuses(
        pg_cluster: PgCluster, caplog: pytest.LogCaptureFixture) -> None:
    """A PostgreSQL login that may read but not write ``sessions`` (the server refuses with psycopg's
    InsufficientPrivilege, not a StoreError) still opens the CRM, unregistered, with a warning."""
    import psycopg
    from psycopg import sql

    from crmkit.store import Store
    from crmkit.store.postgres import close_pools

    template = pg_cluster.template_for("crm", lambda url: Store(url).close())  # the one conftest's fixtures clone
    role = f"reader_{pg_cluster.unique_name()}"  # roles are cluster-wide
    with fresh_database_url(pg_cluster, template) as db_url:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        url = db_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        try:
            with caplog.at_level(logging.WARNING, logger="crmkit.teams"):
                reader = crmkit.open(url)
            assert reader.session_id is None  # type: ignore[attr-defined]
            assert "not registered" in caplog.text and "permission denied" in caplog.text
            assert sessions.reopen_notice(reader) is None
            assert crmkit.open(db_url).store.one("SELECT count(*) FROM sessions") == 1  # only this open's row
        finally:
            close_pools(url)
            with psycopg.connect(db_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
