"""Team mode (issue 16 item 2): ``CRMKIT_MODE=team``, which crmkit hub's spawner sets in each person's server,
makes ``crmkit.open`` refuse whatever would let a bare name be the session's user — a DuckDB file, a PostgreSQL
login that is no CRM user's, a ``user=``/``CRMKIT_USER``/``?user=`` naming someone else — with a typed error that
says to sign in at the hub, before anything is written. Single-user mode (the default) behaves as before.

The PostgreSQL tests use real logins made by ``crmkit.store.pg_roles`` (as tests/core/test_pg_roles.py does);
the test cluster trusts loopback logins, so they prove which login crmkit accepts, not passwords.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from conftest import _migrated_template
from support.postgres import PgCluster, fresh_database_url

import crmkit
from crmkit.errors import ConfigError, PermissionDenied
from crmkit.mode import TeamSignInRequired, UnknownMode, current_mode
from crmkit.store.pg_roles import drop_database_roles, sync_database_roles, user_role
from crmkit.store.postgres import close_pools

HINT = {"de": "Melden Sie sich am Hub mit Ihrem Arbeitskonto an", "en": "Sign in at the hub with your work account"}


def _says_sign_in(exc: BaseException) -> None:
    """The refusal is typed and says how to sign in, in German and in English (and nothing of the other)."""
    assert isinstance(exc, TeamSignInRequired)
    assert isinstance(exc, PermissionDenied)  # code catching the PostgreSQL refusal of another name still does
    for lang, other in (("de", "en"), ("en", "de")):
        text = exc.text(lang)
        assert HINT[lang] in text, text
        assert HINT[other] not in text, text
    assert HINT["en"] in str(exc)


# -- the mode ------------------------------------------------------------------------------------------------

@pytest.mark.core
def test_the_mode_is_single_user_unless_the_environment_says_team(monkeypatch: pytest.MonkeyPatch) -> None:
    assert current_mode() == "single-user"
    monkeypatch.setenv("CRMKIT_MODE", "team")
    assert current_mode() == "team"
    monkeypatch.setenv("CRMKIT_MODE", " Team ")
    assert current_mode() == "team"
    monkeypatch.setenv("CRMKIT_MODE", "single-user")
    assert current_mode() == "single-user"
    monkeypatch.setenv("CRMKIT_MODE", "")
    assert current_mode() == "single-user"


@pytest.mark.core
def test_an_unknown_mode_is_a_typed_error_and_opens_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMKIT_MODE", "teams")
    with pytest.raises(UnknownMode) as caught:
        current_mode()
    assert isinstance(caught.value, ConfigError)
    assert "teams" in caught.value.text("en") and "single-user" in caught.value.text("en")
    assert "Modus" in caught.value.text("de")
    with pytest.raises(UnknownMode):
        crmkit.open(tmp_path / "crm.duckdb")
    assert not (tmp_path / "crm.duckdb").exists()


@pytest.mark.core
def test_the_hubs_spawner_puts_every_persons_server_in_team_mode() -> None:
    from crmkit.hub.hooks import pre_spawn

    spawner = SimpleNamespace(environment={"SSL_CERT_FILE": "/home/crmkit-tom/.crmkit-tenant-ca.pem"})
    asyncio.run(pre_spawn(spawner))  # a hub without --db: team mode, no login to hand over
    assert spawner.environment == {"SSL_CERT_FILE": "/home/crmkit-tom/.crmkit-tenant-ca.pem", "CRMKIT_MODE": "team"}
    asyncio.run(pre_spawn(spawner))  # JupyterHub may call the hook again for a retried spawn
    assert spawner.environment["CRMKIT_MODE"] == "team"


# -- DuckDB ---------------------------------------------------------------------------------------------------

@pytest.mark.core
def test_team_mode_refuses_a_duckdb_file_and_writes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "crm.duckdb"
    crmkit.open(path).store.close()  # an existing CRM file, made in single-user mode
    before = path.read_bytes()
    fresh = tmp_path / "new.duckdb"
    monkeypatch.setenv("CRMKIT_MODE", "team")
    for where in (path, str(fresh), ":memory:"):
        with pytest.raises(TeamSignInRequired) as caught:
            crmkit.open(where)
        _says_sign_in(caught.value)
        assert "DuckDB" in caught.value.text("en") and "DuckDB" in caught.value.text("de")
    monkeypatch.setenv("CRMKIT_DB", str(fresh))  # the default location too
    monkeypatch.setenv("CRMKIT_USER", "admin")
    with pytest.raises(TeamSignInRequired):
        crmkit.open()
    assert path.read_bytes() == before
    assert not fresh.exists()


@pytest.mark.core
def test_single_user_mode_opens_a_duckdb_file_and_any_named_user_as_before(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    path = tmp_path / "crm.duckdb"
    crm = crmkit.open(path)
    assert crm.user.name == "admin" and crm.mode == "single-user"
    crm.add_user("tom", "Tom Berger", roles=["viewer"])
    monkeypatch.setenv("CRMKIT_MODE", "single-user")
    assert crmkit.open(":memory:").mode == "single-user"
    assert crmkit.open(path, user="tom").user.name == "tom"
    monkeypatch.setenv("CRMKIT_USER", "tom")
    assert crmkit.open(path).user.name == "tom"


# -- PostgreSQL -----------------------------------------------------------------------------------------------

@dataclass
class Db:
    url: str  # as the owner (the cluster's superuser)
    name: str

    def login(self, user: str) -> str:
        """The URL of CRM user ``user``'s own database login (no password: the cluster trusts loopback)."""
        return self.url.replace("postgres@", f"{user_role(self.name, user)}@", 1)


