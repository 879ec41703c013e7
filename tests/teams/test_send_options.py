"""The send options live in one module (crmkit.teams.options): every option's values are checked there,
importance too, with a typed error in German and English; the campaign action checks through it and
writes nothing when it refuses."""

from __future__ import annotations

import pytest
from support.dbstate import BERND_ID, db_snapshot, offline_campaigns, snapshot_diff

import crmkit
from crmkit.errors import ValidationError
from crmkit.teams import activation, options
from crmkit.teams.compose import build_message
from crmkit.teams.send import SendOptions as ReExported

pytestmark = pytest.mark.core


@pytest.mark.parametrize("name", ["chat", "mode", "record_format", "importance"])
def test_every_choice_is_checked_with_a_typed_error_in_both_languages(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        options.SendOptions(**{name: "bogus"})
    assert str(caught.value) == f"{name} must be one of {options.CHOICES[name].values!r}, not 'bogus'."
    assert caught.value.text("de").startswith(f"{name} muss einer dieser Werte sein")


def test_importance_is_refused_by_send_options_and_by_the_payload_builder() -> None:
    with pytest.raises(ValidationError, match="importance must be one of"):
        options.SendOptions(importance="low")
    with pytest.raises(ValidationError, match="importance must be one of"):
        build_message("S", "t", importance="low")
    for value in options.IMPORTANCE:  # each allowed value reaches the payload as given
        assert options.SendOptions(importance=value).importance == value
        assert build_message("S", "t", importance=value)["importance"] == value


def test_defaults_and_the_old_import_path() -> None:
    assert ReExported is options.SendOptions
    assert options.DEFAULTS == {"chat": "one_on_one", "mode": "per_record", "record_format": "card",
                                "include_record": True, "importance": "normal", "record_contact": False,
                                "purpose": None, "language": None, "as_file": False, "file_threshold": 50}
    assert all(options.DEFAULTS[n] == c.default for n, c in options.CHOICES.items())
    assert options.SendOptions(importance="high").payload() == {"importance": "high"}  # what the body carries


def test_the_campaign_action_refuses_a_bad_option_and_writes_nothing(crm: crmkit.CRM) -> None:
    crm.add_address(company="Müller GmbH")
    activation.enable(crm)
    camp = offline_campaigns(crm)
    reaction = camp.add_reaction(camp.add_activity(camp.add_campaign("C"), "A"), "R")
    before = db_snapshot(crm.store)
    for name in ("importance", "chat", "record_format", "language"):
        with pytest.raises(ValidationError) as caught:
            camp.add_teams_action(reaction, "T", recipients=[BERND_ID], **{name: "bogus"})
        assert caught.value.text("de").startswith(f"{name} muss einer dieser Werte sein"), name
    assert snapshot_diff(before, db_snapshot(crm.store)) == []


def test_a_reordered_choice_reaches_send_options_and_the_campaign_check(crm: crmkit.CRM,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Nobody keeps a copy of the values: change them in the options module and every check follows.
    labels = options.CHOICES["importance"].labels
    monkeypatch.setitem(options.CHOICES, "importance", options.Choice("importance", ("normal", "urgent"), "normal",
                                                                      labels))
    with pytest.raises(ValidationError):
        options.SendOptions(importance="high")
    with pytest.raises(ValidationError):
        build_message("S", "t", importance="high")
    activation.enable(crm)
    camp = offline_campaigns(crm)
    reaction = camp.add_reaction(camp.add_activity(camp.add_campaign("C"), "A"), "R")
    with pytest.raises(ValidationError, match="importance must be one of"):
        camp.add_teams_action(reaction, "T", recipients=[BERND_ID], importance="high")
