"""Reading the transfer log: filtered rows, the access and recipient reports, counts, export.

Changes when someone needs another view of the log (a filter, a report, an export format). All of
it needs ``privacy.read_log``; an export is audited.
"""

from __future__ import annotations

import csv
import inspect
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..addresses import check_id
from ..errors import ValidationError
from .log import LOG_COLUMNS, OUTCOMES
from .transfer_policy import check_channel

if TYPE_CHECKING:
    import os

    from ..session import Session

__all__ = [
    "access_report",
    "export_transfer_log",
    "recipient_report",
    "transfer_counts",
    "transfer_log",
]

_TEXT_COLUMNS: tuple[str, ...] = (
    "user_name", "ms_account", "channel", "trigger", "recipient_id", "recipient_name", "purpose", "outcome",
    "message_id", "message_key", "detail", "direction",
)
_EXPORT_TEXT_RISK = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula prefixes (CSV injection)


def _filters(
    address_id: int | None, recipient_id: str | None, recipient_name: str | None, channel: str | None,
    outcome: str | None, user: str | None, message_key: str | None, since: date | datetime | None,
    until: date | datetime | None, recipient: str | None = None,
) -> tuple[str, list[Any]]:
    parts: list[str] = []
    values: list[Any] = []
    if recipient:
        parts.append("(recipient_id = ? OR recipient_name ILIKE ?)")
        values.extend([recipient, f"%{recipient}%"])
    if address_id is not None:
        parts.append("address_id = ?")
        values.append(check_id(address_id))
    for column, value in (("recipient_id", recipient_id), ("user_name", user), ("message_key", message_key)):
        if value is not None:
            parts.append(f"{column} = ?")
            values.append(str(value))
    if recipient_name:
        parts.append("recipient_name ILIKE ?")
        values.append(f"%{recipient_name}%")
    if channel is not None:
        check_channel(channel)
        parts.append("channel = ?")
        values.append(channel)
    if outcome is not None:
        if outcome not in OUTCOMES:
            raise ValidationError(f"outcome must be one of {OUTCOMES}.")
        parts.append("outcome = ?")
        values.append(outcome)
    if since is not None:
        parts.append("logged_at >= ?")
        values.append(_as_datetime(since))
    if until is not None:
        # A date means "through the end of that day".
        end = _as_datetime(until) + (timedelta(days=1) if not isinstance(until, datetime) else timedelta(0))
        parts.append("logged_at < ?" if not isinstance(until, datetime) else "logged_at <= ?")
        values.append(end)
    return (" WHERE " + " AND ".join(parts) if parts else ""), values


