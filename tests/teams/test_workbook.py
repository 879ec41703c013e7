"""crmkit/teams/workbook.py: records as the .xlsx workbook a large set is sent as, read back with openpyxl."""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path

import openpyxl
import pytest

import crmkit
from crmkit.teams.display_format import FieldFormat, default_format, load_format
from crmkit.teams.workbook import MIME_TYPE, workbook_bytes, workbook_name

pytestmark = pytest.mark.core

INJECTIONS = {
    "company": '=HYPERLINK("http://evil.example","klick")',
    "street": "-2+3",
    "city": "@SUM(A1:A9)",
    "email": "+cmd|' /C calc'!A0",
}


@pytest.fixture
def crm(tmp_path: Path) -> crmkit.CRM:
    crm = crmkit.open(str(tmp_path / "crm.duckdb"))
    crm.add_address(company="Müller & Söhne GmbH", street="Hauptstr. 1", postal_code="10115", city="Berlin",
                    country="DE", phone="+49 30 1234567", email="info@mueller.example")
    crm.add_address(last_name="Keller", first_name="Eva", salutation="Frau", city="Zürich", country="CH")
    crm.add_address(**INJECTIONS)
    return crm


def _read(data: bytes) -> list[list[object]]:
    ws = openpyxl.load_workbook(io.BytesIO(data)).worksheets[0]
    return [[c.value for c in row] for row in ws.iter_rows()]


@pytest.mark.parametrize("lang", ["de", "en"])
def test_workbook_holds_exactly_the_displayed_fields(crm: crmkit.CRM, lang: str) -> None:
    fmt = load_format(crm)
    records = crm.addresses()
    rows = _read(workbook_bytes(records, fmt, lang))
    assert rows[0] == [f.label(lang) for f in fmt.fields]
    assert rows[0][0] == {"de": "Firma", "en": "Company"}[lang]
    expected = []
    for record in records.to_dict("records"):
        shown = {r.field: r.text for r in fmt.rows(record, lang)}
        expected.append([shown.get(f.field) for f in fmt.fields])
    assert rows[1:] == expected
    assert len(rows) == 1 + len(records) == 4
    sheet = openpyxl.load_workbook(io.BytesIO(workbook_bytes(records, fmt, lang))).worksheets[0]
    assert sheet.title == {"de": "Adressen", "en": "Addresses"}[lang]


def test_a_skipped_field_is_an_empty_cell_and_formats_apply(crm: crmkit.CRM) -> None:
    fmt = default_format().with_fields([FieldFormat.for_field("company", empty="skip"),
                                        FieldFormat.for_field("city", empty="dash")])
    records = crm.addresses()
    rows = _read(workbook_bytes(records, fmt, "de"))
    keller = next(r for r in rows if r[1] == "Zürich")
    assert keller[0] is None  # skipped for a record without company
    assert all(r[1] for r in rows)


def test_formula_like_values_stay_text(crm: crmkit.CRM) -> None:
    data = workbook_bytes(crm.addresses(), load_format(crm), "de")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        sheet_xml = z.read("xl/worksheets/sheet1.xml").decode()
        styles_xml = z.read("xl/styles.xml").decode()
    assert "<f>" not in sheet_xml and "<f " not in sheet_xml  # no formula anywhere
    assert 'quotePrefix="1"' in styles_xml
    ws = openpyxl.load_workbook(io.BytesIO(data)).worksheets[0]
    cells = {c.value: c for row in ws.iter_rows() for c in row if c.value is not None}
    for value in ("-2+3", "@SUM(A1:A9)", "+cmd|' /C calc'!A0"):
        assert value in cells, value
        assert cells[value].data_type == "s" and cells[value].quotePrefix
    company = next(v for v in cells if str(v).startswith("=HYPERLINK"))
    assert cells[company].data_type == "s" and cells[company].quotePrefix
    assert not cells["Müller & Söhne GmbH"].quotePrefix  # ordinary text keeps no prefix


def test_same_input_same_bytes(crm: crmkit.CRM) -> None:
    fmt, records = load_format(crm), crm.addresses()
    first = workbook_bytes(records, fmt, "en")
    assert workbook_bytes(records, fmt, "en") == first
    with zipfile.ZipFile(io.BytesIO(first)) as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        core = z.read("docProps/core.xml").decode()
    # created and modified are the given time, not the time of writing (openpyxl stamps modified on save)
    assert '<dcterms:modified xsi:type="dcterms:W3CDTF">2000-01-01T00:00:00Z<' in core
    assert '<dcterms:created xsi:type="dcterms:W3CDTF">2000-01-01T00:00:00Z<' in core
    when = workbook_bytes(records, fmt, "en", created=datetime(2026, 12, 2, 8, 5), author="Anna Schmidt")
    wb = openpyxl.load_workbook(io.BytesIO(when))
    assert wb.properties.creator == "Anna Schmidt" and wb.properties.created == datetime(2026, 12, 2, 8, 5)
    assert workbook_name("de", datetime(2026, 12, 2, 8, 5)) == "Adressen 2026-12-02 08-05.xlsx"
    assert MIME_TYPE.endswith("spreadsheetml.sheet")
