"""The compose dialog and the campaign action dialog offer exactly the choices of crmkit.teams.options,
in its order, labelled from the catalog; neither keeps a list of its own."""

from __future__ import annotations

import pytest
from support.dbstate import offline_campaigns

import crmkit
from crmkit.i18n import t
from crmkit.teams import activation, options
from crmkit.widgets.campaign_action import TeamsActionDialog
from crmkit.widgets.compose import ComposeDialog

pytestmark = pytest.mark.widgets

REORDERED = {name: tuple(reversed(c.values)) for name, c in options.CHOICES.items()}


@pytest.fixture
def crm() -> crmkit.CRM:
    crm = crmkit.open(":memory:")
    crm.add_address(company="Müller GmbH")
    activation.enable(crm)
    return crm


@pytest.fixture
def reordered(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, c in options.CHOICES.items():
        monkeypatch.setitem(options.CHOICES, name, options.Choice(name, REORDERED[name], c.default, c.labels))


@pytest.mark.parametrize("lang", ["de", "en"])
def test_compose_choices_are_the_options_modules(crm: crmkit.CRM, reordered: None, lang: str) -> None:
    crm.set_setting("ui.default_language", lang)
    dialog = ComposeDialog(crm, [1])
    for name in options.COMPOSE_CHOICES:
        dropdown = getattr(dialog, name)
        assert tuple(v for _label, v in dropdown.options) == REORDERED[name], name
        assert [label for label, _v in dropdown.options] == [
            t(options.label_key(name, "compose", v), dialog.lang) for v in REORDERED[name]]
        assert dropdown.value == options.CHOICES[name].default


def test_campaign_action_choices_are_the_options_modules(crm: crmkit.CRM, reordered: None) -> None:
    camp = offline_campaigns(crm)
    reaction = camp.add_reaction(camp.add_activity(camp.add_campaign("C"), "A"), "R")
    dialog = TeamsActionDialog(camp, reaction, description="T", lang="de")
    for name in ("record_format", "chat", "importance"):
        control = getattr(dialog, name)
        assert tuple(v for _label, v in control.options) == REORDERED[name], name
        assert [label for label, _v in control.options] == [
            t(options.label_key(name, "campaigns", v), "de") for v in REORDERED[name]]
