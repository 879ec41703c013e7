"""Which mode crmkit runs in, and what team mode refuses (issue 16 item 2).

``CRMKIT_MODE`` is ``single-user`` (the default: ``make demo``, a DuckDB file, Voila on 127.0.0.1 for one
person, who is whoever ``CRMKIT_USER`` or a demo's ``?user=`` names) or ``team``, which crmkit hub's spawner sets
in each person's single-user server (``crmkit.hub.hooks.pre_spawn``). In team mode a session's user comes only
from a sign-in: the server holds that person's own PostgreSQL login (``crmkit.store.pg_roles``), whose CRM user
``crmkit_user()`` names. The database enforces the rest (roles, row-level security); this module only makes
crmkit refuse what would otherwise fall back to a name nobody proved — a DuckDB file, a login that is no CRM
user's (the owner), a ``user=``/``CRMKIT_USER``/``?user=`` naming someone else — before the store is opened,
so a refusal writes nothing (not even a migration).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal, get_args

from .errors import ConfigError, PermissionDenied, catalog_error
from .i18n import t
from .store import default_path, is_postgres_url

__all__ = ["ENV", "MODES", "Mode", "TeamSignInRequired", "UnknownMode", "current_mode", "mode_text",
           "team_session_user"]

Mode = Literal["single-user", "team"]
MODES: tuple[Mode, ...] = get_args(Mode)
ENV = "CRMKIT_MODE"


class UnknownMode(ConfigError):
    """``CRMKIT_MODE`` holds something other than ``single-user`` or ``team``."""


class TeamSignInRequired(PermissionDenied):
    """Team mode: the session's user would come from a name, not from a sign-in at the hub (a DuckDB file, a
    login that is no CRM user's, or another user named). A PermissionDenied, as PostgreSQL's refusal of another
    name already was, so code catching that still does."""


def current_mode(environ: Mapping[str, str] | None = None) -> Mode:
    """The mode ``CRMKIT_MODE`` names (case and spaces ignored; unset or empty: single-user).

    Raises:
        UnknownMode: any other value (a typo must not quietly mean single-user).
    """
    raw = (os.environ if environ is None else environ).get(ENV, "")
    value = raw.strip().lower() or "single-user"
    if value not in MODES:
        raise catalog_error(UnknownMode, "error.msg.unknown_mode", value=repr(raw))
    return value  # type: ignore[return-value]  # checked against MODES above


def mode_text(mode: Mode, lang: str, user: str) -> str:
    """The line every dashboard shows: the mode, and in team mode who is signed in (``user``: a display name)."""
    return t("mode.team", lang, user=user) if mode == "team" else t("mode.single_user", lang)


def team_session_user(path: str | os.PathLike[str] | None, requested: str | None) -> str:
    """In team mode, the CRM user the database login at ``path`` (default ``CRMKIT_DB``) belongs to. Asked
    before the store exists, so nothing is migrated or written for a refused session.

    Raises:
        TeamSignInRequired: ``path`` is a DuckDB file or ``:memory:``; the login is no CRM user's
            (``crmkit_user()`` is NULL, e.g. the owner, or the logins were never synced); ``requested`` names
            another user than the login's.
        DatabaseUnavailable, DatabaseLoginRefused: the server is down or refuses the login.
    """
    raw = default_path() if path is None else os.fspath(path)
    if not is_postgres_url(raw):
        raise catalog_error(TeamSignInRequired, "error.msg.team_mode_file", where=raw)
    from .store.pg_roles import login_crm_user
    from .store.postgres import PostgresBackend

    # the backend, not a Store (which migrates); the process's pool for this URL, which the Store then shares
    backend = PostgresBackend(raw, 60.0)
    with backend.transaction(read_only=True, tracer=None) as tx:
        login = str(tx.one("SELECT current_user"))
        mapped = login_crm_user(tx)
    if mapped is None:
        raise catalog_error(TeamSignInRequired, "error.msg.team_mode_login", login=login, where=backend.path)
    user = mapped
    if requested and requested != user:
        raise catalog_error(TeamSignInRequired, "error.msg.team_mode_name", requested=requested, user=user)
    return user
