"""The campaigns dashboard for a user without ``campaign.admin``: the editor is there but read-only, each
editing control disabled with the missing right in its tooltip (German and English); the core still
refuses. A campaign manager has the same controls enabled."""

from __future__ import annotations

import pytest
from support.dbstate import offline_campaigns

import crmkit
from crmkit.campaigns import Campaigns
from crmkit.errors import PermissionDenied, ValidationError
from crmkit.i18n import t
from crmkit.widgets.campaign_action import TeamsActionDialog
from crmkit.widgets.campaigns import CampaignEditor, ReactionActions, campaigns_dashboard

pytestmark = pytest.mark.widgets

REASON = {"de": "Nicht möglich: Ihnen fehlt das Recht »Kampagnen einrichten« (campaign.admin).",
          "en": "Not available: you lack the right “Set up campaigns” (campaign.admin)."}


@pytest.fixture
def camp(crm: crmkit.CRM) -> Campaigns:
    for i in range(3):
        crm.add_address(company=f"Firma {i}", city="Berlin")
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    crm.add_user("kai", "Kai Kampagne", roles=["campaign_manager"])
    camp = offline_campaigns(crm)
    cid = camp.add_campaign("Herbst")
    aid = camp.add_activity(cid, "Mailing")
    camp.add_participants(aid, [1, 2])
    camp.add_reaction(aid, "Interesse")
    return camp


def as_user(camp: Campaigns, name: str, lang: str) -> Campaigns:
    crm = crmkit.CRM(camp.crm.store, name)
    crm.set_user_setting("language", lang)
    return offline_campaigns(crm)


def editing_controls(editor: CampaignEditor) -> list[object]:
    return [editor.campaign_name, editor.campaign_new, editor.activity_name, editor.activity_new,
            editor.participant_ids, editor.participants_add, editor.reaction_name, editor.reaction_new]


@pytest.mark.parametrize("lang", ["de", "en"])
def test_a_viewer_sees_the_editor_read_only_with_the_reason(camp: Campaigns, lang: str) -> None:
    vera = as_user(camp, "vera", lang)
    page = campaigns_dashboard(vera.crm)
    children = getattr(page, "body", page).children  # the page (with its header) or a plain box
    editor = next((w for w in children if isinstance(w, CampaignEditor)), None)
    assert editor is not None  # shown, not hidden
    for control in editing_controls(editor):
        assert control.disabled and control.tooltip == REASON[lang], control
    assert editor.reaction.value is not None and not editor.actions_button.disabled  # reading is allowed
    panel = editor.open_actions()
    assert isinstance(panel, ReactionActions)
    assert panel.new.disabled and panel.new.tooltip == REASON[lang]
    dialog = TeamsActionDialog(vera, editor.reaction.value, description="T", lang=lang)
    assert dialog.ok.disabled and dialog.ok.tooltip == REASON[lang]
    # the core still refuses (a click from code, or an old page)
    assert dialog.save() is None and isinstance(dialog.error.exc, PermissionDenied)
    with pytest.raises(PermissionDenied):
        vera.add_campaign("Neu")


def test_a_campaign_manager_has_them_enabled(camp: Campaigns) -> None:
    kai = as_user(camp, "kai", "de")
    editor = CampaignEditor(kai, "de")
    for control in editing_controls(editor):
        assert not control.disabled and not control.tooltip, control
    panel = editor.open_actions()
    assert not panel.new.disabled and not panel.new.tooltip
    dialog = TeamsActionDialog(kai, editor.reaction.value, description="T", lang="de")
    assert not dialog.ok.disabled


@pytest.mark.parametrize("lang", ["de", "en"])
def test_the_editor_asks_to_pick_first_and_writes_nothing(crm: crmkit.CRM, lang: str) -> None:
    """With nothing selected, the add/open buttons refuse with the catalog's "pick … first" before any write."""
    crm.set_user_setting("language", lang)
    editor = CampaignEditor(offline_campaigns(crm), lang)
    steps = [(editor._new_activity, "campaigns.pick_campaign"), (editor._add_participants, "campaigns.pick_activity"),
             (editor._new_reaction, "campaigns.pick_activity"), (editor.open_actions, "campaigns.pick_reaction")]
    for step, key in steps:
        with pytest.raises(ValidationError) as refused:
            step()
        assert str(refused.value) == t(key, lang)
    counts = crm.store.read(lambda tx: [tx.one(f"SELECT count(*) FROM {table}") for table in
                                        ("campaign_activities", "campaign_participants", "campaign_reactions")])
    assert counts == [0, 0, 0]
