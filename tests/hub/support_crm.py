"""The team's CRM for the hub tier: a PostgreSQL database on the session's throwaway cluster, made the way an
operator makes it (``crmkit init``, ``demo-data``, ``init --admin``, ``db-roles``), and logins that need their
password (the test cluster trusts every loopback login otherwise).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg import sql

from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_TENANT_ID
from crmkit.sandbox.directory import user_id_for

if TYPE_CHECKING:
    from support.postgres import PgCluster  # as tests/conftest.py imports it (one module, one class)

ROOT = Path(__file__).resolve().parents[2]
CRMKIT = ROOT / ".venv" / "bin" / "crmkit"


@contextmanager
def password_logins(cluster: PgCluster) -> Iterator[None]:
    """Every role but the owner (``postgres``) must give its password (SCRAM) while this runs, as on a team's
    server: a CRM login is then only as good as the passfile it came from. pg_hba.conf is restored after."""
    hba = cluster.data / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text("host all postgres 127.0.0.1/32 trust\nlocal all postgres trust\n"
                   "host all all 127.0.0.1/32 scram-sha-256\nlocal all all scram-sha-256\n" + before)
    cluster._execute(sql.SQL("SELECT pg_reload_conf()"))
    try:
        yield
    finally:
        hba.write_text(before)
        cluster._execute(sql.SQL("SELECT pg_reload_conf()"))


def crmkit_cli(url: str, *args: str) -> str:
    """``crmkit --db URL ARGS`` as the owner runs it; its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    done = subprocess.run([str(CRMKIT), "--db", url, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def make_team_crm(url: str, links: Mapping[str, str]) -> None:
    """The demo CRM at ``url`` (an empty database): schema, 200 demo addresses and the demo users, the sandbox's
    administrator as the first admin (a pending link), the CRM users in ``links`` (CRM user -> UPN) linked to
    their sandbox accounts by that admin, and a database login per user."""
    import crmkit

    crmkit_cli(url, "init")
    crmkit_cli(url, "demo-data", "--addresses", "200")
    crmkit_cli(url, "init", "--admin", SANDBOX_ADMIN_UPN)
    owner = crmkit.open(url)  # as the CRM user admin (the owner's login names nobody)
    try:
        for user, upn in links.items():
            owner.directory_links.link(user, SANDBOX_TENANT_ID, user_id_for(upn), upn)
    finally:
        owner.store.close()
    crmkit_cli(url, "db-roles")


@contextmanager
def team_crm_database(cluster: PgCluster, links: Mapping[str, str]) -> Iterator[str]:
    """A fresh database on ``cluster`` made into the team's CRM (:func:`make_team_crm` with ``links``) while logins
    need their password (:func:`password_logins`); yields the owner's URL. The CRM's database logins are dropped
    after: roles are the cluster's, not the database's."""
    from support.postgres import fresh_database_url

    from crmkit.store import Store
    from crmkit.store.pg_roles import drop_database_roles

    with password_logins(cluster), fresh_database_url(cluster) as url:
        make_team_crm(url, links)
        try:
            yield url
        finally:
            store = Store(url)
            drop_database_roles(store)
            store.close()
