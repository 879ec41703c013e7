"""A viewer (vera, no rights) in a real browser: what she may not do is disabled, the tooltip (the button's
``title``) names the missing right, in German and in English; what she may do stays enabled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crmkit.i18n import t
from crmkit.rights import right_label
from crmkit.voila_launch import dashboard_url

from .test_compose_in_view import WIDGETS_UP, dashboards_site

pytestmark = pytest.mark.browser



def reason(right: str, lang: str) -> str:
    """The missing right, named by its label in ``lang`` and its key (the catalog's wording)."""
    text = t("rights.missing", lang, label=right_label(right, lang), right=right)
    assert right in text and right_label(right, lang) in text
    return text


def tooltip(key: str, right: str, lang: str) -> str:
    return f"{t(key, lang)} – {reason(right, lang)}"



@pytest.fixture(scope="module")
def vera_site(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[int]:
    with dashboards_site(tmp_path_factory.mktemp("viewer"), output_dir / "voila-viewer.log", "vera") as port:
        yield port


def test_vera_sees_the_teams_actions_disabled_with_the_reason(page: Any, vera_site: int, output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(vera_site, "addresses.ipynb"), wait_until="commit")
    page.locator(".crmkit-row").first.wait_for(state="visible", timeout=WIDGETS_UP)
    action = page.locator(".crmkit-teams-action")
    expect(action).to_be_disabled()
    expect(action).to_have_attribute("title", tooltip("teams.with_record", "teams.send", "de"))
    page.locator(".crmkit-rows .crmkit-row-select input").first.check()
    expect(page.locator(".crmkit-selection-label")).to_have_text("1 ausgewählt")
    expect(action).to_be_disabled()  # a selection does not enable what the right forbids

    page.locator(".crmkit-rows .crmkit-row-menu-button").nth(1).click()
    menu = page.locator(".crmkit-row-menu")
    expect(menu).to_be_visible(timeout=30_000)
    row_teams = menu.locator(".crmkit-row-teams")
    expect(row_teams).to_be_disabled()
    expect(row_teams).to_have_attribute("title", tooltip("table.row_teams_tooltip", "teams.send", "de"))
    contacts = menu.locator(".crmkit-row-contacts")
    expect(contacts).to_be_enabled()  # reading a record's contacts needs no right
    page.screenshot(path=str(output_dir / "viewer-addresses-de.png"))
    contacts.click()
    expect(page.locator(".crmkit-contacts .crmkit-contact")).to_have_count(1, timeout=30_000)

    page.locator(".crmkit-language select").select_option(label="English")
    expect(action).to_have_attribute("title", tooltip("teams.with_record", "teams.send", "en"), timeout=30_000)
    expect(action).to_be_disabled()
    page.locator(".crmkit-language select").select_option(label="Deutsch")  # leave the user setting as found
    expect(action).to_have_attribute("title", tooltip("teams.with_record", "teams.send", "de"), timeout=30_000)


def test_vera_sees_the_campaign_editor_read_only_with_the_reason(page: Any, vera_site: int,
                                                                 output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(vera_site, "campaigns.ipynb"), wait_until="commit")
    editor = page.locator(".crmkit-campaign-editor")
    editor.wait_for(state="visible", timeout=WIDGETS_UP)
    for selector in (".crmkit-campaign-new", ".crmkit-activity-new", ".crmkit-participants-add",
                     ".crmkit-reaction-new"):
        button = editor.locator(selector)
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("title", reason("campaign.admin", "de"))
    expect(page.locator(".crmkit-record-button")).to_be_visible()  # recording reactions is open to every user
    page.screenshot(path=str(output_dir / "viewer-campaigns-de.png"), full_page=True)
