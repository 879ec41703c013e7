"""Browser tier: Debian's Chromium driven by Playwright against the committed Voila config.

One Voila server per session; the browser and a fresh page per test come from tests/conftest.py. A closed page's
kernel is shut down (crmkit.voila_app; stock Voila 0.5 kept it, voila#1458); SIGTERM at the end ends the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

import crmkit
from crmkit.crm import ADDRESS_COLUMNS, rebuild_search_index
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
