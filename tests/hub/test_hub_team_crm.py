"""crmkit hub's spawn hook against a real CRM: who signed in (a real id_token of the sandbox, over https, issued to
the hub's own app registration) is mapped to a CRM user by its directory link, and only that user's database login
reaches the person's home (crmkit/hub/hooks.py). A throwaway PostgreSQL holds the CRM; the people are real OS users
made by the hub's own ensure_os_user (root), removed at the end.

- tom (teams_admin, directory account lea.hoffmann) and vera (viewer, marie.fischer) get their own logins: a 0600
  passfile in ~/.crmkit owned by their OS user, CRMKIT_DB without a password; in team mode crmkit.open there is
  that user, and vera cannot open as tom.
- anna's pending link by UPN (crmkit init --admin's kind) is completed by her first spawn.
- An unlinked account, a switched-off CRM user, a token of another app and no token at all get no server (the
  message says what to do) and nothing in the home.
"""

from __future__ import annotations

import os
import pwd
import shutil
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import _migrated_template
from support.postgres import PgCluster, fresh_database_url
from support.sandbox import SandboxProc

import crmkit
from crmkit.errors import PermissionDenied
from crmkit.hub import hooks
from crmkit.hub.hooks import SpawnRefused, TeamCrm, hand_over_login, pre_spawn
from crmkit.hub.spawner import CrmkitSpawner, ensure_os_user
from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DOMAIN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from crmkit.sandbox.directory import user_id_for
from crmkit.store.pg_roles import drop_database_roles, sync_database_roles, user_role
from crmkit.store.postgres import close_pools
from tests.hub import support_crm
from tests.hub.support_hub import run_coroutine

pytestmark = pytest.mark.hub

TOM_UPN, VERA_UPN, ANNA_UPN = (f"{n}@{SANDBOX_DOMAIN}" for n in ("lea.hoffmann", "marie.fischer", "anna.schmidt"))
BEN_UPN = f"paul.wagner@{SANDBOX_DOMAIN}"
PEOPLE = {"tom": "teams_admin", "vera": "viewer", "anna": "sales", "ben": "sales"}
OS_USERS = {"tom": "crmkit-t16-tom", "vera": "crmkit-t16-vera", "anna": "crmkit-t16-anna", "ben": "crmkit-t16-ben",
            "jonas": "crmkit-t16-jonas"}


