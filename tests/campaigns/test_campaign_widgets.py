"""The campaign editor, the action dialog and the recording panel, driven headless (no browser)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from support.dbstate import BERND_ID, offline_campaigns

import crmkit
from crmkit.campaigns import Campaigns
from crmkit.widgets.campaigns import CampaignEditor, CampaignRuns, RecordReactions, campaigns_dashboard

pytestmark = pytest.mark.widgets


@pytest.fixture
def camp(crm: crmkit.CRM) -> Campaigns:
    for i in range(3):
        crm.add_address(company=f"Firma {i}", city="Berlin")
    crm.add_user("vera", "Vera", roles=["viewer"])
    return offline_campaigns(crm)  # saving an action resolves its recipients in this offline directory


def test_editor_path_to_a_saved_teams_action(camp: Campaigns) -> None:
    editor = CampaignEditor(camp, "de")
    editor.campaign_name.value = "Herbst"
    editor.campaign_new.click()
    editor.activity_name.value = "Mailing"
    editor.activity_new.click()
    editor.participant_ids.value = "1, 2 3"
    editor.participants_add.click()
    assert "3 Teilnehmer" in editor.participants.value
    editor.reaction_name.value = "Interesse"
    editor.reaction_new.click()
    assert editor.error.exc is None
    editor.actions_button.click()
    panel = editor.actions_area.children[0]
    assert "Noch keine Vorgänge" in panel.table.value
    panel.new.click()
    assert panel.kind.options[0][0] == "Nachricht in Microsoft Teams versenden"
    panel.ok.click()  # no description yet
    assert "Beschreibung" in panel.error.value and not panel.dialog_area.children
    panel.description.value = "Vertrieb informieren"
    panel.ok.click()
    dialog = panel.dialog_area.children[0]
    assert "Standardabsender" in dialog.sender.value and "Anna Schmidt" in dialog.sender.value
    assert dialog.description.value == "Vertrieb informieren"
    dialog.message.value = "Hallo {vorname}"
    dialog.ok.click()  # no recipient, unknown placeholder: refused, dialog stays
    assert dialog.error.exc is not None and panel.dialog_area.children
    dialog.picker._found = {BERND_ID: {"id": BERND_ID, "name": "Bernd", "upn": "bernd.weber@contoso.example"}}
    dialog.picker.results.options = [("Bernd", BERND_ID)]
    dialog.picker.results.value = (BERND_ID,)
    dialog.picker.add_button.click()
    dialog.message.value = "Bitte {company} anrufen"
    dialog.timing.value = "delay"
    dialog.delay.value = 15
    dialog.chat.value = "group"
    dialog.ok.click()
    assert dialog.error.exc is None and not panel.dialog_area.children
    assert "Vorgang gespeichert" in panel.status.value and "Vertrieb informieren" in panel.table.value
    [action_id] = camp.actions(editor.reaction.value)["id"].tolist()
    action = camp.action(action_id)
    assert (action.delay.total_seconds(), action.chat, action.recipients) == (900, "group", [
        {"id": BERND_ID, "name": "Bernd Weber", "upn": "bernd.weber@contoso.example"}])  # as the directory has him


def test_without_a_campaign_account_the_dialog_says_so_and_saves_nothing(
        camp: Campaigns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipients are resolved as the campaign account when an action is saved; without one, nothing is."""
    from crmkit.auth import SignInRequired
    from crmkit.widgets.campaign_action import TeamsActionDialog

    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))
    rid = camp.add_reaction(camp.add_activity(camp.add_campaign("C"), "A"), "R")
    bare = Campaigns(camp.crm)
    dialog = TeamsActionDialog(bare, rid, description="Melden", lang="de")
    assert "Kein Kampagnen-Account" in dialog.sender.value
    dialog.picker.recipients = [{"id": BERND_ID, "name": "Bernd"}]
    assert dialog.save() is None
    assert isinstance(dialog.error.exc, SignInRequired) and dialog.error.layout.display is None
    assert camp.actions(rid).empty
    bare.close()


def test_viewer_records_but_cannot_edit(camp: Campaigns) -> None:
    cid = camp.add_campaign("C")
    aid = camp.add_activity(cid, "A")
    camp.add_participants(aid, [1, 2])
    rid = camp.add_reaction(aid, "R")
    camp.add_teams_action(rid, "T", recipients=["bernd.weber@contoso.example"], timing="delay", delay=60)
    vera = Campaigns(crmkit.CRM(camp.crm.store, "vera"))
    editor = CampaignEditor(vera, "en")
    assert editor.campaign_new.disabled and editor.participants_add.disabled
    recorder = RecordReactions(vera, "en")
    assert recorder.activity.value == aid and recorder.reaction.value == rid
    recorder.addresses.value = (1, 2)
    thread = recorder.start_recording()
    assert thread is not None
    thread.join(30)
    assert "2 recorded" in recorder.status.value and "2 actions triggered" in recorder.status.value
    runs = CampaignRuns(vera, "en")
    assert runs.table.value.count('data-status="due"') == 2


def test_dashboard_builds_for_admin(camp: Campaigns) -> None:
    box = campaigns_dashboard(camp.crm)
    assert [type(w).__name__ for w in box.body.children] == ["CampaignEditor", "RecordReactions", "CampaignRuns"]
    assert isinstance(camp.runs(), pd.DataFrame)
