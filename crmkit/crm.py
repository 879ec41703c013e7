"""The CRM session: one user working on one store.

``crmkit.open()`` returns a :class:`CRM`. Every privileged operation checks the session user's
rights here, in the core; views only show what the core allows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import addresses as _addresses
from . import contacts, record_links
from .addresses import check_id
from .errors import NotFound, ValidationError, catalog_error
from .mode import Mode, current_mode, team_session_user
from .rights import role_label
from .session import Session, User, load_user, now, spec
from .settings import SETTINGS, USER_SETTINGS, Setting
from .store import Store, Tracer, Tx
from .text_rules import check_text

if TYPE_CHECKING:
    from .campaigns import Campaigns
    from .directory_links import DirectoryLinks
    from .teams.send import TeamsService

__all__ = ["CRM", "User", "open"]


# Kept importable from here (crmkit.User, and callers of the private name) while they live in session.py.
_now = now
_load_user = load_user


class CRM(Session):
    """A user's session on a crmkit store. Create it with :func:`crmkit.open`.

    The narrow part (store, user and rights, language, settings, audit, clock) is
    :class:`crmkit.session.Session`, which the services take; this class composes the services on it.
    ``mode`` is the mode :func:`open` checked the session in (:mod:`crmkit.mode`); a CRM made directly passed
    no team-mode check, so it is ``single-user``.
    """

    mode: Mode = "single-user"

    def __init__(self, store: Store, user: str) -> None:
        super().__init__(store, user)
        self._teams: TeamsService | None = None
        self._campaigns: Campaigns | None = None
        from .teams.sessions import register_session

        # Remembers what this session saw of the Teams switch, so the UI can say "reopen to apply".
        register_session(self)

    def __repr__(self) -> str:
        return f"<CRM {self.store.path!r} user={self.user.name!r}>"

    @property
    def campaigns(self) -> Campaigns:
        """Campaigns, activities, reactions and their Teams actions (see :mod:`crmkit.campaigns`)."""
        if self._campaigns is None:
            from .campaigns import Campaigns

            self._campaigns = Campaigns(self)
        return self._campaigns

    @property
    def directory_links(self) -> DirectoryLinks:
        """CRM users linked to directory accounts (see :mod:`crmkit.directory_links`; needs ``system.admin``)."""
        from .directory_links import DirectoryLinks

        return DirectoryLinks(self)

    @property
    def teams(self) -> TeamsService:
        """Send records via Microsoft Teams (see :class:`crmkit.teams.send.TeamsService`)."""
        if self._teams is None:
            from .teams.send import TeamsService

            self._teams = TeamsService(self)
        return self._teams

    # -- users and roles -----------------------------------------------------------------------------

    def users(self) -> pd.DataFrame:
        return self.store.df(
            "SELECT u.name, u.display_name, u.email, u.active, string_agg(ur.role, ', ' ORDER BY ur.role) "
            "AS roles FROM users u LEFT JOIN user_roles ur ON ur.user_name = u.name "
            "GROUP BY u.name, u.display_name, u.email, u.active ORDER BY u.name"
        )

    def roles(self) -> pd.DataFrame:
        """The roles with their rights; labels from the catalog (the stored label of a role it does not know)."""
        df = self.store.df(
            'SELECT r.name, r.label_de, r.label_en, string_agg(rr."right", \', \' ORDER BY rr."right") AS rights '
            "FROM roles r LEFT JOIN role_rights rr ON rr.role = r.name "
            "GROUP BY r.name, r.label_de, r.label_en ORDER BY r.name"
        )
        for lang in ("de", "en"):
            df[f"label_{lang}"] = [role_label(n, lang, s) for n, s in zip(df["name"], df[f"label_{lang}"], strict=True)]
        return df

    def add_user(self, name: str, display_name: str, *, roles: Sequence[str] = (), email: str | None = None) -> None:
        """Create a CRM user (needs ``system.admin``)."""
        self.require("system.admin")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ValidationError("A user name is 1-64 characters.")
        check_text(name, "name")
        check_text(display_name, "display_name")
        check_text(email, "email")

        def run(tx: Tx) -> None:
            if tx.one("SELECT count(*) FROM users WHERE name = ?", [name]):
                raise ValidationError(f"A user {name!r} exists already; choose another name.")
            known = {r[0] for r in tx.rows("SELECT name FROM roles")}
            unknown = set(roles) - known
            if unknown:
                raise ValidationError(f"Unknown roles {sorted(unknown)}; known roles: {sorted(known)}.")
            tx.execute("INSERT INTO users (name, display_name, email) VALUES (?, ?, ?)", [name, display_name, email])
            for role in roles:
                tx.execute("INSERT INTO user_roles VALUES (?, ?)", [name, role])
            self.audit(tx, "users", name, None, {"display_name": display_name, "roles": list(roles)})

        self.store.write(run)

    def set_roles(self, name: str, roles: Sequence[str]) -> None:
        """Replace a user's roles (needs ``system.admin``)."""
        self.require("system.admin")

        def run(tx: Tx) -> None:
            _load_user(tx, name)
            known = {r[0] for r in tx.rows("SELECT name FROM roles")}
            if set(roles) - known:
                raise ValidationError(f"Unknown roles {sorted(set(roles) - known)}; known: {sorted(known)}.")
            old = [r[0] for r in tx.rows("SELECT role FROM user_roles WHERE user_name = ? ORDER BY role", [name])]
            tx.execute("DELETE FROM user_roles WHERE user_name = ?", [name])
            for role in roles:
                tx.execute("INSERT INTO user_roles VALUES (?, ?)", [name, role])
            self.audit(tx, "users", f"{name}.roles", old, sorted(roles))

        self.store.write(run)

    # -- settings ------------------------------------------------------------------------------------

    def settings(self) -> pd.DataFrame:
        stored = dict(self.store.read(lambda tx: tx.rows("SELECT key, value FROM system_settings")))
        return pd.DataFrame(
            [(s.name, json.loads(stored[s.name]) if s.name in stored else s.default, s.right, s.help)
             for s in SETTINGS.values()],
            columns=["name", "value", "right", "help"],
        )

    def set_setting(self, name: str, value: Any) -> None:
        """Change a system-wide setting; needs the setting's right; audited with old and new value."""
        spec = _spec(SETTINGS, name)
        self.require(spec.right)
        _check_value(spec, value)
        if name == "teams.enabled":  # switching on also creates the contact type TS, in one transaction
            from .teams import activation

            activation.set_enabled(self, value)
            return
        if name == record_links.SETTING:  # a link base Teams messages will carry: its form checked here too
            record_links.set_base(self, value)
            return
        self.store.write(lambda tx: self.write_setting(tx, name, value))

    def set_user_setting(self, name: str, value: Any) -> None:
        """Change one of the session user's own settings; audited."""
        spec = _spec(USER_SETTINGS, name)
        _check_value(spec, value)

        def run(tx: Tx) -> None:
            raw = tx.one("SELECT value FROM user_settings WHERE user_name = ? AND key = ?", [self.user.name, name])
            old = spec.default if raw is None else json.loads(raw)
            tx.execute(
                "INSERT INTO user_settings VALUES (?, ?, ?, ?) ON CONFLICT (user_name, key) "
                "DO UPDATE SET value = excluded.value, changed_at = excluded.changed_at",
                [self.user.name, name, json.dumps(value), _now()],
            )
            self.audit(tx, f"user:{self.user.name}", name, old, value)

        self.store.write(run)

    def audit_log(self, *, scope: str | None = None, limit: int = 500) -> pd.DataFrame:
        """The audit trail of settings and rights changes (needs ``system.admin``)."""
        self.require("system.admin")
        where, params = ("WHERE scope = ?", [scope]) if scope else ("", [])
        return self.store.df(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", [*params, int(limit)])

    # -- contact types -------------------------------------------------------------------------------

    def contact_types(self) -> pd.DataFrame:
        return self.store.df("SELECT code, label FROM contact_types ORDER BY code")

    def add_contact_type(self, code: str, label: str) -> None:
        """Create a contact type with a unique short code (needs ``system.admin``)."""
        self.require("system.admin")
        code = _check_code(code)
        if not isinstance(label, str) or not label.strip():
            raise ValidationError("A contact type needs a label.")
        check_text(label, "label")

        def run(tx: Tx) -> None:
            other = tx.one("SELECT label FROM contact_types WHERE code = ?", [code])
            if other is not None:
                raise ValidationError(f"The short code {code!r} is used by the contact type {other!r}.")
            tx.execute("INSERT INTO contact_types (code, label) VALUES (?, ?)", [code, label])
            self.audit(tx, "contact_types", code, None, label)

        self.store.write(run)

    def change_contact_type_code(self, code: str, new_code: str) -> None:
        """Give a contact type another short code; its contacts follow (needs ``system.admin``).

        The contact-type screen (:mod:`crmkit.contact_types`) also lets a Teams administrator do it.
        """
        self.require("system.admin")
        from .contact_types import change_code

        change_code(self, code, new_code)

    # -- addresses (the queries, writes and search index live in crmkit.addresses) --------------------

    def addresses(
        self, where: str | None = None, params: Sequence[Any] = (), *, search: str | None = None,
        columns: Sequence[str] | None = None, order_by: str = "id", limit: int | None = None,
        offset: int = 0, **filters: Any,
    ) -> pd.DataFrame:
        """Addresses as a DataFrame; the arguments and errors: :func:`crmkit.addresses.addresses`."""
        return _addresses.addresses(self.store, where, params, search=search, columns=columns, order_by=order_by,
                                    limit=limit, offset=offset, **filters)

    def count_addresses(
        self, where: str | None = None, params: Sequence[Any] = (), *, search: str | None = None, **filters: Any
    ) -> int:
        """How many addresses match (:func:`crmkit.addresses.count_addresses`)."""
        return _addresses.count_addresses(self.store, where, params, search=search, **filters)

    def address_page(
        self, page: int = 0, size: int = 25, *, where: str | None = None, params: Sequence[Any] = (),
        search: str | None = None, order_by: str = "id", columns: Sequence[str] | None = None, **filters: Any,
    ) -> tuple[pd.DataFrame, int]:
        """One page of addresses and the total count, in one attach (:func:`crmkit.addresses.address_page`)."""
        return _addresses.address_page(self.store, page, size, where=where, params=params, search=search,
                                       order_by=order_by, columns=columns, **filters)

    def address(self, address_id: int) -> dict[str, Any]:
        """One address as a dict; :class:`NotFound` when there is none."""
        return _addresses.address(self.store, address_id)

    # crmkit.addresses takes a store and a user name, no session; the right is checked here, before it.
    def add_address(self, **fields: Any) -> int:
        """Create an address as the session user (needs ``records.write``); returns its id."""
        self.require(contacts.WRITE_RIGHT)
        return _addresses.add_address(self.store, self.user.name, **fields)

    def update_address(self, address_id: int, **fields: Any) -> None:
        """Change fields of an address (needs ``records.write``); records who (the session user) and when."""
        self.require(contacts.WRITE_RIGHT)
        _addresses.update_address(self.store, self.user.name, address_id, **fields)

    # -- contacts ------------------------------------------------------------------------------------

    def contacts(self, address_id: int | None = None, *, type_code: str | None = None,
                 limit: int = 1000) -> pd.DataFrame:
        """Logged interactions (not persons), newest first."""
        parts, values = [], []
        if address_id is not None:
            parts.append("address_id = ?")
            values.append(check_id(address_id))
        if type_code is not None:
            parts.append("type_code = ?")
            values.append(type_code)
        where = " WHERE " + " AND ".join(parts) if parts else ""
        return self.store.df(
            f"SELECT * FROM contacts{where} ORDER BY happened_at DESC, id DESC LIMIT ?", [*values, int(limit)]
        )

    def add_contact(
        self, address_id: int, type_code: str, subject: str, *, notes: str | None = None,
        source: str = "manual", at: datetime | None = None,
    ) -> int:
        """Log an interaction on an address (needs ``records.write``); returns the contact id."""
        contacts.require_manual(self)  # the one rights check of manual contacts (crmkit.contacts)
        address_id = check_id(address_id)
        if not isinstance(subject, str) or not subject.strip():
            raise ValidationError("A contact needs a subject.")
        check_text(subject, "subject")
        check_text(notes, "notes", lines=True)  # notes may run over several lines
        return _addresses.write_new(  # numbers the contact max(id) + 1: retried on PostgreSQL's id race
            self.store, lambda tx: self._add_contact(tx, address_id, type_code, subject, notes, source, at)
        )

    def _add_contact(self, tx: Tx, address_id: int, type_code: str, subject: str, notes: str | None,
                     source: str, at: datetime | None = None) -> int:
        if not tx.one("SELECT count(*) FROM addresses WHERE id = ?", [address_id]):
            raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
        if not tx.one("SELECT count(*) FROM contact_types WHERE code = ?", [type_code]):
            raise ValidationError(f"Unknown contact type {type_code!r}; see crm.contact_types().")
        return contacts.insert(tx, address_id=address_id, type_code=type_code, subject=subject, notes=notes,
                               user_name=self.user.name, source=source, happened_at=at or _now())


# -- validation helpers ------------------------------------------------------------------------------

_spec = spec


def _check_value(spec: Setting, value: Any) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ValidationError(f"{spec.name} must be one of {list(spec.choices)}, not {value!r}.")
    if spec.default is not None and value is not None and type(value) is not type(spec.default):
        raise ValidationError(f"{spec.name} takes a {type(spec.default).__name__}, not {value!r}.")
    try:
        json.dumps(value)
    except TypeError as exc:
        raise ValidationError(f"{spec.name}: value {value!r} cannot be stored.") from exc
    # Every setting's text is one line (a prefix, ids, host names); the prefix leads every subject.
    check_text(value, spec.name, bidi=True)


def _check_code(code: str) -> str:
    if not isinstance(code, str) or not code.strip() or len(code.strip()) > 8:
        raise ValidationError("A contact type short code has 1-8 characters.")
    check_text(code, "code")
    return code.strip().upper()


def open(path: str | os.PathLike[str] | None = None, user: str | None = None, *,
         tracer: Tracer | None = None) -> CRM:
    """Open a CRM session.

    Args:
        path: the DuckDB file (default ``CRMKIT_DB``, else ``./crm.duckdb``), or ``":memory:"``.
        user: the CRM user (default ``CRMKIT_USER``, else ``admin``).
        tracer: called with ``(sql, params)`` before each statement.

    Raises:
        DatabasePathError, NotACrmkitDatabase: the path cannot hold or is not a crmkit database.
        UnknownUser: no active user of that name.
        PermissionDenied: on PostgreSQL, the login is a CRM user's role and ``user`` names another.
        TeamSignInRequired: in team mode (``CRMKIT_MODE=team``, :mod:`crmkit.mode`), a DuckDB path, a login that
            is no CRM user's, or ``user``/``CRMKIT_USER`` naming another than the login's user; nothing written.
        UnknownMode: ``CRMKIT_MODE`` is neither ``single-user`` nor ``team``.
    """
    mode = current_mode()
    name = user or os.environ.get("CRMKIT_USER")
    if mode == "team":  # the user comes from the login alone, checked before the store (and its migrations) opens
        name = team_session_user(path, name)
    store = Store(path, tracer=tracer)
    if store.dialect == "postgresql":  # a CRM user's database role is that user's session (crmkit.store.pg_roles)
        from .store.pg_roles import crm_user_of_login

        name = crm_user_of_login(store, name)
    crm = CRM(store, name or "admin")
    crm.mode = mode
    return crm
