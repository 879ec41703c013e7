"""CRM users bound to directory accounts: who a verified sign-in is in the CRM (issue 16 item 1).

A CRM user is linked to ONE directory account, identified by tenant id + object id (``tid`` + ``oid`` of a
verified id_token, :class:`crmkit.auth.id_token.VerifiedIdToken`); one account is one CRM user (the table's
UNIQUE (tenant_id, object_id)). The UPN and display name are kept as the last verified sign-in said: they are
for people to read, never for lookup, with one exception: a *pending* link (object id unknown yet) made by
``crmkit init --admin UPN`` is matched by tenant + UPN at that person's first verified sign-in, which fills
the object id in; from then on only the object id counts.

- :class:`DirectoryLinks` (``link``, ``unlink``, ``links``): the administrators' part, for the system settings.
  Needs ``system.admin`` (checked here, before anything is read or written), each change audited in its
  transaction (scope ``directory_links``).
- :func:`user_for`: the CRM user of a verified sign-in. It takes the store, not a session: it runs before
  there is one (the hub's spawn hook, as the database owner).
- :func:`bootstrap_admin`: the first administrator, for ``crmkit init --admin UPN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from .errors import AuthError, UnknownUser, ValidationError, catalog_error
from .session import Session, now, write_audit
from .store import Store, Tx
from .text_rules import account_name, check_text

if TYPE_CHECKING:
    from .auth.id_token import VerifiedIdToken

__all__ = [
    "SCOPE",
    "AccountAlreadyLinked",
    "AccountNotLinked",
    "AdminAlreadyLinked",
    "BootstrapResult",
    "DirectoryLinks",
    "InactiveUser",
    "SignInUserInactive",
    "bootstrap_admin",
    "user_for",
    "user_name_for_upn",
]

SCOPE = "directory_links"  # the audit scope of every change here
BOOTSTRAP_BY = "crmkit init"  # linked_by (and the audit's user) of the first administrator's pending link
_MAX = 256  # tenant ids and object ids are GUIDs, UPNs up to 113 characters; anything longer is not an account


class AccountAlreadyLinked(ValidationError):
    """The directory account is linked to another CRM user (one account is one user), or the user to another
    account; names both."""


class InactiveUser(ValidationError):
    """A CRM user that is switched off cannot be linked (switch it on first)."""


class AdminAlreadyLinked(ValidationError):
    """``crmkit init --admin``: another administrator is linked already; admins link further users themselves."""


class AccountNotLinked(AuthError):
    """A verified sign-in whose directory account no CRM user is linked to: an administrator must link it."""


class SignInUserInactive(AuthError):
    """A verified sign-in whose linked CRM user is switched off."""


@dataclass(frozen=True)
class BootstrapResult:
    """What ``crmkit init --admin`` did: the CRM user, and whether it made the user and the link."""

    user: str
    created_user: bool
    linked: bool  # False: the same pending or completed link was there already (nothing written)


def user_name_for_upn(upn: str) -> str:
    """The CRM user name for a directory account: :func:`crmkit.text_rules.account_name`, as the hub names
    people (crmkit/hub/spawner.py hub_username), at most 64 characters."""
    name = account_name(_upn(upn))
    if not name or len(name) > 64:
        raise catalog_error(ValidationError, "error.msg.directory_bad_upn", upn=upn)
    return name


def _upn(upn: object) -> str:
    if not isinstance(upn, str) or upn.count("@") != 1 or not upn.strip() or len(upn) > _MAX or \
            upn != upn.strip() or not all(upn.split("@")):
        raise catalog_error(ValidationError, "error.msg.directory_bad_upn", upn=str(upn)[:80])
    check_text(upn, "upn")
    return upn


def _id(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX or value != value.strip():
        raise catalog_error(ValidationError, "error.msg.directory_bad_id", field=field)
    check_text(value, field)
    return value


def _active_user(tx: Tx, user: str) -> None:
    row = tx.rows("SELECT active FROM users WHERE name = ?", [user])
    if not row:
        raise catalog_error(UnknownUser, "error.msg.directory_unknown_user", user=user)
    if not row[0][0]:
        raise catalog_error(InactiveUser, "error.msg.directory_inactive_user", user=user)


def _holder(tx: Tx, tenant_id: str, object_id: str | None, upn: str | None, user: str) -> str | None:
    """Another CRM user whose link is this account: the same object id, or (either link pending) the same UPN."""
    if object_id is not None:
        row = tx.rows("SELECT user_name FROM directory_links WHERE tenant_id = ? AND object_id = ? "
                      "AND user_name <> ?", [tenant_id, object_id, user])
        if row:
            return str(row[0][0])
    if upn is not None:
        either_pending = "" if object_id is None else "AND object_id IS NULL "
        row = tx.rows("SELECT user_name FROM directory_links WHERE tenant_id = ? AND lower(upn) = lower(?) "
                      f"AND user_name <> ? {either_pending}ORDER BY user_name", [tenant_id, upn, user])
        if row:
            return str(row[0][0])
    return None


def _link_row(tx: Tx, user: str) -> dict[str, str | None] | None:
    row = tx.rows("SELECT tenant_id, object_id, upn, display_name FROM directory_links WHERE user_name = ?", [user])
    if not row:
        return None
    return dict(zip(("tenant_id", "object_id", "upn", "display_name"), row[0], strict=True))


class DirectoryLinks:
    """The administrators' links between CRM users and directory accounts (needs ``system.admin``)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def link(self, user: str, tenant_id: str, object_id: str | None, upn: str | None = None,
             display_name: str | None = None) -> None:
        """Link ``user`` to the account ``tenant_id`` + ``object_id`` (replacing the user's link to another).

        ``object_id`` None makes a pending link by ``upn``, completed at that account's first verified sign-in.

        Raises:
            PermissionDenied: the session user lacks ``system.admin`` (nothing read or written).
            UnknownUser, InactiveUser: no such CRM user, or it is switched off.
            AccountAlreadyLinked: the account is another user's.
            ValidationError: a malformed id or UPN.
        """
        self.session.require("system.admin")
        tenant_id = _id(tenant_id, "tenant_id")
        object_id = None if object_id is None else _id(object_id, "object_id")
        upn = None if upn is None else _upn(upn)
        if object_id is None and upn is None:
            raise catalog_error(ValidationError, "error.msg.directory_bad_id", field="object_id")
        check_text(display_name, "display_name")
        new = {"tenant_id": tenant_id, "object_id": object_id, "upn": upn, "display_name": display_name}

        def run(tx: Tx) -> None:
            _active_user(tx, user)
            other = _holder(tx, tenant_id, object_id, upn, user)
            if other is not None:
                raise catalog_error(AccountAlreadyLinked, "error.msg.directory_account_linked",
                                    account=upn or object_id, other=other, user=user)
            old = _link_row(tx, user)
            if old == new:
                return  # the same link: nothing to write, nothing to audit
            if old is not None:
                tx.execute("UPDATE directory_links SET tenant_id = ?, object_id = ?, upn = ?, display_name = ?, "
                           "linked_at = ?, linked_by = ? WHERE user_name = ?",
                           [tenant_id, object_id, upn, display_name, now(), self.session.user.name, user])
                self.session.audit(tx, SCOPE, user, old, new)
                return
            tx.execute("INSERT INTO directory_links (user_name, tenant_id, object_id, upn, display_name, linked_at, "
                       "linked_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [user, tenant_id, object_id, upn, display_name, now(), self.session.user.name])
            self.session.audit(tx, SCOPE, user, old, new)

        self.session.store.write(run)

    def unlink(self, user: str) -> bool:
        """Remove ``user``'s link (their account signs in to nothing until linked again); False: none was there.

        Raises:
            PermissionDenied: the session user lacks ``system.admin`` (nothing written).
            UnknownUser: no such CRM user.
        """
        self.session.require("system.admin")

        def run(tx: Tx) -> bool:
            if not tx.rows("SELECT 1 FROM users WHERE name = ?", [user]):
                raise catalog_error(UnknownUser, "error.msg.directory_unknown_user", user=user)
            old = _link_row(tx, user)
            if old is None:
                return False
            tx.execute("DELETE FROM directory_links WHERE user_name = ?", [user])
            self.session.audit(tx, SCOPE, user, old, None)
            return True

        return self.session.store.write(run)

    def links(self) -> pd.DataFrame:
        """Every CRM user with their link, if any (for the settings screen): ``user_name``, ``active``,
        ``tenant_id``, ``object_id``, ``upn``, ``display_name`` (the directory's), ``pending``, ``linked_at``,
        ``linked_by``. Needs ``system.admin``."""
        self.session.require("system.admin")
        df = self.session.store.df(
            "SELECT u.name AS user_name, u.active, l.tenant_id, l.object_id, l.upn, l.display_name, "
            "l.linked_at, l.linked_by FROM users u LEFT JOIN directory_links l ON l.user_name = u.name "
            "ORDER BY u.name")
        df.insert(6, "pending", df["tenant_id"].notna() & df["object_id"].isna())
        return df


def user_for(store: Store, verified: VerifiedIdToken) -> str:
    """The CRM user of a verified sign-in, by its account (tenant id + object id).

    A pending link whose tenant and UPN match (case-insensitively) is completed with the object id now; a
    UPN or display name that changed is updated; both audited in the user's name.

    Raises:
        AccountNotLinked: no CRM user is linked to the account (an administrator must link it).
        SignInUserInactive: the linked CRM user is switched off (nothing written).
    """

    def run(tx: Tx) -> str:
        row = tx.rows("SELECT user_name, upn, display_name FROM directory_links WHERE tenant_id = ? "
                      "AND object_id = ?", [verified.tid, verified.oid])
        pending = False
        if not row and verified.upn:
            row = tx.rows("SELECT user_name, upn, display_name FROM directory_links WHERE tenant_id = ? "
                          "AND object_id IS NULL AND lower(upn) = lower(?) ORDER BY user_name",
                          [verified.tid, verified.upn])
            pending = bool(row)
        if not row:
            raise catalog_error(AccountNotLinked, "error.msg.directory_not_linked",
                                account=verified.upn or verified.oid)
        user, upn, name = row[0]
        active = tx.rows("SELECT active FROM users WHERE name = ?", [user])
        if not active or not active[0][0]:
            raise catalog_error(SignInUserInactive, "error.msg.directory_user_inactive",
                                user=user, account=verified.upn or verified.oid)
        new_upn = verified.upn or upn
        new_name = verified.name or name
        if pending or (new_upn, new_name) != (upn, name):
            tx.execute("UPDATE directory_links SET object_id = ?, upn = ?, display_name = ? WHERE user_name = ?",
                       [verified.oid, new_upn, new_name, user])
            old = {"object_id": None} if pending else {}
            write_audit(tx, user, SCOPE, user, {**old, "upn": upn, "display_name": name},
                        {**({"object_id": verified.oid} if pending else {}), "upn": new_upn, "display_name": new_name})
        return str(user)

    return store.write(run)


def _admin_links(tx: Tx) -> list[tuple[str, str, str | None, str | None]]:
    """The links of users holding ``system.admin``: (user, tenant id, object id, UPN)."""
    return [tuple(r) for r in tx.rows(  # type: ignore[misc]
        "SELECT l.user_name, l.tenant_id, l.object_id, l.upn FROM directory_links l WHERE l.user_name IN ("
        "SELECT ur.user_name FROM user_roles ur JOIN role_rights rr ON rr.role = ur.role "
        "WHERE rr.\"right\" = 'system.admin') ORDER BY l.user_name")]


def bootstrap_admin(store: Store, upn: str, tenant_id: str) -> BootstrapResult:
    """The first administrator (``crmkit init --admin UPN``): the CRM user named after the UPN's local part
    (made if missing) with the role ``admin``, and a pending link by UPN in ``tenant_id``. Idempotent: run again
    with the same UPN it writes nothing.

    Raises:
        AdminAlreadyLinked: another administrator is linked already (they link everyone else; nothing written).
        AccountAlreadyLinked: the account, or this user, is linked otherwise.
        InactiveUser: the user exists and is switched off.
    """
    upn = _upn(upn)
    tenant_id = _id(tenant_id, "tenant_id")
    user = user_name_for_upn(upn)

    def run(tx: Tx) -> BootstrapResult:
        for other, tid, _oid, other_upn in _admin_links(tx):
            same = other == user and tid == tenant_id and (other_upn or "").lower() == upn.lower()
            if not same:
                raise catalog_error(AdminAlreadyLinked, "error.msg.directory_admin_linked",
                                    other=other, account=other_upn or "?", upn=upn)
        exists = tx.rows("SELECT active FROM users WHERE name = ?", [user])
        if exists and not exists[0][0]:
            raise catalog_error(InactiveUser, "error.msg.directory_inactive_user", user=user)
        holder = _holder(tx, tenant_id, None, upn, user)
        if holder is not None:
            raise catalog_error(AccountAlreadyLinked, "error.msg.directory_account_linked",
                                account=upn, other=holder, user=user)
        old = _link_row(tx, user)
        if old is not None and (old["tenant_id"] != tenant_id or (old["upn"] or "").lower() != upn.lower()):
            raise catalog_error(AccountAlreadyLinked, "error.msg.directory_user_linked",
                                user=user, account=old["upn"] or old["object_id"])
        created = not exists
        if created:
            tx.execute("INSERT INTO users (name, display_name, email) VALUES (?, ?, ?)", [user, upn, upn])
            tx.execute("INSERT INTO user_roles VALUES (?, 'admin')", [user])
            _audit(tx, "users", user, None, {"display_name": upn, "roles": ["admin"]})
        elif not tx.rows("SELECT 1 FROM user_roles WHERE user_name = ? AND role = 'admin'", [user]):
            roles = [r[0] for r in tx.rows("SELECT role FROM user_roles WHERE user_name = ? ORDER BY role", [user])]
            tx.execute("INSERT INTO user_roles VALUES (?, 'admin')", [user])
            _audit(tx, "users", f"{user}.roles", roles, sorted([*roles, "admin"]))
        if old is not None:
            return BootstrapResult(user, created, False)
        tx.execute("INSERT INTO directory_links (user_name, tenant_id, object_id, upn, display_name, linked_at, "
                   "linked_by) VALUES (?, ?, NULL, ?, NULL, ?, ?)", [user, tenant_id, upn, now(), BOOTSTRAP_BY])
        _audit(tx, SCOPE, user, None, {"tenant_id": tenant_id, "object_id": None, "upn": upn})
        return BootstrapResult(user, created, True)

    return store.write(run)


def _audit(tx: Tx, scope: str, key: str, old: object, new: object) -> None:
    """An audit row by ``crmkit init`` (no CRM session runs it: the database owner does)."""
    write_audit(tx, BOOTSTRAP_BY, scope, key, old, new)
