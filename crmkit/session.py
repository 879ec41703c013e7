"""The narrow session services are handed: one user working on one store.

It holds what a service needs and nothing of the features: the store, the user and their rights
(:meth:`Session.require`), the language, settings to read, the audit trail (:meth:`Session.audit`),
the clock and the store's tracer. It imports only leaf modules (errors, i18n, rights, settings, store),
so every service may depend on it and none needs :mod:`crmkit.crm`, which composes the services on
top of it (:class:`crmkit.crm.CRM` is a Session).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import PermissionDenied, UnknownUser, ValidationError
from .i18n import t
from .rights import RIGHTS, right_label
from .settings import SETTINGS, USER_SETTINGS, Setting
from .store import Store, Tracer, Tx

__all__ = ["Session", "User", "load_user", "now", "write_audit"]


@dataclass(frozen=True)
class User:
    name: str
    display_name: str
    rights: frozenset[str] = field(default_factory=frozenset)
    roles: tuple[str, ...] = ()

    def can(self, right: str) -> bool:
        return right in self.rights


def now() -> datetime:
    """The session clock: local time to the second, as every stored timestamp."""
    return datetime.now().replace(microsecond=0)


def load_user(tx: Tx, name: str) -> User:
    """The active user ``name`` with their roles and rights; :class:`UnknownUser` otherwise."""
    row = tx.rows("SELECT name, display_name, active FROM users WHERE name = ?", [name])
    if not row or not row[0][2]:
        known = [r[0] for r in tx.rows("SELECT name FROM users WHERE active ORDER BY name LIMIT 8")]
        raise UnknownUser(
            f"No active CRM user {name!r}. Known users: {', '.join(known)}. "
            "Pass user=... to crmkit.open(), set CRMKIT_USER, or ask an admin to add you."
        )
    roles = tuple(r[0] for r in tx.rows("SELECT role FROM user_roles WHERE user_name = ? ORDER BY role", [name]))
    rights = frozenset(
        r[0] for r in tx.rows(
            'SELECT DISTINCT rr."right" FROM user_roles ur JOIN role_rights rr ON rr.role = ur.role '
            "WHERE ur.user_name = ?", [name],
        )
    )
    return User(name=row[0][0], display_name=row[0][1], rights=rights, roles=roles)


def spec(table: Mapping[str, Setting], name: str) -> Setting:
    """The setting ``name`` of ``table``; :class:`ValidationError` naming the known ones otherwise."""
    if name not in table:
        raise ValidationError(f"Unknown setting {name!r}; known: {', '.join(sorted(table))}.")
    return table[name]


class Session:
    """A user on a store: rights, language, settings, audit, clock. Services take this, not the CRM."""

    # Set by crmkit.teams.sessions.register_session: the row in the session registry, and
    # ``teams.enabled`` as this session saw it when it opened (None: not registered).
    session_id: int | None = None
    teams_enabled_at_open: bool | None = None

    def __init__(self, store: Store, user: str) -> None:
        self.store = store
        self.user = store.read(lambda tx: load_user(tx, user))
        self.opened_at = now()

    @property
    def tracer(self) -> Tracer | None:
        """The store's statement tracer (``None`` when not tracing)."""
        return self.store.tracer

    @staticmethod
    def now() -> datetime:
        return now()

    def require(self, right: str) -> None:
        """Raise :class:`PermissionDenied` unless the session user holds ``right``."""
        if right not in RIGHTS:
            raise ValueError(f"unknown right {right!r}")
        if not self.user.can(right):
            de, en = right_label(right, "de"), right_label(right, "en")
            params = {"user": self.user.name, "right": right, "label_de": de, "label_en": en}
            raise PermissionDenied(t("error.msg.permission", "en", **params), right=right,
                                   user=self.user.name).localized("error.msg.permission", **params)

    def setting(self, name: str) -> Any:
        """A system-wide setting's current value (its default when never set)."""
        found = spec(SETTINGS, name)
        raw = self.store.one("SELECT value FROM system_settings WHERE key = ?", [name])
        return found.default if raw is None else json.loads(raw)

    def user_setting(self, name: str) -> Any:
        """One of the session user's own settings (its default when never set)."""
        found = spec(USER_SETTINGS, name)
        raw = self.store.one(
            "SELECT value FROM user_settings WHERE user_name = ? AND key = ?", [self.user.name, name]
        )
        return found.default if raw is None else json.loads(raw)

    @property
    def language(self) -> str:
        """The UI language: the user's own setting, else the system default."""
        return self.user_setting("language") or self.setting("ui.default_language")

    def audit(self, tx: Tx, scope: str, key: str, old: Any, new: Any) -> None:
        """Record a change (old and new value) in the audit trail, inside the caller's transaction."""
        write_audit(tx, self.user.name, scope, key, old, new)

    def write_setting(self, tx: Tx, name: str, value: Any) -> None:
        """Write a system setting inside a caller's transaction, audited (rights already checked)."""
        raw = tx.one("SELECT value FROM system_settings WHERE key = ?", [name])
        old = SETTINGS[name].default if raw is None else json.loads(raw)
        tx.execute(
            "INSERT INTO system_settings VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "value = excluded.value, changed_at = excluded.changed_at, changed_by = excluded.changed_by",
            [name, json.dumps(value), now(), self.user.name],
        )
        self.audit(tx, "system", name, old, value)


def write_audit(tx: Tx, user_name: str, scope: str, key: str, old: Any, new: Any) -> None:
    """An audit row (old and new value as JSON) by ``user_name``, inside the caller's transaction: a session's
    :meth:`Session.audit`, or work no session does (``crmkit init``; a sign-in the hub maps to its CRM user)."""
    tx.execute(
        "INSERT INTO audit (changed_at, user_name, scope, key, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?)",
        [now(), user_name, scope, key, json.dumps(old, default=str), json.dumps(new, default=str)],
    )

