"""The compose dialog opens where the user is looking, and a row's own actions, in a real browser.

Voila serves the committed dashboards over 1,000 demo-like addresses with Teams switched on (no tenant
needed to open the dialog). Chromium's window is 1400×1000, the page fixture's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit.teams import activation
from crmkit.voila_launch import dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

from .conftest import build_demo_db

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
# Where an element is, and whether the window shows all of it (no scrolling of the page needed).
IN_VIEW_JS = """(el) => {
  const box = el.getBoundingClientRect();
  return {top: box.top, bottom: box.bottom, left: box.left, right: box.right, height: window.innerHeight,
          width: window.innerWidth, inView: box.top >= 0 && box.bottom <= window.innerHeight && box.height > 0
          && box.left >= 0 && box.right <= window.innerWidth, scrollY: window.scrollY,
          focused: document.activeElement === el};
}"""


@contextmanager
def dashboards_site(base: Path, log: Path, user: str) -> Iterator[int]:
    """Voila over the committed dashboards and a demo CRM with Teams on, contacts on address 2 and the demo
    users; the pages open as CRM user ``user``. Yields the port."""
    db = build_demo_db(base / "crm.duckdb").path
    crm = crmkit.open(db)
    activation.enable(crm)
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    crm.add_contact(2, "TS", "Angebot per Teams besprochen")
    # Values of different lengths on the first page, as real data has (the demo rows are all alike).
    crm.store.write(lambda tx: tx.execute(
        "UPDATE addresses SET company = repeat('Sehr lange Firma ', CAST(id % 5 AS INTEGER) * 3) || company, "
        "street = CASE WHEN id % 2 = 0 THEN 'Am Langen Weg gegenüber dem alten Rathaus 1' ELSE 'Ring 2' END "
        "WHERE id <= 25"))
    crm.store.close()
    port = free_port()
    with log.open("wb") as out:
        proc = start_voila(port, {"CRMKIT_DB": str(db), "CRMKIT_USER": user, "CRMKIT_HOME": str(base / "home")},
                           log=out)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield port
        finally:
            stop_voila(proc)


@pytest.fixture(scope="module")
def admin_site(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[int]:
    with dashboards_site(tmp_path_factory.mktemp("in-view"), output_dir / "voila-in-view.log", "admin") as port:
        yield port


def open_addresses(page: Any, port: int) -> None:
    page.goto(dashboard_url(port, "addresses.ipynb"), wait_until="commit")
    page.locator(".crmkit-row").first.wait_for(state="visible", timeout=WIDGETS_UP)


def test_the_compose_dialog_opens_in_view_beside_the_table(page: Any, admin_site: int, output_dir: Path) -> None:
    from playwright.sync_api import expect

    open_addresses(page, admin_site)
    checks = page.locator(".crmkit-rows .crmkit-row-select input")
    expect(checks).to_have_count(25, timeout=30_000)
    checks.nth(0).check()
    checks.nth(24).check()  # the last row of the page: the user has looked at the whole table
    expect(page.locator(".crmkit-selection-label")).to_have_text("2 ausgewählt")
    action = page.locator(".crmkit-teams-action")
    expect(action).to_be_enabled()
    action.click()
    first_field = page.locator(".crmkit-compose .crmkit-compose-search input")
    first_field.wait_for(state="visible", timeout=30_000)
    expect(page.locator(".crmkit-compose-records")).to_have_text("2 Datensätze ausgewählt")
    page.wait_for_timeout(300)  # let the layout settle
    where = first_field.evaluate(IN_VIEW_JS)
    page.screenshot(path=str(output_dir / "compose-in-view.png"))
    assert where["inView"], where  # seen without scrolling: within the window's height and width
    table_box = page.locator(".crmkit-grid-box").bounding_box()
    compose_box = page.locator(".crmkit-compose").bounding_box()
    assert compose_box["x"] >= table_box["x"] + table_box["width"], (table_box, compose_box)  # beside it
    # the pager and the actions stay in view too: the rows scroll inside the table
    assert action.evaluate(IN_VIEW_JS)["inView"]
    page.locator(".crmkit-compose-close").click()
    expect(page.locator(".crmkit-compose")).to_have_count(0, timeout=30_000)


def test_a_rows_own_menu_sends_that_record_and_shows_its_contacts(page: Any, admin_site: int,
                                                                  output_dir: Path) -> None:
    from playwright.sync_api import expect

    open_addresses(page, admin_site)
    menus = page.locator(".crmkit-rows .crmkit-row-menu-button")
    expect(menus).to_have_count(25, timeout=30_000)
    menus.nth(1).click()  # ⋯ of the second row: address 2
    menu = page.locator(".crmkit-row-menu")
    expect(menu).to_be_visible(timeout=30_000)
    expect(menu.locator(".crmkit-row-menu-label")).to_contain_text("Datensatz 2")
    expect(page.locator("tr.crmkit-row-open")).to_have_attribute("data-id", "2")
    assert menu.evaluate(IN_VIEW_JS)["inView"]
    page.screenshot(path=str(output_dir / "row-menu.png"))

    menu.locator(".crmkit-row-contacts").click()
    contacts = page.locator(".crmkit-contacts")
    expect(contacts).to_be_visible(timeout=30_000)
    expect(contacts.locator(".crmkit-contact")).to_have_count(1)
    expect(contacts).to_contain_text("Angebot per Teams besprochen")
    page.screenshot(path=str(output_dir / "row-contacts.png"))

    menus.nth(4).click()  # ⋯ of address 5, then »Per Teams senden« for that one record
    menu.locator(".crmkit-row-teams").click()
    compose = page.locator(".crmkit-compose")
    expect(compose.locator(".crmkit-compose-records")).to_have_text("1 Datensatz ausgewählt", timeout=30_000)
    assert compose.locator(".crmkit-compose-search input").evaluate(IN_VIEW_JS)["inView"]
    expect(page.locator(".crmkit-selection-label")).to_have_text("0 ausgewählt")  # the selection is untouched
    page.screenshot(path=str(output_dir / "row-teams-compose.png"))


# The left edge of each column, per row and in the header.
COLUMNS_JS = """() => {
  const x = el => Math.round(el.getBoundingClientRect().left * 100) / 100;
  const rows = [...document.querySelectorAll('.crmkit-row')].filter(r => r.getBoundingClientRect().height > 0);
  return {rows: rows.map(r => [...r.querySelectorAll('[data-col]')].map(x)),
          header: [...document.querySelectorAll('.crmkit-header [data-col]')].map(x)};
}"""


def test_columns_do_not_drift_with_values_of_different_lengths(page: Any, admin_site: int) -> None:
    from playwright.sync_api import expect

    open_addresses(page, admin_site)
    expect(page.locator(".crmkit-row")).to_have_count(25, timeout=30_000)
    layout = page.evaluate(COLUMNS_JS)
    distinct = {tuple(row) for row in layout["rows"]}
    assert len(distinct) == 1, sorted(distinct)  # per-row boxes sized by their content drifted 2-4 px
    assert list(distinct.pop()) == layout["header"]
