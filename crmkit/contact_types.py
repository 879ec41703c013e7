"""Contact types (»Kontaktarten«): list them, rename one, give one another short code.

The reference files every contact under a contact type with a short code; the Teams integration
needs the code ``TS`` for itself (see :mod:`crmkit.teams.activation`), so an administrator must be
able to move another type off it. Editing needs ``system.admin`` or ``teams.admin`` (the Teams
administrator is the one who meets the clash). Every change is audited in the transaction that
makes it; a refused change (right, bad input, code taken) writes nothing.

Codes are stored upper case, 1-:data:`MAX_CODE` characters without spaces; labels are
1-:data:`MAX_LABEL` characters on one line.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

from .errors import NotFound, PermissionDenied, ValidationError, catalog_error
from .i18n import t
from .text_rules import check_text

if TYPE_CHECKING:
    from .session import Session
    from .store import Tx

__all__ = [
    "EDIT_RIGHTS",
    "MAX_CODE",
    "MAX_LABEL",
    "change_code",
    "check_code",
    "check_label",
    "contact_types",
    "may_edit",
    "rename",
    "require_edit",
]

EDIT_RIGHTS: tuple[str, ...] = ("system.admin", "teams.admin")
MAX_CODE = 8
MAX_LABEL = 60
_CODE = re.compile(r"[^\s]+")


def may_edit(crm: Session) -> bool:
    """Whether the session user may rename contact types and change their codes."""
    return any(crm.user.can(right) for right in EDIT_RIGHTS)


def require_edit(crm: Session) -> None:
    """Raise :class:`PermissionDenied` unless the user holds one of :data:`EDIT_RIGHTS`."""
    if may_edit(crm):
        return
    params = {"user": crm.user.name, "rights": ", ".join(EDIT_RIGHTS)}
    raise PermissionDenied(t("error.msg.permission_any", "en", **params), right=EDIT_RIGHTS[0],
                           user=crm.user.name).localized("error.msg.permission_any", **params)


def check_code(code: object) -> str:
    """``code`` stripped and upper case, or :class:`ValidationError` (empty, too long, spaces)."""
    if not isinstance(code, str) or not code.strip():
        raise catalog_error(ValidationError, "error.msg.contact_type_code_empty")
    code = check_text(code, "code", label_key="contact_type.code").strip()
    if len(code) > MAX_CODE or not _CODE.fullmatch(code):
        raise catalog_error(ValidationError, "error.msg.contact_type_code_form", code=code, max=MAX_CODE)
    return code.upper()


def check_label(label: object) -> str:
    """``label`` stripped, or :class:`ValidationError` (empty, too long, control characters)."""
    if not isinstance(label, str) or not label.strip():
        raise catalog_error(ValidationError, "error.msg.contact_type_label_empty")
    label = check_text(label, "label", label_key="contact_type.label").strip()
    if len(label) > MAX_LABEL:
        raise catalog_error(ValidationError, "error.msg.contact_type_label_long", max=MAX_LABEL)
    return label


def contact_types(crm: Session) -> pd.DataFrame:
    """Every contact type with how many contacts it files: columns code, label, contacts (any user may read)."""
    return crm.store.df(
        "SELECT t.code, t.label, count(c.id) AS contacts FROM contact_types t "
        "LEFT JOIN contacts c ON c.type_code = t.code GROUP BY t.code, t.label ORDER BY t.code"
    )


def _label_of(tx: Tx, code: str) -> str:
    label = tx.one("SELECT label FROM contact_types WHERE code = ?", [code])
    if label is None:
        raise catalog_error(NotFound, "error.msg.contact_type_missing", code=code)
    return str(label)


def rename(crm: Session, code: str, label: str) -> bool:
    """Give contact type ``code`` the label ``label``; True when it changed.

    Raises:
        PermissionDenied: the user holds neither ``system.admin`` nor ``teams.admin``.
        ValidationError: the label is empty, too long or holds control characters.
        NotFound: there is no contact type ``code``.
    """
    require_edit(crm)
    key = str(code).strip().upper() if isinstance(code, str) else code
    label = check_label(label)

    def run(tx: Tx) -> bool:
        old = _label_of(tx, str(key))
        if old == label:
            return False
        tx.execute("UPDATE contact_types SET label = ? WHERE code = ?", [label, key])
        crm.audit(tx, "contact_types", f"{key}.label", old, label)
        return True

    return crm.store.write(run)


def change_code(crm: Session, code: str, new_code: str) -> bool:
    """Give contact type ``code`` the short code ``new_code``; its contacts follow. True when it changed.

    Raises:
        PermissionDenied: the user holds neither ``system.admin`` nor ``teams.admin``.
        ValidationError: ``new_code`` is empty, longer than :data:`MAX_CODE`, holds spaces, or is
            taken by another contact type.
        NotFound: there is no contact type ``code``.
    """
    require_edit(crm)
    old_code = str(code).strip().upper() if isinstance(code, str) else str(code)
    new_code = check_code(new_code)

    def run(tx: Tx) -> bool:
        label = _label_of(tx, old_code)
        if new_code == old_code:
            return False
        other = tx.one("SELECT label FROM contact_types WHERE code = ?", [new_code])
        if other is not None:
            raise catalog_error(ValidationError, "error.msg.contact_type_code_taken", code=new_code, label=other)
        created = tx.one("SELECT created_at FROM contact_types WHERE code = ?", [old_code])
        # DuckDB cannot update a primary key in place: re-insert under the new code.
        tx.execute("DELETE FROM contact_types WHERE code = ?", [old_code])
        tx.execute("INSERT INTO contact_types (code, label, created_at) VALUES (?, ?, ?)", [new_code, label, created])
        tx.execute("UPDATE contacts SET type_code = ? WHERE type_code = ?", [new_code, old_code])
        crm.audit(tx, "contact_types", old_code, old_code, new_code)
        return True

    return crm.store.write(run)
