"""»Im CRM öffnen« in a real browser: a record's deep link (what a Teams card's Action.OpenUrl carries) opens
that record on the addresses dashboard for a CRM user, and a switched-off user gets the refusal and nothing of
the record. One Voila (the session's, over the demo-like CRM), two visits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import crmkit
from crmkit import record_links

from .conftest import DemoDb

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
RECORD = 17  # Beispiel 0017 GmbH, Vorname0017 Muster0017 (build_demo_db)


@pytest.fixture
def otto(demo_db: DemoDb) -> Iterator[str]:
    """A CRM user who was switched off (and so may read nothing), removed again afterwards."""
    crm = crmkit.open(demo_db.path)
    crm.add_user("otto", "Otto Aus", roles=["viewer"])
    crm.store.write(lambda tx: tx.execute("UPDATE users SET active = false WHERE name = 'otto'"))
    crm.store.close()
    yield "otto"
    crm = crmkit.open(demo_db.path)
    crm.store.write(lambda tx: (tx.execute("DELETE FROM user_roles WHERE user_name = 'otto'"),
                                tx.execute("DELETE FROM users WHERE name = 'otto'")))
    crm.store.close()


def test_the_deep_link_opens_the_record_for_a_user_and_refuses_a_switched_off_one(
        page: Any, voila_url: str, demo_db: DemoDb, otto: str) -> None:
    from playwright.sync_api import expect

    base = f"{voila_url}/voila/render/addresses.ipynb"
    link = record_links.record_url(base, RECORD)  # exactly what a card's »Im CRM öffnen« carries
    page.goto(link, wait_until="commit")
    shown = page.locator(".crmkit-linked-record")
    shown.wait_for(state="visible", timeout=WIDGETS_UP)
    expect(shown).to_contain_text(f"Datensatz {RECORD} (aus einem Link): Beispiel 0017 GmbH")
    expect(shown).to_contain_text("Muster0017")
    expect(page.locator(".crmkit-row").first).to_be_visible()  # beside the table

    page.goto(f"{link}&user={otto}", wait_until="commit")
    refused = page.locator(".crmkit-record-link-refused")
    refused.wait_for(state="visible", timeout=WIDGETS_UP)
    expect(refused).to_contain_text("Diesen Datensatz dürfen Sie nicht öffnen")
    expect(refused).to_contain_text("You may not open this record")
    text = page.locator("body").inner_text()
    assert "0017" not in text and "Muster" not in text and "Beispiel" not in text  # nothing of any record
    assert page.locator(".crmkit-row, .crmkit-linked-record").count() == 0
