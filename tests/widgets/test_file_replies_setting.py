"""»Antworten aus Teams am Datensatz ablegen« on the settings dashboard's Teams tab (crmkit.teams.replies)."""

from __future__ import annotations

import pytest

from crmkit.crm import CRM
from crmkit.errors import PermissionDenied
from crmkit.i18n import t
from crmkit.teams import activation
from crmkit.widgets.teams_settings import TeamsSettings

pytestmark = pytest.mark.widgets


@pytest.mark.parametrize("lang", ["de", "en"])
def test_the_admin_switches_filing_replies_on_and_off(crm: CRM, lang: str) -> None:
    activation.enable(crm)
    view = TeamsSettings(crm, lang)
    assert view.file_replies is not None and view.file_replies.value is False  # opt-in: off by default
    assert view.file_replies.description == t("teams_settings.file_replies", lang)
    assert t("teams_settings.file_replies_help", lang)[:40] in view.file_replies_help.value
    view.file_replies.value = True
    assert crm.setting("teams.file_replies") is True
    assert crm.store.one("SELECT count(*) FROM audit WHERE key = 'teams.file_replies'") == 1
    view.file_replies.value = False
    assert crm.setting("teams.file_replies") is False
    view.close()


def test_offered_once_the_integration_is_on(crm: CRM) -> None:
    view = TeamsSettings(crm, "de")
    assert view.file_replies is None and view.file_replies_help is None  # nothing to file while Teams is off
    view.enabled.value = True  # the admin switches the integration on here
    assert view.file_replies is not None and view.file_replies in view.children
    view.close()


def test_without_teams_admin_the_switch_is_disabled_and_refused(crm: CRM) -> None:
    activation.enable(crm)
    crm.add_user("sam", "Sam Sales", roles=["sales"])
    sam = CRM(crm.store, "sam")
    view = TeamsSettings(sam, "en")
    assert view.file_replies is not None and view.file_replies.disabled
    view.file_replies.value = True  # forced past the disabled control: the core refuses, the box says why
    assert crm.setting("teams.file_replies") is False and view.file_replies.value is False
    assert "teams.admin" in view.error.value or "Teams" in view.error.value
    with pytest.raises(PermissionDenied):
        sam.set_setting("teams.file_replies", True)
    view.close()
