"""Issue 12, item 9 in a real browser: the TS clash has a way out in the UI.

An admin switches Teams on, is refused because the contact type »Telefonschulung« holds the code TS,
opens the contact types from the refusal, gives that type another code, and switches Teams on.
Voila runs over ``dashboards/`` with the committed config and a database of this test's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit.voila_launch import dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box


@pytest.fixture(scope="module")
def clash_site(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("contact-types")
    db = base / "crm.duckdb"
    crm = crmkit.open(db)
    crm.add_contact_type("TS", "Telefonschulung")
    address = crm.add_address(company="Schulungs GmbH", city="Köln")
    crm.store.execute("INSERT INTO contacts (id, address_id, happened_at, type_code, subject, user_name, source) "
                      "VALUES (1, ?, now(), 'TS', 'Schulung', 'admin', 'test')", [address])
    crm.store.close()
    port = free_port()
    env = {"CRMKIT_DB": str(db), "CRMKIT_USER": "admin", "CRMKIT_HOME": str(base / "home")}
    with (output_dir / "voila-contact-types.log").open("wb") as log:
        proc = start_voila(port, env, log=log)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield {"port": port, "db": db}
        finally:
            stop_voila(proc)


def test_the_ts_refusal_leads_to_the_contact_types_and_teams_goes_on(page: Any, clash_site: dict[str, Any],
                                                                      output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(clash_site["port"], "settings.ipynb"), wait_until="commit")
    enable = page.locator(".crmkit-teams-enable input[type=checkbox]")
    enable.wait_for(state="visible", timeout=WIDGETS_UP)
    enable.check()
    refusal = page.locator(".crmkit-teams-code-taken")
    expect(refusal).to_contain_text("Telefonschulung", timeout=30_000)
    expect(enable).not_to_be_checked()
    way_out = page.locator(".crmkit-open-contact-types")
    expect(way_out).to_have_text("Kontaktarten öffnen")
    page.screenshot(path=str(output_dir / "contact-types-1-refused.png"), full_page=True)

    way_out.click()
    expect(page.get_by_role("tab", name="Kontaktarten")).to_have_attribute("aria-selected", "true", timeout=30_000)
    table = page.locator(".crmkit-contact-types")
    expect(table).to_be_visible(timeout=30_000)
    expect(table.locator("tr[data-code=TS]")).to_contain_text("Telefonschulung")
    picked = page.locator(".crmkit-contact-type-choice select option:checked")
    expect(picked).to_have_text("TS – Telefonschulung")  # on the type holding TS
    page.locator(".crmkit-contact-type-new-code input").fill("TSCH")
    page.locator(".crmkit-contact-type-change-code").click()
    expect(page.locator(".crmkit-contact-types-status")).to_contain_text("»TSCH«", timeout=30_000)
    expect(table.locator("tr[data-code=TSCH]")).to_contain_text("Telefonschulung")
    expect(table.locator("tr[data-code=TS]")).to_have_count(0)
    page.screenshot(path=str(output_dir / "contact-types-2-changed.png"), full_page=True)

    page.get_by_role("tab", name="Microsoft Teams").click()
    enable.check()
    expect(page.locator(".crmkit-teams-status")).to_contain_text("systemweit aktiviert", timeout=30_000)
    expect(refusal).to_have_count(0)
    expect(way_out).to_be_hidden()
    page.screenshot(path=str(output_dir / "contact-types-3-teams-on.png"), full_page=True)
    page.close()  # let the kernel go before this process opens the file

    crm = crmkit.open(clash_site["db"])
    try:
        assert crm.setting("teams.enabled") is True
        types = dict(crm.contact_types().itertuples(index=False))
        assert types["TS"] == "Teams" and types["TSCH"] == "Telefonschulung"
        assert crm.store.one("SELECT type_code FROM contacts WHERE id = 1") == "TSCH"
        assert crm.audit_log(scope="contact_types").iloc[1]["new_value"] == '"TSCH"'
    finally:
        crm.store.close()
