"""The addresses dashboard in a real browser, served by Voila with the production config."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import psutil
import pytest

from crmkit.voila_launch import HOST

from .conftest import EVIL, DemoDb

pytestmark = pytest.mark.browser

PAGE_SIZE = 25  # the user setting's default
WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box


def label_text(page: Any) -> str:
    return str(page.locator(".crmkit-page-label").inner_text()).strip()


def test_voila_listens_on_loopback_only(voila_url: str) -> None:
    port = int(voila_url.rsplit(":", 1)[1])
    listeners = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listeners and {addr.ip for addr in listeners} == {HOST}


def test_filter_by_city_and_page(page: Any, voila_url: str, demo_db: DemoDb, output_dir: Path) -> None:
    from playwright.sync_api import expect

    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{voila_url}/voila/render/addresses.ipynb", wait_until="commit")
    label = page.locator(".crmkit-page-label")
    label.wait_for(state="visible", timeout=WIDGETS_UP)
    pages = math.ceil(demo_db.total / PAGE_SIZE)
    expect(label).to_have_text(f"Seite 1 von {pages} (1.000 Adressen)", timeout=30_000)
    assert "Traceback" not in page.content()
    assert "address_dashboard" not in page.content()  # strip_sources: no code shown
    page.screenshot(path=str(output_dir / "addresses-initial.png"))

    berlin = demo_db.city_counts["Berlin"]
    berlin_pages = math.ceil(berlin / PAGE_SIZE)
    page.locator(".crmkit-city select").select_option("Berlin")
    expect(label).to_have_text(f"Seite 1 von {berlin_pages} ({berlin} Adressen)", timeout=30_000)
    rows = page.locator(".crmkit-row:visible")
    expect(rows).to_have_count(PAGE_SIZE)
    assert set(page.locator(".crmkit-row:visible [data-col=city]").all_inner_texts()) == {"Berlin"}
    first_company = rows.first.locator("[data-col=company]").inner_text()

    page.locator(".crmkit-next").click()
    expect(label).to_have_text(f"Seite 2 von {berlin_pages} ({berlin} Adressen)", timeout=30_000)
    expect(rows.first.locator("[data-col=company]")).not_to_have_text(first_company)
    assert set(page.locator(".crmkit-row:visible [data-col=city]").all_inner_texts()) == {"Berlin"}

    page.locator(".crmkit-rows .crmkit-row-select input").first.check()
    expect(page.locator(".crmkit-selection-label")).to_have_text("1 ausgewählt")
    page.screenshot(path=str(output_dir / "addresses-berlin-page2.png"), full_page=True)

    # A hostile value is shown as text and never runs.
    page.locator(".crmkit-city select").select_option(label="(alle)")
    search = page.locator(".crmkit-search input")
    search.fill("alert(1)")
    search.press("Enter")
    expect(label).to_have_text(re.compile(r"\(1 Adresse\)"), timeout=30_000)
    expect(rows.first.locator("[data-col=company]")).to_have_text(EVIL)
    assert dialogs == []


def test_language_switch_in_the_browser(page: Any, voila_url: str, demo_db: DemoDb) -> None:
    from playwright.sync_api import expect

    page.goto(f"{voila_url}/voila/render/addresses.ipynb", wait_until="commit")
    label = page.locator(".crmkit-page-label")
    label.wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".crmkit-language select").select_option(label="English")
    expect(label).to_have_text(re.compile(r"^Page 1 of \d+ \(1,000 addresses\)$"), timeout=30_000)
    expect(page.locator(".crmkit-next")).to_have_text(re.compile("Next"))
    page.locator(".crmkit-language select").select_option(label="Deutsch")  # leave the user setting as found
    expect(label).to_have_text(re.compile(r"^Seite 1 von"), timeout=30_000)


# Left edges of every row's cells and of the header's, and the top of each row's checkbox, cells and ⋯.
COLUMNS_JS = """() => {
  const x = el => Math.round(el.getBoundingClientRect().left * 100) / 100;
  const rows = [...document.querySelectorAll('.crmkit-row')].filter(r => r.getBoundingClientRect().height > 0);
  const checks = [...document.querySelectorAll('.crmkit-rows .crmkit-row-select')];
  const menus = [...document.querySelectorAll('.crmkit-rows .crmkit-row-menu-button')];
  return {
    rows: rows.map(r => [...r.querySelectorAll('[data-col]')].map(x)),
    header: [...document.querySelectorAll('.crmkit-header [data-col]')].map(x),
    tops: rows.map((r, i) => [r.getBoundingClientRect().top, checks[i] && checks[i].getBoundingClientRect().top,
                              menus[i] && menus[i].getBoundingClientRect().top]),
  };
}"""


def test_columns_line_up_and_paging_reaches_both_ends(page: Any, voila_url: str, demo_db: DemoDb,
                                                      output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(f"{voila_url}/voila/render/addresses.ipynb", wait_until="commit")
    label = page.locator(".crmkit-page-label")
    label.wait_for(state="visible", timeout=WIDGETS_UP)
    pages = math.ceil(demo_db.total / PAGE_SIZE)
    expect(label).to_have_text(f"Seite 1 von {pages} (1.000 Adressen)", timeout=30_000)
    layout = page.evaluate(COLUMNS_JS)
    assert len(layout["rows"]) == PAGE_SIZE
    # Every row's columns start at the same x, and at the header's (they drifted 2-4 px row to row).
    assert all(row == layout["header"] for row in layout["rows"]), layout
    for row_top, check_top, menu_top in layout["tops"]:  # checkbox, cells and ⋯ of a row line up
        assert abs(row_top - check_top) <= 1 and abs(row_top - menu_top) <= 1, layout["tops"]

    page.locator(".crmkit-last").click()
    expect(label).to_have_text(f"Seite {pages} von {pages} (1.000 Adressen)", timeout=30_000)
    expect(page.locator(".crmkit-next")).to_be_disabled()
    page.locator(".crmkit-first").click()
    expect(label).to_have_text(f"Seite 1 von {pages} (1.000 Adressen)", timeout=30_000)
    goto = page.locator(".crmkit-goto input")
    goto.fill("abc")
    goto.press("Enter")
    error = page.locator(".crmkit-goto-error")
    expect(error).to_contain_text(f"»abc« ist keine Seitenzahl. Geben Sie eine ganze Zahl von 1 bis {pages} ein.",
                                  timeout=30_000)
    page.screenshot(path=str(output_dir / "addresses-goto-error.png"))
    goto.fill("20")
    goto.press("Enter")
    expect(label).to_have_text(f"Seite 20 von {pages} (1.000 Adressen)", timeout=30_000)
    expect(error).to_be_hidden()

    page.locator(".crmkit-page-size select").select_option("100")
    expect(page.locator(".crmkit-row")).to_have_count(100, timeout=30_000)
    layout = page.evaluate(COLUMNS_JS)
    assert all(row == layout["header"] for row in layout["rows"])
    page.locator(".crmkit-page-size select").select_option("25")  # leave the user setting as found
    expect(page.locator(".crmkit-row")).to_have_count(PAGE_SIZE, timeout=30_000)
