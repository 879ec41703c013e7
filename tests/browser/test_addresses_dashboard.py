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

    page.locator(".crmkit-row:visible .crmkit-row-select input").first.check()
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
