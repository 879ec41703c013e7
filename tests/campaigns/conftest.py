"""Campaign tier: a real sandbox subprocess, a database (a DuckDB file or a PostgreSQL database, see
``db_location``), and a campaign set up up to its reaction."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.sandbox import ROOT, SandboxAdmin, colleagues

import crmkit
from crmkit.auth import Microsoft365
from crmkit.campaigns import Campaigns
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from crmkit.teams import activation

EVIL = "<script>alert('x')</script> AG"


@dataclass
class Setup:
    db: str  # where the CRM lives (db_location): what a worker process or a second session opens
    crm: crmkit.CRM
    camp: Campaigns
    activity: int
    reaction: int
    people: list[str]

    def set_campaign_account(self, password: str = SANDBOX_PASSWORD) -> None:
        m365 = Microsoft365(self.crm)
        try:
            m365.campaign.set_password(SANDBOX_DEFAULT_UPN, password)
        finally:
            m365.close()

    def action(self, **options: object) -> int:
        return self.camp.add_teams_action(self.reaction, "Vertrieb informieren", recipients=self.people[:1],
                                          **({"message": "Bitte {company} anrufen."} | options))


@pytest.fixture
def setup(fast_crm_tenant: SandboxAdmin, db_location: str) -> Iterator[Setup]:
    """Integration on, three participant addresses, a campaign → activity → reaction; no account yet."""
    crm = crmkit.open(db_location)
    activation.enable(crm)
    crm.add_address(company="Müller & Söhne GmbH", city="Berlin", email="info@mueller.example")
    crm.add_address(company=EVIL, city="Wien")
    crm.add_address(last_name="Keller", first_name="Eva", salutation="Frau", city="Zürich")
    camp = Campaigns(crm)
    cid = camp.add_campaign("Frühjahr 2026")
    aid = camp.add_activity(cid, "Mailing März")
    camp.add_participants(aid, [1, 2, 3])
    rid = camp.add_reaction(aid, "Interesse")
    yield Setup(db_location, crm, camp, aid, rid, colleagues(fast_crm_tenant, 3))
    camp.close()


def start_worker(db: str, log: Path, *args: str) -> subprocess.Popen[str]:
    """``crmkit worker`` as its own process, with this test's sandbox and CRMKIT_HOME."""
    with log.open("a") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "crmkit.cli", "--db", db, "worker", *args], cwd=ROOT, text=True,
            stdout=subprocess.PIPE, stderr=err, env=dict(os.environ),
        )