@dataclass
class Tenant:
    """The sandbox over https with the hub's confidential app registered in it (as crmkit hub registers it)."""

    https_url: str
    ca_file: str
    client_id: str
    client_secret: str
    admin_url: str  # the sandbox's admin API (plain http)

    @property
    def authority(self) -> str:
        return f"{self.https_url}/{SANDBOX_TENANT_ID}"

    def id_token(self, upn: str, client_id: str | None = None, client_secret: str | None = None) -> str:
        """A real sign-in of ``upn`` at the sandbox (password grant), as the hub's app: its id_token."""
        form = {"grant_type": "password", "client_id": client_id or self.client_id, "username": upn,
                "password": SANDBOX_PASSWORD, "scope": "openid profile offline_access User.Read"}
        if client_id is None or client_secret:
            form["client_secret"] = client_secret or self.client_secret
        r = httpx.post(f"{self.authority}/oauth2/v2.0/token", data=form, timeout=30,
                       verify=ssl.create_default_context(cafile=self.ca_file))
        assert r.status_code == 200, r.text
        return str(r.json()["id_token"])


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    base = tmp_path_factory.mktemp("tenant")
    proc = SandboxProc(base / "state", base / "sandbox.log", https=True)
    try:
        r = httpx.post(f"{proc.url}/_sandbox/apps", timeout=30, json={
            "name": "crmkit hub (test)", "delegated_scopes": ["User.Read"],
            "redirect_uris": ["http://127.0.0.1:9/hub/oauth_callback"]})
        r.raise_for_status()
        yield Tenant(proc.https_url, proc.ca_file, r.json()["client_id"], r.json()["client_secret"], proc.url)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def os_users() -> Iterator[dict[str, pwd.struct_passwd]]:
    """The people's OS users, made like the hub makes them, in a fresh 0711 home base; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the hub's spawn hook runs as root (it writes into the people's homes as theirs)")
    homes = Path(tempfile.mkdtemp(prefix="crmkit-t16-homes-"))
    homes.chmod(0o711)
    made: list[str] = []
    try:
        entries = {}
        for person, name in OS_USERS.items():
            made.append(name)
            entries[person] = ensure_os_user(name, homes, f"test {person}")
        yield entries
    finally:
        for name in made:
            subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        shutil.rmtree(homes, ignore_errors=True)


@pytest.fixture(scope="module")
def password_logins(pg_cluster: PgCluster) -> Iterator[None]:
    with support_crm.password_logins(pg_cluster):
        yield


@dataclass
class Crm:
    url: str  # the owner's
    team: TeamCrm
    owner: Any  # crmkit.CRM opened by the owner


@pytest.fixture
def crm(pg_cluster: PgCluster, tenant: Tenant, os_users: dict[str, pwd.struct_passwd],
        password_logins: None) -> Iterator[Crm]:
    for entry in os_users.values():  # each test starts with empty homes
        shutil.rmtree(Path(entry.pw_dir) / ".crmkit", ignore_errors=True)
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        owner = crmkit.open(url)
        for name, role in PEOPLE.items():
            owner.add_user(name, name.title(), roles=[role])
        links = owner.directory_links
        links.link("tom", SANDBOX_TENANT_ID, user_id_for(TOM_UPN), TOM_UPN, "Lea Hoffmann")
        links.link("vera", SANDBOX_TENANT_ID, user_id_for(VERA_UPN), VERA_UPN, "Marie Fischer")
        links.link("anna", SANDBOX_TENANT_ID, None, ANNA_UPN)  # pending: completed at her first verified sign-in
        links.link("ben", SANDBOX_TENANT_ID, user_id_for(BEN_UPN), BEN_UPN)
        sync_database_roles(owner.store)
        team = TeamCrm(url, tenant.authority, tenant.client_id, tenant.ca_file)
        try:
            yield Crm(url, team, owner)
        finally:
            hooks.close_connections()
            database = url.rsplit("/", 1)[1]
            for name in ("admin", *PEOPLE):
                close_pools(url.replace("postgres@", f"{user_role(database, name)}@", 1))
            drop_database_roles(owner.store)
            owner.store.close()


def _open_as_server(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **kw: Any) -> Any:
    """crmkit.open as the person's server runs it: team mode, CRMKIT_DB and PGPASSFILE from the hook."""
    monkeypatch.setenv("CRMKIT_MODE", "team")
    monkeypatch.setenv("PGPASSFILE", env["PGPASSFILE"])
    monkeypatch.delenv("CRMKIT_USER", raising=False)
    return crmkit.open(env["CRMKIT_DB"], **kw)


def _check_passfile(env: dict[str, str], entry: pwd.struct_passwd, role: str) -> str:
    path = Path(env["PGPASSFILE"])
    assert path == Path(entry.pw_dir) / ".crmkit" / "pgpass"
    st, folder = path.stat(), path.parent.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (entry.pw_uid, entry.pw_gid, 0o600)
    assert (folder.st_uid, stat.S_IMODE(folder.st_mode)) == (entry.pw_uid, 0o700)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split(":")[3] == role, "one login, the person's own"
    assert [p.name for p in path.parent.iterdir()] == ["pgpass"], "no temp file left"
    return lines[0]


