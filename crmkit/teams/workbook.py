"""Records as one Excel workbook: the Teams display format's fields and labels, for sending a large set as a file.

One sheet, a header row of the format's labels in the sender's language, then one row per record with
exactly the texts a Teams message would show (:meth:`DisplayFormat.rows`: formats applied, empty fields
as the format says; a field the format skips for a record is an empty cell). Every value is written as
text, so nothing in a record becomes a formula in Excel: a value starting with ``=``, ``+``, ``-``, ``@``
(or a tab or carriage return, as spreadsheet injection lists them) is a text cell with Excel's quote
prefix, which keeps it text even when someone edits the cell.

openpyxl's write-only mode streams the rows (10,000 records in well under a second of writing, a few
hundred KB); the bytes are the same for the same records, format, language and ``created`` (fixed
document properties, zip entries dated 1980-01-01).

    data = workbook_bytes(crm.addresses(...), load_format(crm), "de")
    name = workbook_name("de", when)              # "Adressen 2026-12-02 08-05.xlsx"
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.xml.functions import tostring

from ..i18n import t
from .display_format import DisplayFormat

__all__ = ["FIXED_CREATED", "MIME_TYPE", "workbook_bytes", "workbook_name", "workbook_table"]

MIME_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FIXED_CREATED = datetime(2000, 1, 1)  # document properties unless the caller gives the send's time
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_MAX_WIDTH = 60


def _records(records: pd.DataFrame | Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    if isinstance(records, pd.DataFrame):
        # itertuples is far cheaper than iterrows; columns are addressed by name as the format needs them
        columns = list(records.columns)
        for row in records.itertuples(index=False, name=None):
            yield dict(zip(columns, row, strict=True))
    else:
        yield from records


def workbook_table(records: pd.DataFrame | Iterable[Mapping[str, Any]], fmt: DisplayFormat,
                   lang: str) -> Iterator[list[str | None]]:
    """The workbook's rows as plain values: the header (labels in ``lang``), then one list per record."""
    keys = [f.field for f in fmt.fields]
    yield [f.label(lang) for f in fmt.fields]
    for record in _records(records):
        texts = {r.field: r.text for r in fmt.rows(record, lang)}
        yield [texts.get(k) for k in keys]


def _cell(ws: Any, value: str | None, font: Font | None = None) -> Any:
    cell = WriteOnlyCell(ws, value=value)
    if value is not None:
        cell.data_type = "s"  # never a formula, a number or a date: the displayed text
        if value.startswith(_FORMULA_START):
            cell.quotePrefix = True
    if font is not None:
        cell.font = font
    return cell


def workbook_bytes(records: pd.DataFrame | Iterable[Mapping[str, Any]], fmt: DisplayFormat, lang: str, *,
                   created: datetime | None = None, author: str | None = None) -> bytes:
    """An .xlsx workbook of ``records`` (crmkit's address columns) as ``fmt`` displays them in ``lang``.

    Args:
        records: a DataFrame of addresses (``crm.addresses()``) or mappings with the same columns.
        fmt: the Teams display format (``load_format(crm)``).
        lang: ``"de"`` or ``"en"``: labels, sheet name, date and number formats.
        created: the document's created/modified time (UTC); default a fixed date, for equal bytes.
        author: the document's creator (e.g. the sender's name); default none.

    Returns:
        The workbook file's bytes.
    """
    wb = Workbook(write_only=True)
    stamp = created or FIXED_CREATED
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)  # document properties are UTC without a zone
    props = wb.properties
    props.created = props.modified = stamp
    props.creator = author or ""
    props.lastModifiedBy = author or ""
    props.title = t("workbook.title", lang)
    ws = wb.create_sheet(t("workbook.sheet", lang)[:31])  # Excel's sheet names take 31 characters
    rows = workbook_table(records, fmt, lang)
    header = next(rows)
    for i, label in enumerate(header):
        ws.column_dimensions[_column_letter(i)].width = min(_MAX_WIDTH, max(12, len(label or "") + 4))
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    ws.append([_cell(ws, v, bold) for v in header])
    for row in rows:
        ws.append([_cell(ws, v) for v in row])
    raw = io.BytesIO()
    wb.save(raw)  # sets the modified time to now: core.xml is written again below with ``stamp``
    props.modified = stamp
    return _stable_zip(raw.getvalue(), {"docProps/core.xml": tostring(props.to_tree())})


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _stable_zip(data: bytes, replace: Mapping[str, bytes]) -> bytes:
    """The same archive with ``replace``'s entries swapped in and every entry dated 1980-01-01 (zip entries
    carry the time of writing)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_DATE)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o600 << 16
            dst.writestr(entry, replace.get(info.filename) or src.read(info.filename))
    return out.getvalue()


def workbook_name(lang: str, when: datetime) -> str:
    """The file name for a workbook sent at ``when``: ``Adressen 2026-12-02 08-05.xlsx`` (no ``:``, which
    OneDrive refuses in names)."""
    return f"{t('workbook.file', lang)} {when.strftime('%Y-%m-%d %H-%M')}.xlsx"
