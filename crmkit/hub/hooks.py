"""The hub's hook into a person's spawn: where crmkit's side of a sign-in meets the single-user server.

``pre_spawn`` runs in the hub (as root) after the person's OS user and home exist (``CrmkitSpawner``) and
before their server starts. Every server runs in team mode (``CRMKIT_MODE=team``). With a CRM database
(``crmkit hub --db``) it also hands the person their CRM login (:func:`hand_over_login`):

1. the id_token of the person's sign-in (the hub's encrypted auth state) is verified by crmkit itself
   (:class:`crmkit.auth.id_token.IdTokenVerifier`: the tenant's signature, issuer, audience = the hub's app,
   expiry; oauthenticator sends no nonce, so none is checked). A bare hub name proves nothing;
2. its account (tid + oid) is mapped to the CRM user by :func:`crmkit.directory_links.user_for` (which also
   completes a pending link made by ``crmkit init --admin``); an unlinked account or a switched-off user is
   refused, and the spawn fails with that error's text (what to do: ask an administrator to link you);
3. that CRM user's database login gets a new random password (:func:`crmkit.store.pg_roles.rotate_password`,
   as the owner) written to a libpq passfile ``~/.crmkit/pgpass`` (0600, owned by the person's OS user), and
   the server gets ``CRMKIT_DB=postgresql://<login>@host:port/db`` (no password) and ``PGPASSFILE``.

The owner's URL stays in the hub (a 0600 file of its state folder): never in a server's environment or files.
A directory account switched off in the tenant gets no server either: the config sets
``Authenticator.refresh_pre_spawn``, so the hub refreshes the person's tokens at the tenant before each spawn,
which the tenant refuses for a disabled account (the person must sign in again, and cannot).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from tornado import web

from ..auth._errors import IdTokenRefused
from ..auth.id_token import IdTokenVerifier, VerifiedIdToken
from ..directory_links import user_for
from ..errors import CrmkitError, UnknownUser, catalog_error
from ..store import Store, is_postgres_url
from ..store.pg_roles import passfile_line, rotate_password, sync_database_roles

__all__ = ["PASSFILE", "SpawnRefused", "TeamCrm", "check_sign_in", "close_connections", "crm_user_of_sign_in",
           "hand_over_login", "pre_spawn", "read_db_url", "verified_sign_in"]

PASSFILE = (".crmkit", "pgpass")  # under the person's home: crmkit's CRMKIT_HOME default, libpq's file


class SpawnRefused(web.HTTPError):
    """The person gets no server: their sign-in is no CRM user's (or could not be verified). A 403 for JupyterHub,
    which shows ``jupyterhub_message`` (the CRM error's text in German and English) on its error page, or on the
    progress page as "Spawn failed: …" when the refusal comes after the spawn went pending."""

    def __init__(self, error: CrmkitError) -> None:
        self.error = error
        de, en = error.text("de"), error.text("en")
        self.jupyterhub_message = en if de == en else f"{de} / {en}"
        super().__init__(403, "%s", self.jupyterhub_message, reason="Forbidden")

    def __str__(self) -> str:
        return self.jupyterhub_message


@dataclass(frozen=True)
class TeamCrm:
    """What the hub needs to hand a person their CRM login: the owner's database URL (it rotates logins),
    the tenant's authority and the hub's app (the id_token's issuer and audience), the CA the tenant's TLS
    is signed by ("" = the system's)."""

    owner_url: str
    authority: str
    client_id: str
    ca_file: str = ""

    def __repr__(self) -> str:  # the owner's URL may carry a password
        return f"<TeamCrm {self.authority} app {self.client_id}>"


def read_db_url(path: str | os.PathLike[str]) -> str:
    """The owner's URL from the hub's 0600 file (``crmkit hub --db`` wrote it)."""
    url = Path(path).read_text(encoding="utf-8").strip()
    if not is_postgres_url(url):
        raise ValueError(f"{path} holds no postgresql:// URL")
    return url


_lock = threading.Lock()
_verifiers: dict[tuple[str, str, str], IdTokenVerifier] = {}
_stores: dict[str, Store] = {}


def _verifier(team: TeamCrm) -> IdTokenVerifier:
    """One verifier per tenant and app: the tenant's keys are fetched once, not at every spawn."""
    key = (team.authority, team.client_id, team.ca_file)
    with _lock:
        if key not in _verifiers:
            tls = ssl.create_default_context(cafile=team.ca_file) if team.ca_file else True
            http = httpx.Client(verify=tls, timeout=30)
            _verifiers[key] = IdTokenVerifier(team.authority, team.client_id, http=http)
        return _verifiers[key]


def _store(url: str) -> Store:
    """The owner's store, opened once per hub (it migrates the CRM to this crmkit's schema on first use)."""
    with _lock:
        if url not in _stores:
            _stores[url] = Store(url)
        return _stores[url]


def close_connections() -> None:
    """Close what the hook keeps open: the owner's stores and the verifiers' HTTP clients (a test's throwaway
    database and tenant; the hub keeps its ones for its lifetime)."""
    with _lock:
        stores, verifiers = list(_stores.values()), list(_verifiers.values())
        _stores.clear()
        _verifiers.clear()
    for store in stores:
        store.close()
    for verifier in verifiers:
        verifier.http.close()


def verified_sign_in(team: TeamCrm, auth_state: Mapping[str, Any] | None) -> VerifiedIdToken:
    """Who signed in, from the id_token in the hub's auth state, verified by crmkit.

    Raises:
        IdTokenRefused: no auth state or no id_token (nothing proves who this is), or a check failed.
        SigningKeysUnavailable: the tenant's keys could not be read.
    """
    token = (auth_state or {}).get("id_token")
    if not isinstance(token, str) or not token:
        raise catalog_error(IdTokenRefused, "error.msg.id_token_malformed")
    return _verifier(team).verify(token)  # no nonce: oauthenticator sends none


def _write_private(home: Path, parts: tuple[str, ...], text: str, uid: int, gid: int) -> Path:
    """Write ``text`` to ``home/parts...`` as a new 0600 file owned by ``uid``; the folders on the way are made
    0700 and theirs. Root writes into a home its person controls, so no path component is followed if it is a
    symlink (O_NOFOLLOW, dir fds), the file is made under a random name (O_EXCL) and renamed over the old one."""
    fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name in parts[:-1]:
            try:
                os.mkdir(name, 0o700, dir_fd=fd)
                os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                pass
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = sub
            os.fchown(fd, uid, gid)
            os.fchmod(fd, 0o700)
        tmp = f".{parts[-1]}.{secrets.token_hex(8)}"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=fd)
        try:
            os.fchown(out, uid, gid)
            os.fchmod(out, 0o600)
            os.write(out, text.encode("utf-8"))
        finally:
            os.close(out)
        os.replace(tmp, parts[-1], src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)
    return home.joinpath(*parts)


def crm_user_of_sign_in(team: TeamCrm, auth_state: Mapping[str, Any] | None) -> str:
    """The CRM user of the sign-in in ``auth_state`` (its id_token verified, its account's directory link).

    Raises:
        SpawnRefused: not verified, linked to no CRM user, or the user is switched off.
    """
    try:
        return user_for(_store(team.owner_url), verified_sign_in(team, auth_state))
    except CrmkitError as exc:
        raise SpawnRefused(exc) from None  # no traceback of the owner's store into the hub's log


async def check_sign_in(spawner: Any) -> None:
    """Refuse the spawn of a sign-in that is no CRM user's before anything is made for it (``CrmkitSpawner``
    calls it before it creates the person's OS user and home). Nothing to check without a CRM database.

    Raises:
        SpawnRefused: as :func:`crm_user_of_sign_in`.
    """
    team = _team_crm(spawner)
    if team is not None:
        auth_state = await spawner.user.get_auth_state()
        await asyncio.to_thread(crm_user_of_sign_in, team, auth_state)


def hand_over_login(team: TeamCrm, auth_state: Mapping[str, Any] | None, os_user: str) -> dict[str, str]:
    """Verify the sign-in, find its CRM user, rotate that user's database login into the person's passfile;
    returns the server's environment additions (``CRMKIT_DB`` without password, ``PGPASSFILE``). Blocking:
    the hub runs it in a thread. Idempotent: run again it rotates once more and the file holds the newest.

    Raises:
        SpawnRefused: the sign-in is not verified, its account is linked to no CRM user, or the user is
            switched off (nothing rotated, nothing written into the home).
    """
    user = crm_user_of_sign_in(team, auth_state)
    store = _store(team.owner_url)
    try:
        login = rotate_password(store, user)
    except UnknownUser:  # linked and active, but its login was never made: the owner makes it now
        try:
            sync_database_roles(store)
            login = rotate_password(store, user)
        except CrmkitError as exc:
            raise SpawnRefused(exc) from None
    except CrmkitError as exc:
        raise SpawnRefused(exc) from None  # no traceback of the owner's store into the hub's log
    entry = pwd.getpwnam(os_user)
    if entry.pw_uid == 0:
        raise RuntimeError("the hub never hands a CRM login to root")
    parts = urlsplit(login.url)
    database = unquote(parts.path.lstrip("/"))
    line = passfile_line(parts.hostname or "localhost", str(parts.port or 5432), database, login.role,
                         login.password or "")
    passfile = _write_private(Path(entry.pw_dir), PASSFILE, line + "\n", entry.pw_uid, entry.pw_gid)
    return {"CRMKIT_DB": login.url, "PGPASSFILE": str(passfile)}


def _team_crm(spawner: Any) -> TeamCrm | None:
    db_file = getattr(spawner, "crm_db_file", "")
    if not db_file:
        return None
    return TeamCrm(read_db_url(db_file), spawner.id_authority, spawner.id_client_id, getattr(spawner, "ca_file", ""))


async def pre_spawn(spawner: Any) -> None:
    """``c.Spawner.pre_spawn_hook``; idempotent (JupyterHub may call it again for a retried spawn).
    ``spawner.os_user`` and ``pwd.getpwnam(spawner.os_user).pw_dir`` are the person's OS user and home.

    Every person's server runs in team mode (crmkit.mode): crmkit there refuses a DuckDB file, a login that is
    no CRM user's, and any name but the login's user. With a CRM database configured (``crm_db_file``), the
    person's own login is handed over (:func:`hand_over_login`), or the spawn is refused."""
    env = {k: v for k, v in spawner.environment.items() if k not in ("CRMKIT_DB", "PGPASSFILE")}
    env["CRMKIT_MODE"] = "team"
    team = _team_crm(spawner)
    if team is not None:
        auth_state = await spawner.user.get_auth_state()
        env.update(await asyncio.to_thread(hand_over_login, team, auth_state, spawner.os_user))
    spawner.environment = env
