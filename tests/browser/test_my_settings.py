"""Issue 12, item 8 in a real browser: the users' own settings page (»Benutzerspezifische Einstellungen«).

A sales user (anna, signed in to Teams through the sandbox's device-code page) opens it and finds
the language switch and her Microsoft 365 accounts under »Weitere Benutzereinstellungen«, with both
rows of Teams/SMTP boxes labelled and »Neuen Account hinzufügen...«; a viewer (vera) opens it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.voila_launch import dashboard_url

from .conftest import SendSetup, voila_with_anna_signed_in

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box


def _seed(crm: crmkit.CRM) -> None:
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[SendSetup]:
    with voila_with_anna_signed_in(tmp_path_factory.mktemp("my-settings"), output_dir / "voila-my-settings.log",
                                   _seed) as setup:
        yield setup


def _open(page: Any, site: SendSetup, user: str) -> Any:
    page.goto(dashboard_url(site.voila_port, "my_settings.ipynb") + f"?user={user}", wait_until="commit")
    view = page.locator(".crmkit-my-settings")
    view.wait_for(state="visible", timeout=WIDGETS_UP)
    return view


def test_a_sales_user_finds_language_and_her_accounts(page: Any, site: SendSetup, output_dir: Path) -> None:
    from playwright.sync_api import expect

    view = _open(page, site, "anna")
    expect(view.locator(".crmkit-title")).to_have_text("Benutzerspezifische Einstellungen")
    expect(view.locator(".crmkit-settings-user")).to_have_text("CRM-Benutzer: Anna Schmidt")
    expect(view.locator(".crmkit-language select")).to_be_enabled()
    expect(view.locator(".crmkit-more-user-settings")).to_have_text("Weitere Benutzereinstellungen")
    expect(view.locator(".crmkit-m365-accounts")).to_contain_text(SANDBOX_DEFAULT_UPN, timeout=30_000)

    edit, new = view.locator(".crmkit-m365-edit"), view.locator(".crmkit-m365-new")
    expect(edit.locator(".crmkit-m365-row-label")).to_have_text("Verwendung des ausgewählten Accounts:")
    expect(new.locator(".crmkit-m365-row-label")).to_have_text("Verwendung eines neuen Accounts:")
    for row in (edit, new):
        expect(row.locator("input[type=checkbox]")).to_have_count(2)
        expect(row.locator(".widget-checkbox", has_text="Für Teams verwenden")).to_be_visible()
        expect(row.locator(".widget-checkbox", has_text="Für SMTP verwenden")).to_be_visible()
    expect(edit.locator(".widget-checkbox", has_text="Für Teams verwenden").locator("input")).to_be_checked()
    add = new.locator(".crmkit-m365-add")
    expect(add).to_have_text("Neuen Account hinzufügen...")
    expect(add).to_be_enabled()
    page.screenshot(path=str(output_dir / "my-settings-anna-de.png"), full_page=True)

    # The language is her own setting: the page follows at once, and it stays for her next page.
    view.locator(".crmkit-language select").select_option(label="English")
    expect(view.locator(".crmkit-title")).to_have_text("User settings", timeout=30_000)
    expect(view.locator(".crmkit-m365-add")).to_have_text("Add new account...")
    expect(view.locator(".crmkit-m365-new .crmkit-m365-row-label")).to_have_text("Usage of a new account:")
    page.screenshot(path=str(output_dir / "my-settings-anna-en.png"), full_page=True)


def test_a_viewer_opens_it_too(page: Any, site: SendSetup, output_dir: Path) -> None:
    from playwright.sync_api import expect

    view = _open(page, site, "vera")
    expect(view.locator(".crmkit-title")).to_have_text("Benutzerspezifische Einstellungen")
    expect(view.locator(".crmkit-settings-user")).to_have_text("CRM-Benutzer: Vera Viewer")
    expect(view.locator(".crmkit-m365-accounts")).to_contain_text("Noch kein Account", timeout=30_000)
    expect(view.locator(".crmkit-m365-new .crmkit-m365-row-label")).to_have_text("Verwendung eines neuen Accounts:")
    expect(view.locator(".crmkit-m365-add")).to_be_enabled()
    expect(view.locator(".crmkit-error:visible")).to_have_count(0)
    expect(view.locator(".crmkit-system-settings-link a")).to_have_count(0)  # nothing for her there
    page.screenshot(path=str(output_dir / "my-settings-vera.png"), full_page=True)
