"""Writing contacts (»Kontakte«, logged interactions on an address): the one insert path.

``crm.add_contact`` (a contact logged by hand) and a Teams send filed as a contact (type TS, on
delivery, in the delivery transaction) both insert through :func:`insert`; the caller checks its
own input first (``crm.add_contact``: the address and contact type exist, the texts are clean).

Imports nothing of crmkit's features.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store import Tx

__all__ = ["add_recipients", "insert"]


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
