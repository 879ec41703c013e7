"""Browser tier: Debian's Chromium driven by Playwright against the committed Voila config.

One Voila server per session; the browser and a fresh page per test come from tests/conftest.py. A closed page's
kernel is shut down (crmkit.voila_app; stock Voila 0.5 kept it, voila#1458); SIGTERM at the end ends the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support.sandbox import SandboxAdmin, SandboxProc, colleagues, sign_in_then_forget

import crmkit
from crmkit.addresses import ADDRESS_COLUMNS, rebuild_search_index
from crmkit.crm import CRM
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.voila_launch import free_port, server_url, start_voila, stop_voila, wait_until_up

CITY_WEIGHTS = {"Berlin": 7, "Hamburg": 5, "München": 4, "Köln": 3, "Frankfurt am Main": 3, "Leipzig": 2,
                "Dresden": 1}
EVIL = "<script>alert(1)</script>"


@dataclass(frozen=True)
class DemoDb:
    path: Path
    total: int
    city_counts: dict[str, int]


def build_demo_db(path: Path, n: int = 1000) -> DemoDb:
    """``n`` demo-like addresses in one INSERT … SELECT (a second or so, not n round trips)."""
    cities = [c for c, w in CITY_WEIGHTS.items() for _ in range(w)]
    now = datetime(2026, 1, 1, 9, 0)
    rows = []
    for i in range(1, n + 1):
        person = i % 3 != 0
        rows.append({
            "id": i, "parent_id": None, "kind": "person" if person else "company",
            "company": EVIL if i == n else f"Beispiel {i:04d} GmbH",
            "salutation": ("Frau" if i % 2 else "Herr") if person else None, "title": None,
            "first_name": f"Vorname{i:04d}" if person else None, "last_name": f"Muster{i:04d}" if person else None,
            "department": None, "street": f"Hauptstraße {i % 200 + 1}", "postal_code": f"{10000 + i:05d}",
            "city": cities[i % len(cities)], "country": "AT" if i % 25 == 0 else "DE",
            "phone": f"+49 30 {1000000 + i}", "email": f"kontakt{i:04d}@example.test", "owner": "admin",
            "created_by": "admin", "created_at": now, "modified_by": "admin", "modified_at": now,
        })
    frame = pd.DataFrame(rows, columns=list(ADDRESS_COLUMNS))
    crm = crmkit.open(path)
    names = ", ".join(ADDRESS_COLUMNS)

    def load(tx: crmkit.store.Tx) -> None:
        tx.register("demo_frame", frame)
        tx.execute(f"INSERT INTO addresses ({names}) SELECT {names} FROM demo_frame")
        tx.unregister("demo_frame")
        rebuild_search_index(tx)  # a bulk load indexes the search words once, as demo_data does

    crm.store.write(load)
    counts = {c: crm.count_addresses(city=c) for c in CITY_WEIGHTS}
    total = crm.count_addresses()
    crm.store.close()
    return DemoDb(path=path, total=total, city_counts=counts)


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> DemoDb:
    return build_demo_db(tmp_path_factory.mktemp("voila") / "crm.duckdb")


@pytest.fixture(scope="session")
def voila_url(demo_db: DemoDb, output_dir: Path) -> Iterator[str]:
    """Voila over ``dashboards/`` with the committed voila.json, on a free loopback port."""
    port = free_port()
    with (output_dir / "voila.log").open("wb") as log:
        proc = start_voila(port, {"CRMKIT_DB": str(demo_db.path), "CRMKIT_USER": "admin"}, log=log)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield server_url(port).rstrip("/")
        finally:
            stop_voila(proc)


@dataclass(frozen=True)
class SendSetup:
    voila_port: int
    sandbox: SandboxAdmin
    db: Path
    recipients: list[dict[str, Any]]


@contextmanager
def voila_with_anna_signed_in(base: Path, log_path: Path, seed: Callable[[crmkit.CRM], None]) -> Iterator[SendSetup]:
    """A sandbox tenant, a CRM file ``seed`` fills (as admin), sales user Anna signed in to Teams through
    the sandbox's real device-code page with the ``CRMKIT_HOME`` Voila's kernels use, and Voila over it;
    two directory colleagues to send to."""
    sandbox_proc = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"])
    home, db = base / "home", base / "crm.duckdb"
    env = {"CRMKIT_DB": str(db), "CRMKIT_SANDBOX_URL": sandbox_proc.url, "CRMKIT_HOME": str(home),
           "CRMKIT_USER": "admin"}
    admin = SandboxAdmin(sandbox_proc.url)
    proc = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            crm = crmkit.open(db)
            seed(crm)
            crm.add_user("anna", "Anna Schmidt", roles=["sales"])
            # the sandbox's device-code page, as a browser posts it; closes anna's session and the shared store
            sign_in_then_forget(CRM(crm.store, "anna"), SANDBOX_DEFAULT_UPN)
        users = {u["userPrincipalName"]: u for u in admin.get("users")["value"]}
        recipients = [users[upn] for upn in colleagues(admin, 2)]
        port = free_port()
        with log_path.open("wb") as log:
            proc = start_voila(port, env, log=log)
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield SendSetup(port, admin, db, recipients)
    finally:
        if proc is not None:
            stop_voila(proc)
        admin.close()
        sandbox_proc.stop()