def _as_datetime(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise ValidationError(f"A date filter takes a date or datetime, not {value!r}.")


def transfer_log(
    crm: Session, *, address_id: int | None = None, recipient_id: str | None = None,
    recipient_name: str | None = None, channel: str | None = None, outcome: str | None = None,
    user: str | None = None, message_key: str | None = None, since: date | datetime | None = None,
    until: date | datetime | None = None, recipient: str | None = None, limit: int | None = 10_000,
) -> pd.DataFrame:
    """Transfer-log rows, newest first (needs ``privacy.read_log``).

    Filters combine with AND; ``recipient_name`` matches a part, case-insensitively; ``recipient``
    matches the recipient id exactly or a part of the name (what a search box wants); ``until``
    as a date includes that whole day. ``limit=None`` returns every matching row.

    Raises:
        PermissionDenied: the user lacks ``privacy.read_log``.
        ValidationError: a bad filter value.
    """
    crm.require("privacy.read_log")
    where, values = _filters(address_id, recipient_id, recipient_name, channel, outcome, user, message_key,
                             since, until, recipient)
    page = ""
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit is a positive whole number, or None for all rows.")
        page = f" LIMIT {limit}"
    sql = f"SELECT {', '.join(LOG_COLUMNS)} FROM transfer_log{where} ORDER BY logged_at DESC, id DESC{page}"
    frame = crm.store.read(lambda tx: tx.df(sql, values))
    frame["fields"] = frame["fields"].map(lambda v: [] if v is None else [str(x) for x in v])
    # pandas reads a NULL in a text column as NaN, which prints as "nan" (a missing purpose showed so):
    # a missing text is None.
    for column in _TEXT_COLUMNS:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def access_report(crm: Session, address_id: int) -> pd.DataFrame:
    """Every transfer of one address, newest first: the Art. 15 GDPR access request (needs ``privacy.read_log``).

    Raises:
        PermissionDenied: the user lacks ``privacy.read_log``.
    """
    return transfer_log(crm, address_id=address_id, limit=None)


def recipient_report(crm: Session, recipient_id: str) -> pd.DataFrame:
    """Every transfer to one recipient, newest first: whom to notify under Art. 19 GDPR (needs ``privacy.read_log``).

    Raises:
        PermissionDenied: the user lacks ``privacy.read_log``.
    """
    return transfer_log(crm, recipient_id=recipient_id, limit=None)


def transfer_counts(
    crm: Session, *, bucket: str = "day", since: date | datetime | None = None, until: date | datetime | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Transfers per time bucket and channel (columns: bucket, channel, n), for the monitor's chart.

    Needs ``privacy.read_log``. ``bucket`` is ``day``, ``week`` or ``month``.
    """
    crm.require("privacy.read_log")
    if bucket not in ("day", "week", "month"):
        raise ValidationError("bucket is day, week or month.")
    known = {"address_id", "recipient_id", "recipient_name", "recipient", "channel", "outcome", "user"}
    if set(filters) - known:
        raise ValidationError(f"Unknown filters {sorted(set(filters) - known)}; known: {', '.join(sorted(known))}.")
    where, values = _filters(
        filters.get("address_id"), filters.get("recipient_id"), filters.get("recipient_name"),
        filters.get("channel"), filters.get("outcome"), filters.get("user"), None, since, until,
        filters.get("recipient"),
    )
    # A TIMESTAMP bucket (midnight), not a DATE: PostgreSQL's DATE comes back as Python dates, DuckDB's as datetime64.
    sql = (f"SELECT CAST(date_trunc('{bucket}', logged_at) AS TIMESTAMP) AS bucket, channel, count(*) AS n "
           f"FROM transfer_log{where} GROUP BY 1, 2 ORDER BY bucket, channel")
    return crm.store.read(lambda tx: tx.df(sql, values))


def export_transfer_log(
    crm: Session, path: str | os.PathLike[str], fmt: str | None = None, **filters: Any,
) -> int:
    """Write the (filtered) transfer log to CSV or Excel; return the number of rows. Audited.

    ``fmt`` is ``csv`` or ``xlsx`` (default: from the file suffix). ``filters`` are those of
    :func:`transfer_log`. ``fields`` is written as ``a;b;c``. In CSV, text starting with a formula
    character (``= + - @``) gets a leading ``'`` so a spreadsheet shows it instead of running it;
    Excel cells are written as text, so they need no such prefix.

    Raises:
        PermissionDenied: the user lacks ``privacy.read_log``.
        ValidationError: unknown format or filter.
    """
    target = Path(path)
    fmt = (fmt or target.suffix.lstrip(".")).lower()
    if fmt == "excel":
        fmt = "xlsx"
    if fmt not in ("csv", "xlsx"):
        raise ValidationError("Export format is csv or xlsx.")
    known = set(inspect.signature(transfer_log).parameters) - {"crm", "limit"}
    if set(filters) - known:
        raise ValidationError(f"Unknown filters {sorted(set(filters) - known)}; known: {', '.join(sorted(known))}.")
    frame = transfer_log(crm, limit=None, **filters)
    frame["fields"] = frame["fields"].map(lambda v: ";".join(v) if v is not None else "")
    if fmt == "csv":
        safe = frame.copy()
        for col in safe.columns:
            if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
                safe[col] = safe[col].map(_csv_safe)
        safe.to_csv(target, index=False, quoting=csv.QUOTE_NONNUMERIC, date_format="%Y-%m-%d %H:%M:%S")
    else:
        _write_xlsx(frame, target)
    crm.store.write(lambda tx: crm.audit(
        tx, "privacy", "transfer_log.export", None,
        {"rows": len(frame), "format": fmt, "path": str(target), "filters": {k: str(v) for k, v in filters.items()}},
    ))
    return len(frame)


def _csv_safe(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_EXPORT_TEXT_RISK):
        return "'" + value
    return value


def _write_xlsx(frame: pd.DataFrame, target: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    book = Workbook(write_only=True)
    sheet = book.create_sheet("transfer_log")
    sheet.append(list(frame.columns))
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                cells.append(None)
            elif isinstance(value, pd.Timestamp):
                cells.append(value.to_pydatetime())
            elif isinstance(value, str):
                cell = WriteOnlyCell(sheet, value=value)
                cell.data_type = "s"  # text, never a formula: "=HYPERLINK(…)" stays inert
                cells.append(cell)
            else:
                cells.append(value.item() if hasattr(value, "item") else value)
        sheet.append(cells)
    book.save(target)
