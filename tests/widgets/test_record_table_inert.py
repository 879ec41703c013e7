"""The record table shows a stored address's control and bidi characters inert (old data, raw SQL)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import crmkit
from crmkit.widgets import RecordTable

pytestmark = pytest.mark.widgets

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_stored_controls_and_bidi_show_inert_in_the_record_table(tmp_path: Path) -> None:
    crm = crmkit.open(tmp_path / "crm.duckdb")
    crm.store.write(lambda tx: tx.execute(
        "INSERT INTO addresses (id, kind, company, first_name, last_name, city, created_by, created_at, modified_by, "
        "modified_at) VALUES (1, 'person', ?, ?, ?, ?, 'admin', now(), 'admin', now())",
        ["Evil\u202eAG gpj.exe", "\x00\x07ctrl", "Keller\x1b[31m", "Ber\x85lin\u2066"]))
    table = RecordTable(crm)
    html = "".join(table.shown_rows())
    assert "EvilAG gpj.exe" in html and "ctrl" in html and "Berlin" in html
    assert not UNSAFE.search(html), [f"U+{ord(c):04X}" for c in UNSAFE.findall(html)]
