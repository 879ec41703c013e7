"""The registry of open CRM sessions, so the Teams settings can say who must reopen.

A session (an opened :class:`~crmkit.crm.CRM`) reads ``teams.enabled`` when it opens, like the
reference CRM reads it at program start. Each session records that value in ``sessions``; when the
setting changes afterwards, :func:`reopen_notice` tells that session, and
:func:`open_sessions_needing_reopen` tells the Teams administrator which sessions are affected.

Each session also records its kind (:func:`session_kind`): a Voila dashboard, a notebook kernel
(JupyterLab, nbclient), or a script (``crmkit demo``'s launcher, the campaign worker, the CLI,
tests). Only dashboards and notebooks are people who can reopen a page, so only they are listed;
and only while their process runs (a dead kernel, or its pid reused by a newer process, is gone).

``register_session`` is meant to run inside ``CRM.__init__``: it is one short write, it waits at
most :data:`REGISTER_LOCK_TIMEOUT` seconds for another process's lock, and it never raises - an
unregistered session only loses the reopen notice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from ..errors import StoreError
from ..i18n import t
from ..processes import HOST, pid_alive

if TYPE_CHECKING:
    from ..session import Session
    from ..store import Tx

__all__ = [
    "KINDS",
    "REGISTER_LOCK_TIMEOUT",
    "REOPEN_KINDS",
    "STALE_AFTER",
    "close_session",
    "open_sessions_needing_reopen",
    "register_session",
    "reopen_notice",
    "session_kind",
    "teams_enabled_at_open",
    "touch_session",
]

log = logging.getLogger("crmkit.teams")

REGISTER_LOCK_TIMEOUT = 2.0  # seconds; opening a CRM must stay quick even while a batch job writes
STALE_AFTER = timedelta(hours=24)  # a session not seen for this long counts as gone (crashed kernel)
_PURGE_AFTER = timedelta(days=7)
KINDS = ("dashboard", "notebook", "script")
REOPEN_KINDS = ("dashboard", "notebook")  # sessions a person has open in a browser
KIND_ENV = "CRMKIT_SESSION_KIND"  # lets a process say what it is when detection cannot tell


def session_kind() -> str:
    """What kind of process this session runs in: ``dashboard``, ``notebook`` or ``script``.

    ``CRMKIT_SESSION_KIND`` wins when it names a kind. Otherwise a Jupyter kernel is a dashboard
    when Voila started it (Voila gives its kernels ``VOILA_*`` variables and, per request,
    ``SERVER_SOFTWARE=voila/...``), else a notebook; anything else is a script.
    """
    wanted = os.environ.get(KIND_ENV, "").strip().lower()
    if wanted in KINDS:
        return wanted
    if "ipykernel" not in sys.modules:
        return "script"
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return "script"
    if shell is None or getattr(shell, "kernel", None) is None:
        return "script"  # IPython in a terminal, not a kernel behind a page
    env = os.environ
    if "VOILA_PREHEAT" in env or "VOILA_KERNEL_ID" in env or env.get("SERVER_SOFTWARE", "").startswith("voila"):
        return "dashboard"
    return "notebook"


def _store_errors(crm: Session) -> tuple[type[BaseException], ...]:
    """The errors the registry logs instead of raising: crmkit's store errors and the database's own (a
    refused grant, a server gone between statements, a conflict retried too often). psycopg is loaded on
    PostgreSQL only."""
    if crm.store.dialect == "postgresql":
        import psycopg

        return (StoreError, duckdb.Error, psycopg.Error)
    return (StoreError, duckdb.Error)


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def _enabled(tx: Tx) -> bool:
    raw = tx.one("SELECT value FROM system_settings WHERE key = 'teams.enabled'")
    return bool(json.loads(raw)) if raw is not None else False


def register_session(crm: Session) -> int | None:
    """Record ``crm`` as an open session; return its id, or None when it could not be recorded.

    Sets ``crm.session_id`` and ``crm.teams_enabled_at_open`` (the setting as this session saw it
    when it opened). Also forgets sessions not seen for a week. Never raises: a lock held longer
    than :data:`REGISTER_LOCK_TIMEOUT` or any store error is logged and the open continues.
    """
    now = _now()
    kind = session_kind()

    def run(tx: Tx) -> tuple[int, bool]:
        enabled = _enabled(tx)
        tx.execute("DELETE FROM sessions WHERE last_seen < ?", [now - _PURGE_AFTER])
        new_id = tx.one(
            "INSERT INTO sessions (user_name, pid, host, opened_at, last_seen, teams_enabled_at_open, kind) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [crm.user.name, os.getpid(), HOST, now, now, enabled, kind],
        )
        return int(new_id), enabled

    store = crm.store
    try:
        with store.lock_wait(REGISTER_LOCK_TIMEOUT):  # a shortened lock wait for this write only
            session_id, enabled = store.write(run, retries=3)
    except _store_errors(crm) as exc:
        log.warning("crmkit: session not registered (%s); the Teams reopen notice is unavailable.", exc)
        crm.session_id = None
        crm.teams_enabled_at_open = None
        return None
    crm.session_id = session_id
    crm.teams_enabled_at_open = enabled
    return session_id


def teams_enabled_at_open(crm: Session) -> bool | None:
    """``teams.enabled`` as this session saw it when it opened; None when it was not registered."""
    return crm.teams_enabled_at_open


def touch_session(crm: Session) -> None:
    """Mark the session as alive now (a view may call this now and then). Never raises."""
    session_id = crm.session_id
    if session_id is None:
        return
    try:
        crm.store.write(lambda tx: tx.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", [_now(), session_id]))
    except _store_errors(crm) as exc:
        log.warning("crmkit: session %s not touched (%s).", session_id, exc)


def close_session(crm: Session) -> None:
    """Remove the session from the registry (on a clean close). Never raises."""
    session_id = crm.session_id
    if session_id is None:
        return
    try:
        crm.store.write(lambda tx: tx.execute("DELETE FROM sessions WHERE id = ?", [session_id]))
    except _store_errors(crm) as exc:
        log.warning("crmkit: session %s not closed in the registry (%s).", session_id, exc)
    crm.session_id = None


def reopen_notice(crm: Session, lang: str | None = None, *, enabled: bool | None = None) -> str | None:
    """A "reopen to apply" text when ``teams.enabled`` changed since this session opened, else None.

    ``enabled``: the setting's current value when the caller has just read it (one read, not two).
    Needs no right: it only concerns the caller's own session.
    """
    at_open = teams_enabled_at_open(crm)
    if at_open is None:
        return None
    now = bool(crm.setting("teams.enabled")) if enabled is None else bool(enabled)
    if now == at_open:
        return None
    lang = lang or crm.language
    return t("teams.reopen_enabled", lang) if now else t("teams.reopen_disabled", lang)


def open_sessions_needing_reopen(crm: Session, *, stale_after: timedelta = STALE_AFTER) -> pd.DataFrame:
    """Live dashboard and notebook sessions that saw another ``teams.enabled`` (needs ``teams.admin``).

    Listed are sessions of a kind in :data:`REOPEN_KINDS` (scripts such as the demo launcher or the
    campaign worker are no page anyone reopens), seen within ``stale_after``, and, on this host,
    whose process still runs and started before the session opened (an older start means the
    kernel died and its pid went to another process). Sessions on other hosts cannot be probed and
    are listed while seen. Columns: id, user_name, kind, pid, host, opened_at, last_seen,
    teams_enabled_at_open, teams_enabled_now.

    Raises:
        PermissionDenied: the user lacks ``teams.admin``.
    """
    crm.require("teams.admin")
    kinds = ", ".join(f"'{k}'" for k in REOPEN_KINDS)

    def run(tx: Tx) -> pd.DataFrame:
        enabled = _enabled(tx)
        frame = tx.df(
            "SELECT id, user_name, kind, pid, host, opened_at, last_seen, teams_enabled_at_open FROM sessions "
            f"WHERE teams_enabled_at_open <> ? AND last_seen >= ? AND kind IN ({kinds}) ORDER BY opened_at, id",
            [enabled, _now() - stale_after],
        )
        frame["teams_enabled_now"] = enabled
        return frame

    frame = crm.store.read(run)
    if not len(frame):
        return frame
    alive = [_session_alive(host, int(pid), opened) for host, pid, opened in
             zip(frame["host"], frame["pid"], frame["opened_at"], strict=True)]
    return frame[alive].reset_index(drop=True)


def _session_alive(host: str, pid: int, opened_at: datetime) -> bool:
    """Whether the session's process still runs (True when it cannot be told: another host)."""
    if host != HOST:
        return True
    if pid == os.getpid():
        return True
    if not pid_alive(pid):
        return False
    try:
        import psutil

        started = datetime.fromtimestamp(psutil.Process(pid).create_time())
    except Exception:  # psutil missing, or the process ended just now: trust the probe above
        return True
    # opened_at is stored to the second, so allow a second; a later start is another process on a reused pid.
    return started <= pd.Timestamp(opened_at).to_pydatetime() + timedelta(seconds=1)
