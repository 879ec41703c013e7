"""Sandbox tier for crmkit.auth: the session's sandbox subprocess as crmkit's tenant (``crm_tenant``, reset per
test, from tests/conftest.py).

The browser side of the device-code flow is driven with plain HTTP form posts (``form_browser``), exactly as a
browser submits the sandbox's sign-in page (same action, hidden fields, pressed button).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sandbox import SandboxAdmin

import crmkit
from crmkit.auth import Microsoft365


@pytest.fixture
def crm_file(tmp_path: Path) -> crmkit.CRM:
    """A file-backed CRM (so the DuckDB file can be inspected) with users of several roles."""
    crm = crmkit.open(tmp_path / "crm.duckdb")
    crm.add_user("sara", "Sara Sales", roles=["sales"])
    crm.add_user("carl", "Carl Campaigns", roles=["campaign_manager"])
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    return crm


@pytest.fixture
def m365(crm_tenant: SandboxAdmin, crm_file: crmkit.CRM) -> Iterator[Microsoft365]:
    m = Microsoft365(crm_file)
    yield m
    m.close()
