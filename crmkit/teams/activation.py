"""Switching the Microsoft Teams integration on and off, system-wide (needs ``teams.admin``).

Enabling also creates the contact type "Teams" with the short code "TS", under which sent
messages are filed as contacts. If another contact type holds "TS", enabling is refused with
:class:`~crmkit.errors.ContactTypeCodeTaken`: give that type another code first. The setting and
the contact type commit in one transaction, each audited; repeating a call changes nothing.

Sessions read the setting when they open (see :mod:`crmkit.teams.sessions`); a change reaches
other sessions when they reopen. :func:`require_enabled` is the sender's gate: switching off takes
effect at once, switching on only for sessions opened afterwards (as the reference's restart).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..errors import ContactTypeCodeTaken, IntegrationDisabled, catalog_error
from .sessions import (
    open_sessions_needing_reopen,
    register_session,
    reopen_notice,
    teams_enabled_at_open,
)

if TYPE_CHECKING:
    from ..session import Session
    from ..store import Tx

__all__ = [
    "TEAMS_CONTACT_TYPE_CODE",
    "TEAMS_CONTACT_TYPE_LABEL",
    "disable",
    "enable",
    "is_enabled",
    "open_sessions_needing_reopen",
    "register_session",
    "reopen_notice",
    "require_enabled",
    "set_enabled",
]

TEAMS_CONTACT_TYPE_CODE = "TS"
TEAMS_CONTACT_TYPE_LABEL = "Teams"
SETTING = "teams.enabled"


def is_enabled(crm: Session) -> bool:
    """Whether the integration is switched on system-wide right now."""
    return bool(crm.setting(SETTING))


def enable(crm: Session) -> bool:
    """Switch the integration on; create the contact type "Teams" (TS) if missing.

    Returns True when something changed, False when it was on already with its contact type.

    Raises:
        PermissionDenied: the user lacks ``teams.admin``; nothing is read or written.
        ContactTypeCodeTaken: another contact type uses "TS"; nothing is written. The error's
            ``code`` and ``taken_by`` attributes name the code and that contact type's label.
    """
    return set_enabled(crm, True)


def disable(crm: Session) -> bool:
    """Switch the integration off. The contact type TS stays (contacts filed under it keep it).

    Returns True when the setting changed.

    Raises:
        PermissionDenied: the user lacks ``teams.admin``.
    """
    return set_enabled(crm, False)


def set_enabled(crm: Session, enabled: bool) -> bool:
    """Switch the integration on or off (see :func:`enable`, :func:`disable`); True if anything changed.

    Raises:
        PermissionDenied, ContactTypeCodeTaken: as :func:`enable`.
        TypeError: ``enabled`` is not a bool.
    """
    crm.require("teams.admin")
    if not isinstance(enabled, bool):
        raise TypeError("enabled must be True or False")

    def run(tx: Tx) -> bool:
        raw = tx.one("SELECT value FROM system_settings WHERE key = ?", [SETTING])
        current = bool(json.loads(raw)) if raw is not None else False
        changed = False
        if enabled:
            changed = _ensure_contact_type(crm, tx)
        if current != enabled:
            crm.write_setting(tx, SETTING, enabled)  # audited, in this transaction
            changed = True
        return changed

    return crm.store.write(run)


def _ensure_contact_type(crm: Session, tx: Tx) -> bool:
    label = tx.one("SELECT label FROM contact_types WHERE code = ?", [TEAMS_CONTACT_TYPE_CODE])
    if label is None:
        tx.execute(
            "INSERT INTO contact_types (code, label) VALUES (?, ?)",
            [TEAMS_CONTACT_TYPE_CODE, TEAMS_CONTACT_TYPE_LABEL],
        )
        crm.audit(tx, "contact_types", TEAMS_CONTACT_TYPE_CODE, None, TEAMS_CONTACT_TYPE_LABEL)
        return True
    if str(label).strip().casefold() == TEAMS_CONTACT_TYPE_LABEL.casefold():
        return False  # created by an earlier activation (or by hand): accept it
    exc = ContactTypeCodeTaken(
        f"The Microsoft Teams integration was not enabled: the short code {TEAMS_CONTACT_TYPE_CODE!r} is "
        f"used by the contact type {label!r}. Give that contact type another code - in Python "
        f"crm.change_contact_type_code({TEAMS_CONTACT_TYPE_CODE!r}, 'NEW'), or in the settings under contact "
        "types - then enable the integration again. Nothing was changed."
    )
    exc.code = TEAMS_CONTACT_TYPE_CODE  # type: ignore[attr-defined]
    exc.taken_by = str(label)  # type: ignore[attr-defined]
    raise exc


def require_enabled(crm: Session) -> None:
    """The sender's gate: raise unless this session may use Teams now.

    Raises:
        IntegrationDisabled: the integration is off system-wide, or it was switched on after this
            session opened (reopen the session to use it, as the reference needs a restart).
    """
    if not is_enabled(crm):
        raise switched_off()
    if teams_enabled_at_open(crm) is False:
        raise catalog_error(IntegrationDisabled, "error.msg.teams_reopen")


def switched_off() -> IntegrationDisabled:
    """The error for "the integration is off", in the user's language in a dashboard."""
    return catalog_error(IntegrationDisabled, "error.msg.teams_off")
