"""Contacts are inserted by one function, crmkit.contacts.insert: a contact logged by hand and a Teams
send filed as a contact both go through it (send.py used to write its own INSERT)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import crmkit
from crmkit import contacts

pytestmark = pytest.mark.core

ROOT = Path(crmkit.__file__).parent
# Allowed besides crmkit/contacts.py: the schema, and the demo generator's one bulk INSERT ... SELECT.
ELSEWHERE = {"migrations.py", "demo_data.py"}


def test_only_the_contacts_module_inserts_contacts() -> None:
    writers = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                     if re.search(r"INSERT INTO contacts\b", p.read_text(encoding="utf-8")))
    assert [w for w in writers if w not in ELSEWHERE] == ["contacts.py"]


def test_add_contact_goes_through_the_one_path(monkeypatch: pytest.MonkeyPatch) -> None:
    crm = crmkit.open(":memory:")
    a = crm.add_address(company="Müller GmbH")
    calls: list[dict[str, object]] = []
    real = contacts.insert
    monkeypatch.setattr(contacts, "insert", lambda tx, **kw: calls.append(kw) or real(tx, **kw))
    contact_id = crm.add_contact(a, "TEL", "Rückruf", notes="vormittags")
    assert [c["subject"] for c in calls] == ["Rückruf"] and calls[0]["user_name"] == crm.user.name
    row = crm.contacts(a).iloc[0]
    assert (int(row["id"]), row["type_code"], row["notes"], row["source"]) == (contact_id, "TEL", "vormittags",
                                                                               "manual")
