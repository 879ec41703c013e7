"""Every dashboard says which mode it runs in (issue 16 item 2), in the user's language and only in it: the line
under the header (``crmkit-mode-line``) of the addresses, system settings, own settings and campaigns pages.
Team mode's line (signed in as the login's CRM user) is tested on a real login in tests/core/test_team_mode.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest

from crmkit.crm import CRM
from crmkit.widgets.campaigns import campaigns_dashboard
from crmkit.widgets.my_settings import my_settings_dashboard
from crmkit.widgets.settings_app import settings_dashboard
from crmkit.widgets.teams_action import teams_address_dashboard

pytestmark = pytest.mark.widgets

SINGLE = {"de": "Einzelplatzmodus · nur auf diesem Rechner (127.0.0.1)",
          "en": "Single-user mode · this machine only (127.0.0.1)"}
PAGES: dict[str, Callable[[CRM], Any]] = {
    "addresses": teams_address_dashboard, "settings": settings_dashboard, "my_settings": my_settings_dashboard,
    "campaigns": campaigns_dashboard,
}


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))


def _mode_lines(widget: widgets.Widget) -> list[str]:
    """The values of every widget with the class crmkit-mode-line under ``widget``."""
    found = [widget.value] if "crmkit-mode-line" in getattr(widget, "_dom_classes", ()) else []
    for child in getattr(widget, "children", ()):
        found += _mode_lines(child)
    return found


@pytest.mark.parametrize("page", PAGES)
def test_every_dashboard_says_single_user_mode_in_the_users_language(crm: CRM, page: str) -> None:
    for lang, other in (("de", "en"), ("en", "de")):
        crm.set_user_setting("language", lang)
        lines = _mode_lines(PAGES[page](crm))
        assert len(lines) == 1, lines
        assert SINGLE[lang] in lines[0] and SINGLE[other] not in lines[0], lines


def test_the_header_relabels_its_mode_line(crm: CRM) -> None:
    from crmkit.widgets.header import DashboardHeader

    header = DashboardHeader(crm, "settings.user", "de", lambda lang: None)
    assert SINGLE["de"] in header.mode_line.value
    header.relabel("en")
    assert SINGLE["en"] in header.mode_line.value and SINGLE["de"] not in header.mode_line.value
