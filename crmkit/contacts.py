"""Writing contacts (»Kontakte«, logged interactions on an address): the one insert path.

``crm.add_contact`` (a contact logged by hand) and a Teams send filed as a contact (type TS, on
delivery, in the delivery transaction) both insert through :func:`insert`; the caller checks its
own input first (``crm.add_contact``: the address and contact type exist, the texts are clean).

The rights check: a contact logged by hand needs :data:`WRITE_RIGHT` (``records.write``), checked in
:func:`require_manual` - the one check site, which ``crm.add_contact`` calls before anything else.
:func:`insert` itself checks no right, on purpose: the TS contact of a Teams send is the send's own
record of what was delivered (like its transfer-log rows), covered by ``teams.send``, which the send
checks when it is staged. It is written later, on delivery, possibly by the outbox worker or a
campaign run in another process; refusing it there would leave a posted message without its record.
(Every built-in role with ``teams.send`` also holds ``records.write``.)

Imports nothing of crmkit's features.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session
    from .store import Tx

__all__ = ["WRITE_RIGHT", "add_recipients", "insert", "require_manual"]

# Adding and changing addresses and logging contacts by hand (»Adressen und Kontakte bearbeiten«).
WRITE_RIGHT = "records.write"


def require_manual(session: Session) -> None:
    """Refuse (PermissionDenied naming ``records.write``) unless the session user may log contacts by hand.

    Called before any input check or write, so a refused user learns nothing about the records and
    nothing is written.
    """
    session.require(WRITE_RIGHT)


def insert(
    tx: Tx, *, address_id: int, type_code: str, subject: str | None, notes: str | None, user_name: str,
    source: str, happened_at: datetime | None = None, recipients: str | None = None,
    message_id: str | None = None, link: str | None = None,
) -> int:
    """Insert one contact in the caller's transaction; returns its id (``happened_at`` None: now)."""
    new_id = int(tx.one("SELECT coalesce(max(id), 0) + 1 FROM contacts"))
    tx.execute(
        "INSERT INTO contacts (id, address_id, happened_at, type_code, subject, notes, user_name, source, "
        "recipients, message_id, link) VALUES (?, ?, coalesce(?, current_timestamp), ?, ?, ?, ?, ?, ?, ?, ?)",
        [new_id, address_id, happened_at, type_code, subject, notes, user_name, source, recipients, message_id,
         link],
    )
    return new_id


def add_recipients(tx: Tx, address_id: int, source: str, names: str) -> bool:
    """Add ``names`` (comma-separated) to the contact ``source`` filed on the address; False if there is none.

    One contact per address and send: later recipients of the same send join the first one's contact.
    """
    existing = tx.rows("SELECT id, recipients FROM contacts WHERE address_id = ? AND source = ?", [address_id, source])
    if not existing:
        return False
    contact_id, before = existing[0]
    merged = ", ".join(n for n in dict.fromkeys([*(before or "").split(", "), *names.split(", ")]) if n)
    tx.execute("UPDATE contacts SET recipients = ? WHERE id = ?", [merged, contact_id])
    return True
