"""Writing the transfer log: one row per address × recipient, append-only, in the sender's transaction.

Changes when what a transfer records changes (a column, the uniqueness rule, the bulk path). The
sender writes one :class:`TransferRecord` per address × recipient with :func:`log_transfers`, inside
its own transaction (``tx``) together with its delivery state, so the log matches what was
delivered. ``message_key`` + address + recipient is unique, so a resumed send cannot log a
delivery twice. Nothing here changes or deletes a row (only :mod:`crmkit.privacy.retention` does).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..addresses import check_id
from ..errors import ValidationError
from ._common import now as _now
from .transfer_policy import check_channel

if TYPE_CHECKING:
    from ..session import Session
    from ..store import Tx

__all__ = [
    "BULK_ROWS",
    "LOG_COLUMNS",
    "OUTCOMES",
    "TRIGGERS",
    "DuplicateTransfer",
    "TransferRecord",
    "log_transfers",
    "new_record",
]

TRIGGERS: tuple[str, ...] = ("manual", "campaign")
OUTCOMES: tuple[str, ...] = ("sent", "failed", "blocked")
LOG_COLUMNS: tuple[str, ...] = (
    "id", "logged_at", "user_name", "ms_account", "channel", "trigger", "address_id", "fields",
    "recipient_id", "recipient_name", "purpose", "outcome", "message_id", "message_key", "detail", "file_id",
    "direction",
)
# out: address data leaving the CRM (a send, an export); in: data coming in about an address (a reply in Teams
# filed on it, crmkit.teams.replies: the recipient columns name its author, outcome sent = it arrived).
DIRECTIONS: tuple[str, ...] = ("out", "in")
BULK_ROWS = 16  # above this many rows, log_transfers inserts from one registered DataFrame
_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


class DuplicateTransfer(ValidationError):
    """A transfer-log row with this message key, address and recipient exists already."""


@dataclass(frozen=True)
class TransferRecord:
    """One transfer-log row: one address sent (or not) to one recipient. The table: see :mod:`crmkit.privacy`."""

    user_name: str
    channel: str
    address_id: int
    fields: Sequence[str]
    outcome: str
    trigger: str = "manual"
    recipient_id: str | None = None
    recipient_name: str | None = None
    purpose: str | None = None
    ms_account: str | None = None
    message_id: str | None = None
    message_key: str | None = None
    detail: str | None = None
    logged_at: datetime | None = None  # None: now
    direction: str = "out"  # DIRECTIONS
    file_id: str | None = None  # a set sent as one file: the OneDrive item id (migration 15)


_RECORD_NAMES = tuple(f.name for f in dataclass_fields(TransferRecord))


def new_record(crm: Session, **values: Any) -> TransferRecord:
    """A :class:`TransferRecord` with ``user_name`` taken from the session."""
    return TransferRecord(user_name=crm.user.name, **values)


def _clean_record(row: TransferRecord | Mapping[str, Any], now: datetime) -> dict[str, Any]:
    data = asdict(row) if isinstance(row, TransferRecord) else dict(row)
    unknown = set(data) - set(_RECORD_NAMES)
    if unknown:
        raise ValidationError(f"Unknown transfer-log columns {sorted(unknown)}; known: {', '.join(_RECORD_NAMES)}.")
    defaults = {f.name: f.default for f in dataclass_fields(TransferRecord) if f.default is not f.default_factory}
    out = {name: data.get(name, defaults.get(name)) for name in _RECORD_NAMES}
    for required in ("user_name", "channel", "address_id", "fields", "outcome"):
        if required not in data:
            raise ValidationError(f"A transfer-log row needs {required}.")
    check_channel(out["channel"])
    if out["trigger"] not in TRIGGERS:
        raise ValidationError(f"trigger must be one of {TRIGGERS}, not {out['trigger']!r}.")
    if out["outcome"] not in OUTCOMES:
        raise ValidationError(f"outcome must be one of {OUTCOMES}, not {out['outcome']!r}.")
    if out["direction"] not in DIRECTIONS:
        raise ValidationError(f"direction must be one of {DIRECTIONS}, not {out['direction']!r}.")
    if not isinstance(out["user_name"], str) or not out["user_name"]:
        raise ValidationError("A transfer-log row needs the CRM user name.")
    out["address_id"] = check_id(out["address_id"])
    names = out["fields"]
    if isinstance(names, str) or not all(isinstance(n, str) and _FIELD_NAME.match(n) for n in names):
        raise ValidationError(f"fields must be a list of field names, not {names!r}.")
    out["fields"] = list(names)
    for key in ("recipient_id", "recipient_name", "purpose", "ms_account", "message_id", "message_key", "detail",
                "file_id"):
        if out[key] is not None and not isinstance(out[key], str):
            raise ValidationError(f"{key} must be text, not {type(out[key]).__name__}.")
    if out["logged_at"] is None:
        out["logged_at"] = now
    elif not isinstance(out["logged_at"], datetime):
        raise ValidationError("logged_at must be a datetime.")
    return out


_INSERT_COLUMNS = (*(c for c in LOG_COLUMNS if c != "id"), "dedupe_key")
# PostgreSQL only: senders run side by side there, and a concurrent sender's rows are outside this
# transaction's snapshot, so the check below cannot see them. Its unique index can (POSTGRES_ONLY[12]):
# such a conflict makes the INSERT fail to serialize at REPEATABLE READ, Store.write retries, and the
# retry's check sees the row. A visible duplicate never reaches the INSERT, so nothing is dropped
# silently; DO NOTHING needs no right but INSERT (a sender's role may only append). DuckDB has one
# writer at a time and no such index: the check suffices there.
_PG_RACE_GUARD = " ON CONFLICT (message_key, address_id, recipient_id) WHERE message_key IS NOT NULL DO NOTHING"
_names = itertools.count()
_DEDUPE_CHUNK = 500


def _dedupe_key(message_key: str | None, address_id: int, recipient_id: str | None) -> int | None:
    """A stable signed 64-bit hash of (message_key, address_id, recipient_id); None without a key.

    Our own hash (not DuckDB's) so stored keys stay valid across DuckDB upgrades. It only finds
    candidates through its index; duplicates are decided on the exact triple.
    """
    if message_key is None:
        return None
    raw = "\x1f".join((message_key, str(address_id), recipient_id or "")).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def _existing_triples(tx: Tx, keys: list[int]) -> set[tuple[str, int, str | None]]:
    found: set[tuple[str, int, str | None]] = set()
    for i in range(0, len(keys), _DEDUPE_CHUNK):
        chunk = keys[i:i + _DEDUPE_CHUNK]
        # Literal integers (we computed them): an IN list of constants lets DuckDB use the index.
        listed = ", ".join(str(int(k)) for k in chunk)
        found.update(
            (str(k), int(a), r) for k, a, r in tx.rows(
                f"SELECT message_key, address_id, recipient_id FROM transfer_log WHERE dedupe_key IN ({listed})"
            )
        )
    return found


def log_transfers(
    tx: Tx, rows: Iterable[TransferRecord | Mapping[str, Any]], *, on_conflict: str = "error",
) -> int:
    """Append transfer-log rows inside the caller's transaction; return how many were written.

    Call it from the function you pass to ``store.write`` so the log commits (or rolls back) with
    your delivery state. Many rows go in as one INSERT from a registered DataFrame.

    (message_key, address_id, recipient_id) is unique among rows that have a message key: the
    check runs here, on the exact values, found through the ``dedupe_key`` index. Rows without a
    message key (file exports) are never duplicates of each other.

    Args:
        tx: the open transaction.
        rows: :class:`TransferRecord` objects or mappings with the same keys.
        on_conflict: ``error`` raises :class:`DuplicateTransfer` when a row's (message_key,
            address_id, recipient_id) was logged already or repeats within ``rows`` - and writes
            nothing; ``ignore`` skips such rows (for resumed sends).

    Raises:
        ValidationError: a row is malformed (nothing is written).
        DuplicateTransfer: see ``on_conflict``.
    """
    if on_conflict not in ("error", "ignore"):
        raise ValueError("on_conflict is 'error' or 'ignore'")
    now = _now()
    clean = [_clean_record(r, now) for r in rows]
    keyed = [r for r in clean if r["message_key"] is not None]
    for row in clean:
        row["dedupe_key"] = _dedupe_key(row["message_key"], row["address_id"], row["recipient_id"])
    if keyed:
        seen = _existing_triples(tx, sorted({r["dedupe_key"] for r in keyed}))
        kept = []
        for row in clean:
            triple = (row["message_key"], row["address_id"], row["recipient_id"])
            if row["message_key"] is not None and triple in seen:
                if on_conflict == "error":
                    raise DuplicateTransfer(
                        f"The transfer of address {row['address_id']} to {row['recipient_id']!r} under message key "
                        f"{row['message_key']!r} is logged already; use on_conflict='ignore' when resuming a send."
                    )
                continue
            if row["message_key"] is not None:
                seen.add(triple)
            kept.append(row)
        clean = kept
    if not clean:
        return 0
    if len(clean) <= BULK_ROWS:
        cols = ", ".join(_INSERT_COLUMNS)
        marks = ", ".join("?" * len(_INSERT_COLUMNS))
        guard = _PG_RACE_GUARD if tx.dialect == "postgresql" else ""
        for row in clean:
            tx.execute(f"INSERT INTO transfer_log ({cols}) VALUES ({marks}){guard}",
                       [row[c] for c in _INSERT_COLUMNS])
        return len(clean)
    return _bulk_insert(tx, clean)


def _bulk_insert(tx: Tx, clean: list[dict[str, Any]]) -> int:
    frame = pd.DataFrame(clean, columns=list(_INSERT_COLUMNS))
    # Lists in an object column are sniffed unreliably; ship them as text and split in SQL.
    frame["fields"] = frame["fields"].map(",".join)
    frame["address_id"] = frame["address_id"].astype("int64")
    frame["dedupe_key"] = frame["dedupe_key"].astype("Int64")
    frame["logged_at"] = pd.to_datetime(frame["logged_at"])
    for col in ("user_name", "ms_account", "channel", "trigger", "recipient_id", "recipient_name", "purpose",
                "outcome", "message_id", "message_key", "detail", "direction", "file_id"):
        frame[col] = frame[col].astype("string")
    name = f"_crmkit_transfer_rows_{next(_names)}"
    # DuckDB refuses to register while an earlier statement's result is unread (Tx.one reads one row).
    tx.execute("SELECT 1").fetchall()
    tx.register(name, frame)
    try:
        select = ", ".join(
            # SQL both databases read (DuckDB's []/string_split are not PostgreSQL's; string_to_array is both's).
            "CASE WHEN fields = '' THEN CAST(ARRAY[] AS VARCHAR[]) ELSE string_to_array(fields, ',') END"
            if c == "fields"
            else f"CAST({c} AS TIMESTAMP)" if c == "logged_at"
            else f"CAST({c} AS BIGINT)" if c in ("address_id", "dedupe_key")
            else f"CAST({c} AS VARCHAR)"
            for c in _INSERT_COLUMNS
        )
        result = tx.execute(
            f"INSERT INTO transfer_log ({', '.join(_INSERT_COLUMNS)}) SELECT {select} FROM {name}"
            + (_PG_RACE_GUARD if tx.dialect == "postgresql" else "")
        ).fetchall()
        return int(result[0][0])
    finally:
        tx.unregister(name)
