"""Directory links under PostgreSQL's own rights (crmkit.store.pg_roles): a person's login reads only their own
link row and writes none; an administrator's login links and unlinks through crmkit's API; a verified sign-in is
resolved as the database owner (the hub's spawn hook), which needs no user grant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import psycopg
import psycopg.errors
import pytest
from conftest import _migrated_template
from support.postgres import PgCluster, fresh_database_url

import crmkit
from crmkit.auth.id_token import VerifiedIdToken
from crmkit.directory_links import user_for
from crmkit.store import Store
from crmkit.store.pg_roles import drop_database_roles, sync_database_roles, user_role
from crmkit.store.postgres import close_pools

pytestmark = pytest.mark.postgres

TENANT = "11111111-2222-3333-4444-555555555555"
USERS = {"sam": "sales", "vera": "viewer"}


@pytest.fixture
def linked(pg_cluster: PgCluster) -> Iterator[tuple[str, Store]]:
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        crm = crmkit.open(url)  # the owner
        for name, role in USERS.items():
            crm.add_user(name, name.title(), roles=[role])
            crm.directory_links.link(name, TENANT, f"oid-{name}", f"{name}@contoso.example", name.title())
        sync_database_roles(crm.store)
        try:
            yield url, crm.store
        finally:
            for name in ("admin", *USERS):
                close_pools(_login(url, name))
            drop_database_roles(crm.store)
            crm.store.close()


def _login(url: str, user: str) -> str:
    return url.replace("postgres@", f"{user_role(url.rsplit('/', 1)[1], user)}@", 1)


def test_a_login_reads_its_own_link_only_and_writes_none(linked: tuple[str, Store]) -> None:
    url, _store = linked
    with psycopg.connect(_login(url, "sam")) as conn:
        assert conn.execute("SELECT user_name, object_id FROM directory_links").fetchall() == [("sam", "oid-sam")]
        for sql in ("UPDATE directory_links SET object_id = 'oid-vera' WHERE user_name = 'sam'",
                    "DELETE FROM directory_links",
                    f"INSERT INTO directory_links VALUES ('sam', '{TENANT}', 'x', NULL, NULL, now(), 'sam')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()


def test_an_admin_login_links_and_unlinks_and_user_for_runs_as_the_owner(linked: tuple[str, Store]) -> None:
    url, store = linked
    admin = crmkit.open(_login(url, "admin"))
    assert admin.user.name == "admin"
    assert sorted(admin.directory_links.links().dropna(subset=["object_id"])["user_name"]) == ["sam", "vera"]
    assert admin.directory_links.unlink("vera") is True
    admin.directory_links.link("vera", TENANT, "oid-vera-2", "vera@contoso.example")
    at = datetime.now().replace(microsecond=0)
    who = VerifiedIdToken(TENANT, "oid-vera-2", "vera.v@contoso.example", "Vera V", at, at + timedelta(hours=1))
    assert user_for(store, who) == "vera"  # the owner's store: the hub's hook holds no person's login
    with psycopg.connect(_login(url, "vera")) as conn:
        assert conn.execute("SELECT upn, display_name FROM directory_links").fetchall() == [
            ("vera.v@contoso.example", "Vera V")]