@pytest.fixture(scope="module")
def db(pg_cluster: PgCluster) -> Iterator[Db]:
    """A migrated CRM with vera (viewer) and sam (sales) and every user's login synced."""
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        owner = crmkit.open(url)
        owner.add_user("vera", "Vera Viewer", roles=["viewer"])
        owner.add_user("sam", "Sam Sales", roles=["sales"])
        sync_database_roles(owner.store)
        db = Db(url, url.rsplit("/", 1)[1])
        try:
            yield db
        finally:
            for user in ("admin", "vera", "sam"):
                close_pools(db.login(user))
            drop_database_roles(owner.store)


def _table_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]


@pytest.mark.postgres
def test_team_mode_accepts_a_persons_own_login_as_that_user(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_MODE", "team")
    vera = crmkit.open(db.login("vera"))
    assert (vera.user.name, vera.user.display_name, vera.mode) == ("vera", "Vera Viewer", "team")
    assert crmkit.open(db.login("vera"), user="vera").user.name == "vera"  # naming oneself is no other name
    monkeypatch.setenv("CRMKIT_USER", "sam")
    assert crmkit.open(db.login("sam")).user.name == "sam"
    monkeypatch.setenv("CRMKIT_DB", db.login("sam"))
    assert crmkit.open().user.name == "sam"


@pytest.mark.postgres
def test_team_mode_refuses_the_owners_login(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner is no CRM user's login (crmkit_user() is NULL): in single-user mode it opens as the named user
    (admin by default); in team mode it proves nobody, with or without a name."""
    assert crmkit.open(db.url).user.name == "admin"
    monkeypatch.setenv("CRMKIT_MODE", "team")
    for user in (None, "admin", "vera"):
        with pytest.raises(TeamSignInRequired) as caught:
            crmkit.open(db.url, user=user)
        _says_sign_in(caught.value)
        assert "postgres" in caught.value.text("en")  # names the login that is no CRM user's


@pytest.mark.postgres
def test_team_mode_refuses_an_empty_database_before_migrating_it(pg_database_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal writes nothing: the owner's login on an empty database would run every migration; in team
    mode no table is made."""
    monkeypatch.setenv("CRMKIT_MODE", "team")
    with pytest.raises(TeamSignInRequired):
        crmkit.open(pg_database_url)
    assert _table_count(pg_database_url) == 0


@pytest.mark.postgres
def test_team_mode_refuses_a_name_other_than_the_logins_user(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL another name was PermissionDenied already; in team mode it says how to sign in instead."""
    with pytest.raises(PermissionDenied) as plain:
        crmkit.open(db.login("vera"), user="admin")
    assert type(plain.value) is PermissionDenied  # single-user mode: as before
    monkeypatch.setenv("CRMKIT_MODE", "team")
    with pytest.raises(TeamSignInRequired) as caught:
        crmkit.open(db.login("vera"), user="admin")
    _says_sign_in(caught.value)
    assert "'admin'" in str(caught.value) and "'vera'" in str(caught.value)
    monkeypatch.setenv("CRMKIT_USER", "sam")
    with pytest.raises(TeamSignInRequired) as caught:
        crmkit.open(db.login("vera"))
    _says_sign_in(caught.value)
    monkeypatch.setenv("CRMKIT_USER", "nobody")  # not even a CRM user: the same refusal, not UnknownUser
    with pytest.raises(TeamSignInRequired):
        crmkit.open(db.login("vera"))


@pytest.mark.postgres
def test_team_mode_refuses_a_dashboards_url_user(db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dashboard opened with ``?user=admin`` in vera's server shows the sign-in refusal in both languages instead
    of vera's page (in single-user mode, against the sandbox tenant, it is PostgreSQL's plain refusal, as before)."""
    from crmkit.widgets.settings_app import open_dashboard, open_dashboard_crm

    monkeypatch.setenv("CRMKIT_DB", db.login("vera"))
    monkeypatch.setenv("QUERY_STRING", "user=admin")
    with pytest.raises(PermissionDenied) as plain:
        open_dashboard_crm()
    assert type(plain.value) is PermissionDenied
    monkeypatch.setenv("CRMKIT_MODE", "team")
    with pytest.raises(TeamSignInRequired):
        open_dashboard_crm()
    box = open_dashboard(lambda crm: pytest.fail("built a page for a refused session"), None, "addresses")
    assert HINT["de"] in box.value and HINT["en"] in box.value
    monkeypatch.setenv("QUERY_STRING", "user=vera")
    assert open_dashboard_crm().user.name == "vera"


@pytest.mark.postgres
def test_every_dashboard_header_names_team_mode_and_the_signed_in_person(db: Db,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from crmkit.widgets.header import DashboardHeader
    from crmkit.widgets.record_table import RecordTable

    monkeypatch.setenv("CRMKIT_MODE", "team")
    vera = crmkit.open(db.login("vera"))
    header = DashboardHeader(vera, "settings.user", "de", lambda lang: None)
    assert "Teammodus · angemeldet als Vera Viewer" in header.mode_line.value
    assert "Team mode" not in header.mode_line.value
    header.relabel("en")
    assert "Team mode · signed in as Vera Viewer" in header.mode_line.value
    assert "Teammodus" not in header.mode_line.value
    table = RecordTable(vera)
    assert "Team" in table.mode_line.value and "Vera Viewer" in table.mode_line.value
