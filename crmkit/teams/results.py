"""A send's results, and what a message's final outcome writes in the delivery transaction.

:func:`results` reads one row per (record, recipient) of some batches, blocked addresses included.
:func:`record_outcome` is the delivery engine's side effect: the transfer-log rows of a message and, for a
sent message whose send records contacts, a contact of type TS on each address (through
:func:`crmkit.contacts.insert`, the one path contacts are inserted by).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from .. import contacts, privacy
from .activation import TEAMS_CONTACT_TYPE_CODE
from .file_send import file_id

if TYPE_CHECKING:
    from ..store import Store, Tx

__all__ = ["RESULT_COLUMNS", "message_link", "record_outcome", "results"]

RESULT_COLUMNS = ["record", "recipient", "recipient_name", "status", "message_id", "error"]


def results(store: Store, batch_ids: list[str]) -> pd.DataFrame:
    """One row per (record, recipient) of the given sends, blocked ones included."""
    marks = ", ".join("?" * len(batch_ids))
    frame = store.df(
        "SELECT o.address_ids, o.recipients, o.status, o.message_id, o.error FROM outbox o "
        f"WHERE o.batch_id IN ({marks}) ORDER BY o.batch_id, o.seq", batch_ids,
    )
    out = []
    for row in frame.itertuples(index=False):
        for a in json.loads(row.address_ids):
            for r in json.loads(row.recipients):
                out.append([a, r["id"], r["name"], row.status, row.message_id, row.error])
    blocked = store.df(
        "SELECT options FROM outbox_batches WHERE id IN (" + marks + ")", batch_ids)
    for opts in blocked["options"]:
        for a, reason in json.loads(opts).get("blocked", {}).items():
            out.append([int(a), None, None, "blocked", None, reason])
    frame = pd.DataFrame(out, columns=RESULT_COLUMNS)
    frame.attrs["batch_ids"] = list(batch_ids)
    return frame


def record_outcome(tx: Tx, row: Any, delivery: Any) -> None:
    """What a final outcome writes, in the delivery transaction: transfer log, and contacts if asked."""
    options = json.loads(row.options) if hasattr(row, "options") else {}
    recipients = json.loads(row.recipients)
    fields = json.loads(row.field_names)
    log = options.get("log", True)
    shared = file_id(row)  # a set sent as one file: its OneDrive item
    if log:
        privacy.log_transfers(tx, [
            privacy.TransferRecord(
                user_name=row.user_name, channel=row.channel, trigger=row.trigger, address_id=int(a),
                fields=fields.get(str(a), []), outcome=delivery.status, recipient_id=r["id"],
                recipient_name=r["name"], purpose=row.purpose, ms_account=row.account,
                message_id=delivery.message_id, message_key=row.id, detail=_detail(r, delivery.error),
                logged_at=delivery.at, file_id=shared,
            )
            for a in json.loads(row.address_ids) for r in recipients
        ], on_conflict="ignore")
    if delivery.status == "sent" and row.record_contact:
        names = ", ".join(r["name"] for r in recipients)
        link = message_link(delivery.chat_id, delivery.message_id)
        for a in json.loads(row.address_ids):
            _file_contact(tx, int(a), row, names, delivery, link)


def _detail(recipient: dict[str, Any], error: str | None) -> str | None:
    """The transfer log's detail: for a channel, the disclosure (its member and guest count when planned)."""
    if "members" not in recipient:
        return error
    told = f"channel members: {int(recipient['members'])}, guests: {int(recipient.get('guests') or 0)}"
    return f"{told}; {error}" if error else told


def _file_contact(tx: Tx, address_id: int, row: Any, names: str, delivery: Any, link: str) -> None:
    """One TS contact per address and send; later recipients of the same send are added to it."""
    # No records.write check here: this contact is the send's own record, covered by teams.send (checked
    # when the send was staged); see crmkit.contacts for why delivery must not be refused at this point.
    source = f"teams:{row.batch_id}"
    if contacts.add_recipients(tx, address_id, source, names):
        return
    contacts.insert(tx, address_id=address_id, type_code=TEAMS_CONTACT_TYPE_CODE, subject=row.contact_subject,
                    notes=row.contact_notes, user_name=row.user_name, source=source, happened_at=delivery.at,
                    recipients=names, message_id=delivery.message_id, link=link)


def message_link(chat_id: str | None, message_id: str | None) -> str:
    """Teams' deep link to a chat message (or a channel post: its chat id is the channel key)."""
    if chat_id and chat_id.startswith("channel:"):
        team, _, channel = chat_id[len("channel:"):].partition("/")
        ctx = quote(json.dumps({"contextType": "channel"}, separators=(",", ":")))
        return (f"https://teams.microsoft.com/l/message/{quote(channel, safe=':@')}/{message_id}"
                f"?groupId={quote(team)}&parentMessageId={message_id}&context={ctx}")
    context = quote(json.dumps({"contextType": "chat"}, separators=(",", ":")))
    return f"https://teams.microsoft.com/l/message/{quote(chat_id or '', safe=':@')}/{message_id}?context={context}"
