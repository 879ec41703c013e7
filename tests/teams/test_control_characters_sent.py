"""A stored address with control and bidi characters (old data, written with raw SQL) sent through the
sandbox: what Teams receives (card JSON, HTML table) and what its Teams view shows are inert."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from support.sandbox import SandboxAdmin, colleagues

import crmkit

pytestmark = pytest.mark.sandbox

UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_stored_controls_arrive_inert_in_card_table_and_teams_view(
        sender: crmkit.CRM, crm_tenant: SandboxAdmin, backend: str) -> None:
    # PostgreSQL's text cannot hold NUL at all (the server refuses it), so no old row there has one.
    controls = "\x07ctrl" if backend == "postgresql" else "\x00\x07ctrl"
    sender.store.write(lambda tx: tx.execute(
        "INSERT INTO addresses (id, kind, company, first_name, last_name, city, created_by, created_at, modified_by, "
        "modified_at) VALUES (99, 'person', ?, ?, ?, ?, 'admin', now(), 'admin', now())",
        ["Evil\u202eAG gpj.exe", controls, "Keller\x1b[31m\u2067x", "Ber\x85lin"]))
    to = colleagues(crm_tenant, 1)
    for record_format in ("card", "table"):
        result = sender.teams.send(99, to=to, subject=f"Alt {record_format}", record_format=record_format)
        assert result["status"].tolist() == ["sent"], result
    delivered = crm_tenant.get("messages")["value"]
    assert len(delivered) == 2
    for m in delivered:
        raw = m["subject"] + m["body"]["content"] + "".join(a["content"] or "" for a in m.get("attachments") or [])
        decoded = raw + "".join(json.dumps(json.loads(a["content"]), ensure_ascii=False)
                                for a in m.get("attachments") or [])
        assert not UNSAFE.search(decoded), (m["subject"], [f"U+{ord(c):04X}" for c in UNSAFE.findall(decoded)])
        assert "EvilAG gpj.exe" in decoded and "ctrl" in decoded and "Berlin" in decoded
    page = httpx.get(f"{crm_tenant.url}/teams", params={"refresh": "0"})
    assert page.status_code == 200 and "EvilAG gpj.exe" in page.text
    assert not UNSAFE.search(page.text)