def test_tom_gets_his_own_login_and_is_tom_in_team_mode(crm: Crm, tenant: Tenant, os_users: dict[str, Any],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    env = hand_over_login(crm.team, {"id_token": tenant.id_token(TOM_UPN)}, OS_USERS["tom"])
    database = crm.url.rsplit("/", 1)[1]
    role = user_role(database, "tom")
    host_port = crm.url.split("@", 1)[1].split("/", 1)[0]
    assert set(env) == {"CRMKIT_DB", "PGPASSFILE"}
    assert env["CRMKIT_DB"] == f"postgresql://{role}@{host_port}/{database}"  # no password, not the owner
    line = _check_passfile(env, os_users["tom"], role)
    tom = _open_as_server(env, monkeypatch)
    assert tom.user.name == "tom"
    with pytest.raises(PermissionDenied):
        _open_as_server(env, monkeypatch, user="admin")
    # idempotent: handed over again, the file holds the newest password and the old one is void
    again = hand_over_login(crm.team, {"id_token": tenant.id_token(TOM_UPN)}, OS_USERS["tom"])
    assert again == env
    newer = _check_passfile(again, os_users["tom"], role)
    assert newer != line
    old_password = line.rsplit(":", 1)[1]
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://{role}:{old_password}@{host_port}/{database}", connect_timeout=5).close()


def test_vera_gets_vera_cannot_open_as_tom_and_holds_no_other_login(crm: Crm, tenant: Tenant,
                                                                   os_users: dict[str, Any],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hand_over_login(crm.team, {"id_token": tenant.id_token(TOM_UPN)}, OS_USERS["tom"])
    env = hand_over_login(crm.team, {"id_token": tenant.id_token(VERA_UPN)}, OS_USERS["vera"])
    database = crm.url.rsplit("/", 1)[1]
    _check_passfile(env, os_users["vera"], user_role(database, "vera"))
    assert _open_as_server(env, monkeypatch).user.name == "vera"
    with pytest.raises(PermissionDenied):
        _open_as_server(env, monkeypatch, user="tom")
    home = Path(os_users["vera"].pw_dir)
    held = "".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())
    assert user_role(database, "tom") not in held and "postgres@" not in held


def test_a_pending_link_by_upn_is_completed_by_the_first_spawn(crm: Crm, tenant: Tenant,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    env = hand_over_login(crm.team, {"id_token": tenant.id_token(ANNA_UPN)}, OS_USERS["anna"])
    assert _open_as_server(env, monkeypatch).user.name == "anna"
    oid = crm.owner.store.one("SELECT object_id FROM directory_links WHERE user_name = 'anna'")
    assert oid == user_id_for(ANNA_UPN)


def test_a_user_added_after_the_last_sync_gets_a_login_made_at_the_spawn(crm: Crm, tenant: Tenant,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    jonas = f"jonas.becker@{SANDBOX_DOMAIN}"
    crm.owner.add_user("jonas", "Jonas", roles=["sales"])
    crm.owner.directory_links.link("jonas", SANDBOX_TENANT_ID, user_id_for(jonas), jonas)
    try:
        env = hand_over_login(crm.team, {"id_token": tenant.id_token(jonas)}, OS_USERS["jonas"])
        assert _open_as_server(env, monkeypatch).user.name == "jonas"
    finally:
        close_pools(crm.url.replace("postgres@", f"{user_role(crm.url.rsplit('/', 1)[1], 'jonas')}@", 1))


def _refused(crm: Crm, auth_state: Any, person: str) -> SpawnRefused:
    with pytest.raises(SpawnRefused) as caught:
        hand_over_login(crm.team, auth_state, OS_USERS[person])
    assert not (Path(pwd.getpwnam(OS_USERS[person]).pw_dir) / ".crmkit").exists(), "nothing in the home"
    return caught.value


def test_an_unlinked_account_gets_no_login_and_is_told_to_ask_an_admin(crm: Crm, tenant: Tenant) -> None:
    refused = _refused(crm, {"id_token": tenant.id_token(f"jonas.becker@{SANDBOX_DOMAIN}")}, "jonas")
    assert "Ask an administrator to link it" in refused.jupyterhub_message
    assert "Bitten Sie einen Administrator" in refused.jupyterhub_message
    assert "jonas.becker@" in refused.jupyterhub_message


def test_a_switched_off_crm_user_gets_no_login(crm: Crm, tenant: Tenant) -> None:
    crm.owner.store.write(lambda tx: tx.execute("UPDATE users SET active = false WHERE name = 'ben'"))
    refused = _refused(crm, {"id_token": tenant.id_token(BEN_UPN)}, "ben")
    assert "'ben'" in refused.jupyterhub_message and "switched off" in refused.jupyterhub_message


def test_no_token_or_another_apps_token_proves_nobody(crm: Crm, tenant: Tenant) -> None:
    for state in (None, {}, {"id_token": ""}, {"access_token": "x"}):
        assert "did not return a valid id_token" in _refused(crm, state, "tom").jupyterhub_message
    # a real id_token of tom, but issued to crmkit's public client, not to the hub: wrong audience
    other_app = tenant.id_token(TOM_UPN, client_id=SANDBOX_CLIENT_ID)
    assert tenant.client_id in _refused(crm, {"id_token": other_app}, "tom").jupyterhub_message
    # a forged one: tom's token with vera's claims pasted in (the signature no longer fits)
    head, _body, sig = tenant.id_token(TOM_UPN).split(".")
    body = tenant.id_token(VERA_UPN).split(".")[1]
    assert _refused(crm, {"id_token": f"{head}.{body}.{sig}"}, "vera")


_run = run_coroutine  # the hub's hooks are coroutines


class _HubUser:
    """What JupyterHub's User gives a spawner here: the hub name and the (decrypted) auth state."""

    def __init__(self, name: str, auth_state: dict[str, Any] | None) -> None:
        self.name = name
        self._auth_state = auth_state

    async def get_auth_state(self) -> dict[str, Any] | None:
        return self._auth_state


def test_pre_spawn_in_the_spawner_sets_team_mode_and_the_login_and_never_the_owners(
        crm: Crm, tenant: Tenant, os_users: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db_file = tmp_path / "crm_db_url"
    db_file.write_text(crm.url + "\n")
    home_base = Path(os_users["tom"].pw_dir).parent
    spawner = CrmkitSpawner(user=_HubUser("t16-tom", {"id_token": tenant.id_token(TOM_UPN)}),
                            home_base=str(home_base), crm_db_file=str(db_file), id_authority=tenant.authority,
                            id_client_id=tenant.client_id, ca_file=tenant.ca_file,
                            pre_spawn_hook=pre_spawn, environment={"CRMKIT_DB": crm.url, "KEEP": "1"})
    assert spawner.os_user == OS_USERS["tom"]
    _run(spawner.run_pre_spawn_hook())
    env = dict(spawner.environment)
    assert env["CRMKIT_MODE"] == "team" and env["KEEP"] == "1"
    assert env["CRMKIT_DB"].startswith(f"postgresql://{user_role(crm.url.rsplit('/', 1)[1], 'tom')}@")
    assert crm.url not in env.values()
    assert _open_as_server(env, monkeypatch).user.name == "tom"
    # an account linked to no CRM user is refused before the hub makes an OS user and home for it
    unlinked = {"id_token": tenant.id_token(f"jonas.becker@{SANDBOX_DOMAIN}")}
    refused = CrmkitSpawner(user=_HubUser("t16-nobody", unlinked), home_base=str(home_base),
                            crm_db_file=str(db_file), id_authority=tenant.authority, id_client_id=tenant.client_id,
                            ca_file=tenant.ca_file, pre_spawn_hook=pre_spawn)
    try:
        with pytest.raises(SpawnRefused, match="Ask an administrator"):
            _run(refused.run_pre_spawn_hook())
        with pytest.raises(KeyError):
            pwd.getpwnam("crmkit-t16-nobody")
    finally:
        subprocess.run(["userdel", "--remove", "crmkit-t16-nobody"], capture_output=True, check=False)


def test_an_account_disabled_in_the_tenant_signs_in_and_refreshes_no_more(tenant: Tenant) -> None:
    """The sandbox's admin hook the hub test disables kai with: Entra's accountEnabled=false (AADSTS50057)."""
    tls = ssl.create_default_context(cafile=tenant.ca_file)
    token_url = f"{tenant.authority}/oauth2/v2.0/token"
    form = {"grant_type": "password", "client_id": tenant.client_id, "client_secret": tenant.client_secret,
            "username": BEN_UPN, "password": SANDBOX_PASSWORD, "scope": "openid offline_access User.Read"}
    before = httpx.post(token_url, data=form, verify=tls, timeout=30).json()
    switch = f"{tenant.admin_url}/_sandbox/users/{BEN_UPN}/account_enabled"
    try:
        r = httpx.put(switch, json={"accountEnabled": False}, timeout=30)
        assert r.status_code == 200 and r.json() == {"id": user_id_for(BEN_UPN), "userPrincipalName": BEN_UPN,
                                                     "accountEnabled": False}
        refused = httpx.post(token_url, data=form, verify=tls, timeout=30)
        assert refused.status_code == 400 and "AADSTS50057" in refused.json()["error_description"]
        refresh = {**{k: form[k] for k in ("client_id", "client_secret", "scope")}, "grant_type": "refresh_token",
                   "refresh_token": before["refresh_token"]}
        assert "AADSTS50057" in httpx.post(token_url, data=refresh, verify=tls, timeout=30).text
        me = httpx.get(f"{tenant.https_url}/v1.0/me", headers={"Authorization": f"Bearer {before['access_token']}"},
                       verify=tls, timeout=30)
        assert me.status_code == 401
        assert httpx.put(switch, json={"accountEnabled": "no"}, timeout=30).status_code == 400
        assert httpx.put(f"{tenant.admin_url}/_sandbox/users/nobody@x.example/account_enabled",
                         json={"accountEnabled": False}, timeout=30).status_code == 404
    finally:
        assert httpx.put(switch, json={"accountEnabled": True}, timeout=30).json()["accountEnabled"] is True
    assert httpx.post(token_url, data=form, verify=tls, timeout=30).status_code == 200
