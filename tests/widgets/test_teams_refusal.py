"""The Teams settings' way out of the TS clash and the reason a disabled switch gives (issue 12, items 7 and 9)."""

from __future__ import annotations

import pytest

from crmkit.crm import CRM
from crmkit.widgets.teams_settings import TeamsSettings

pytestmark = pytest.mark.widgets


def as_user(crm: CRM, name: str) -> CRM:
    return CRM(crm.store, name)


@pytest.fixture
def crm(crm: CRM) -> CRM:
    crm.add_user("sam", "Sam Sales", roles=["sales"])
    return crm


def test_the_ts_refusal_offers_the_contact_types_only_where_they_can_be_opened(crm: CRM) -> None:
    crm.add_contact_type("TS", "Telefonschulung")
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    opened: list[str] = []
    alone = TeamsSettings(crm, "de")  # no page around it: nothing to open
    alone.enabled.value = True
    assert "Telefonschulung" in alone.error.value and alone.open_contact_types.layout.display == "none"
    view = TeamsSettings(as_user(crm, "tina"), "en", on_open_contact_types=opened.append)
    view.enabled.value = True
    assert view.open_contact_types.layout.display is None
    assert view.open_contact_types.description == "Open contact types"
    view.open_contact_types.click()
    assert opened == ["TS"]
    assert crm.setting("teams.enabled") is False  # the refusal wrote nothing


def test_a_disabled_switch_names_the_missing_right(crm: CRM) -> None:
    view = TeamsSettings(as_user(crm, "sam"), "de")
    assert view.enabled.disabled and "Microsoft Teams-Verwalter" in view.enabled.tooltip
    assert not TeamsSettings(crm, "de").enabled.tooltip
