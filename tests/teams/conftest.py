"""Send-path tier: the session's sandbox as crmkit's tenant (``crm_tenant``, tests/conftest.py), a store that
other processes can open too (``db_location``: a DuckDB file or a PostgreSQL database), and a Teams account
signed in by device code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.sandbox import SandboxAdmin, sign_in

import crmkit
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams import activation


@pytest.fixture
def sender(crm_tenant: SandboxAdmin, db_location: str) -> Iterator[crmkit.CRM]:
    """The admin CRM user, integration on, signed in to Teams as Anna Schmidt, with a few addresses."""
    crm = crmkit.open(db_location)
    activation.enable(crm)
    crm.add_address(company="Müller & Söhne GmbH", street="Hauptstr. 1", postal_code="10115", city="Berlin",
                    country="DE", phone="+49 30 1234567", email="info@mueller.example")
    crm.add_address(company="<script>alert('x')</script> AG", city="Wien", country="AT")
    crm.add_address(last_name="Keller", first_name="Eva", salutation="Frau", city="Zürich", country="CH")
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    yield crm
    crm.teams.close()
