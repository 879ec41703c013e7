"""Campaign model, rights, templates, run bookkeeping and the worker lease, without a sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.dbstate import BERND_ID, offline_campaigns

import crmkit
from crmkit.campaigns import Campaigns, check_template, render_message, render_subject, template_fields
from crmkit.campaigns._runner import Claimer, claim_due
from crmkit.campaigns.worker import Lease
from crmkit.errors import NotFound, PermissionDenied, ValidationError
from crmkit.teams import activation
from crmkit.teams.compose import sanitize_html
from crmkit.teams.outbox import utcnow

pytestmark = pytest.mark.core

EVIL = "<script>alert('x')</script>"
BERND = "bernd.weber@contoso.example"  # in the offline directory the actions are saved against


@pytest.fixture
def camp(crm: crmkit.CRM) -> Campaigns:
    crm.add_address(company="Müller & Söhne GmbH", city="Berlin")
    crm.add_address(company=EVIL + " AG", city="Wien")
    crm.add_address(last_name="Keller", first_name="Eva", city="Zürich")
    for name, role in (("carl", "campaign_manager"), ("sara", "sales"), ("vera", "viewer")):
        crm.add_user(name, name.title(), roles=[role])
    return offline_campaigns(crm)


def setup(camp: Campaigns, **action: object) -> tuple[int, int, int]:
    cid = camp.add_campaign("Frühjahr 2026", "Mailing an Bestandskunden")
    aid = camp.add_activity(cid, "Mailing März")
    camp.add_participants(aid, [1, 2, 3])
    rid = camp.add_reaction(aid, "Interesse")
    act = camp.add_teams_action(rid, "Vertrieb informieren", recipients=[BERND],
                                **({"timing": "delay", "delay": 60} | action))
    return aid, rid, act


def as_user(camp: Campaigns, name: str) -> Campaigns:
    return offline_campaigns(crmkit.CRM(camp.crm.store, name))


def test_model_from_campaign_to_action(camp: Campaigns) -> None:
    aid, rid, act = setup(camp, message="Hallo {first_name} ({company})", record_contact=True, chat="group",
                          importance="high", skip_blocked=False)
    assert camp.campaigns()[["name", "activities"]].values.tolist() == [["Frühjahr 2026", 1]]
    assert camp.activities()["participants"].tolist() == [3]
    assert camp.reactions(aid)[["name", "actions"]].values.tolist() == [["Interesse", 1]]
    action = camp.action(act)
    assert (action.timing, action.delay, action.subject) == ("delay", timedelta(seconds=60), "Vertrieb informieren")
    assert (action.record_contact, action.chat, action.importance, action.skip_blocked) == (True, "group", "high",
                                                                                            False)
    # resolved in the directory when saved: the object id, the name and the UPN, not the text given
    assert action.recipients == [{"id": BERND_ID, "name": "Bernd Weber", "upn": BERND}]
    at = datetime(2030, 5, 1, 9, 30, tzinfo=UTC)
    changed = camp.update_action(act, timing="at", at=at)
    assert changed.at == datetime(2030, 5, 1, 9, 30)  # naive UTC
    assert camp.update_action(act, description="Neu").at == changed.at  # other edits keep the time
    assert camp.actions(rid)["description"].tolist() == ["Neu"]
    assert camp.add_participants(aid, [1, 2]) == 0
    with pytest.raises(NotFound):
        camp.add_participants(aid, [99])
    with pytest.raises(ValidationError, match="already has a reaction"):
        camp.add_reaction(aid, "Interesse")


def test_recording_twice_creates_runs_once_and_keeps_history(camp: Campaigns) -> None:
    aid, rid, act = setup(camp)
    other = camp.add_reaction(aid, "Kein Interesse")
    first = camp.record_reaction(rid, [1, 2], notes="Telefonat", deliver=False)
    again = camp.record_reaction(rid, [2, 1, 3], deliver=False)
    assert (first.new, len(first.runs)) == ([1, 2], 2)
    assert (again.new, again.already, len(again.runs)) == ([3], [2, 1], 1)
    assert again.recorded[1] == first.recorded[1]
    camp.record_reaction(other, [1], deliver=False)  # no actions: history only
    runs = camp.runs(action_id=act)
    assert sorted(runs["address_id"]) == [1, 2, 3] and set(runs["status"]) == {"due"}
    assert (runs["due_at"] > utcnow() + timedelta(seconds=50)).all()
    history = camp.history(activity_id=aid, address_id=1)
    assert history["reaction"].tolist() == ["Kein Interesse", "Interesse"]
    assert camp.participants(aid).set_index("id")["reaction"].to_dict() == {1: "Kein Interesse", 2: "Interesse",
                                                                             3: "Interesse"}
    with pytest.raises(ValidationError, match="not participants"):
        camp.record_reaction(rid, [1, 4], deliver=False)


def test_inactive_actions_do_not_run(camp: Campaigns) -> None:
    _aid, rid, act = setup(camp)
    camp.update_action(act, active=False)
    assert camp.record_reaction(rid, [1], deliver=False).runs == []


EDITS = {
    "add_campaign": lambda c, ids: c.add_campaign("X"),
    "rename_campaign": lambda c, ids: c.rename_campaign(ids[0], "Y"),
    "add_activity": lambda c, ids: c.add_activity(ids[0], "A"),
    "add_participants": lambda c, ids: c.add_participants(ids[1], [1]),
    "add_reaction": lambda c, ids: c.add_reaction(ids[1], "R2"),
    "add_teams_action": lambda c, ids: c.add_teams_action(ids[2], "T", recipients=[BERND]),
    "update_action": lambda c, ids: c.update_action(ids[3], description="Z"),
    "retry": lambda c, ids: c.retry([1]),
}


@pytest.mark.parametrize("user", ["admin", "carl", "sara", "vera"])
@pytest.mark.parametrize("operation", sorted(EDITS))
def test_rights_matrix(camp: Campaigns, user: str, operation: str) -> None:
    cid = camp.add_campaign("C")
    aid = camp.add_activity(cid, "A")
    camp.add_participants(aid, [1, 2])
    rid = camp.add_reaction(aid, "R")
    act = camp.add_teams_action(rid, "T", recipients=[BERND], timing="delay", delay=60)
    session = as_user(camp, user)
    if user in ("admin", "carl"):
        EDITS[operation](session, (cid, aid, rid, act))
    else:
        with pytest.raises(PermissionDenied, match=r"campaign\.admin"):
            EDITS[operation](session, (cid, aid, rid, act))
    # Recording reactions and reading need only a CRM user.
    assert session.record_reaction(rid, [2], deliver=False).new == [2]
    assert len(session.runs(action_id=act)) == 1 and len(session.history()) == 1


@pytest.mark.parametrize(("template", "match"), [
    ("Hallo {vorname}", "Unknown placeholder {vorname}"),
    ("Hallo {company!r}", "Unknown placeholder"),
    ("Hallo {company:>20}", "Unknown placeholder"),
    ("Hallo {company", "unbalanced brace"),
    ("Hallo }", "unbalanced brace"),
])
def test_bad_templates_are_refused_when_saved(camp: Campaigns, template: str, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        setup(camp, message=template)
    with pytest.raises(ValidationError, match=match):
        check_template(template)
    assert camp.crm.store.one("SELECT count(*) FROM campaign_actions") == 0


def test_placeholders_are_escaped(camp: Campaigns) -> None:
    values = {"company": EVIL, "first_name": "Eva", "city": "Köln & Bonn"}
    plain = sanitize_html(render_message("Hallo {first_name} von {company} in {city}.\nGruß", values))
    assert "<script>" not in plain and "&lt;script&gt;" in plain
    assert "Köln &amp; Bonn" in plain and "&amp;amp;" not in plain and "<br>Gruß" in plain
    rich = sanitize_html(render_message("<b>{company}</b> {{literal}} {city}", values))
    assert rich.startswith("<b>&lt;script&gt;alert('x')&lt;/script&gt;</b>") and "{literal}" in rich
    assert "Köln &amp; Bonn" in rich and "&amp;amp;" not in rich
    assert render_subject("Neu: {company} " + "x" * 300, values).startswith("Neu: <script>")  # escaped by build
    assert len(render_subject("{company}" + "x" * 300, values)) == 200
    assert template_fields("{company} {id} {campaign}", "{email}") == ["company", "email"]


@pytest.mark.parametrize(("options", "match"), [
    ({"timing": "delay"}, "positive timedelta"),
    ({"timing": "at"}, "needs at="),
    ({"timing": "soon"}, "timing must be one of"),
    ({"chat": "channel"}, "chat must be one of"),
    ({"importance": "low"}, "importance must be one of"),
    ({"record_contact": "yes"}, "True or False"),
    ({"recipients": []}, "at least one recipient"),
    ({"colour": "red"}, "Unknown action fields"),
])
def test_bad_action_options(camp: Campaigns, options: dict[str, object], match: str) -> None:
    cid = camp.add_campaign("C")
    rid = camp.add_reaction(camp.add_activity(cid, "A"), "R")
    options = dict(options)  # the parameter's dict is shared by the [duckdb] and [postgresql] runs
    recipients = options.pop("recipients", [BERND])
    with pytest.raises(ValidationError, match=match):
        camp.add_teams_action(rid, "T", recipients=recipients, **options)
    assert camp.actions(rid).empty


def test_claims_take_only_due_runs_and_abandoned_ones(camp: Campaigns) -> None:
    _aid, rid, act = setup(camp)
    camp.record_reaction(rid, [1, 2], deliver=False)
    me = Claimer.here("test", 600)
    assert claim_due(camp.crm, me) == []  # due in a minute
    camp.crm.store.execute("UPDATE campaign_runs SET due_at = ? WHERE address_id = 1", [utcnow()])
    [run_id] = claim_due(camp.crm, me)
    assert claim_due(camp.crm, Claimer.here("other", 600)) == []  # ours, alive, not expired
    # A claim whose process is gone (here: a finished child process) is taken over at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    camp.crm.store.execute("UPDATE campaign_runs SET claim_pid = ?, claimed_by = 'gone' WHERE id = ?",
                           [int(dead.stdout), run_id])
    assert claim_due(camp.crm, me) == [run_id]
    camp.crm.store.execute("UPDATE campaign_runs SET claim_host = 'elsewhere', claimed_by = 'far', "
                           "claim_expires_at = ? WHERE id = ?", [utcnow() + timedelta(minutes=5), run_id])
    assert claim_due(camp.crm, me) == []  # another machine's live claim
    camp.crm.store.execute("UPDATE campaign_runs SET claim_expires_at = ? WHERE id = ?",
                           [utcnow() - timedelta(seconds=1), run_id])
    assert claim_due(camp.crm, me) == [run_id]
    assert camp.runs(action_id=act).set_index("id").loc[run_id, "attempts"] == 3


def test_no_campaign_account_makes_runs_retry_with_a_clear_reason(
    camp: Campaigns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CRMKIT_CAMPAIGN_RETRY_S", "30")
    activation.enable(camp.crm)
    _aid, rid, _act = setup(camp, timing="immediately")
    camp._teams = None  # saved against the directory; runs as the (missing) campaign account
    result = camp.record_reaction(rid, [1])
    [outcome] = result.outcomes
    assert outcome.status == "retry"
    assert "Campaign account cannot sign in: No campaign account is set up" in str(outcome.error)
    run = camp.runs().iloc[0]
    assert run["status"] == "retry" and run["attempts"] == 1 and run["batch_id"] is None
    assert timedelta(seconds=25) < run["next_attempt_at"] - utcnow() <= timedelta(seconds=30)
    assert camp.run_due() == []  # not before next_attempt_at
    assert camp.crm.store.one("SELECT count(*) FROM outbox_batches") == 0
    camp.close()


def test_switched_off_integration_is_retried_not_lost(camp: Campaigns) -> None:
    _aid, rid, _act = setup(camp, timing="immediately")
    [outcome] = camp.record_reaction(rid, [3]).outcomes
    assert outcome.status == "retry" and "switched off" in str(outcome.error)


def test_lease_single_holder_expiry_and_dead_holder(crm: crmkit.CRM) -> None:
    first = Lease(crm.store, Claimer.here("worker", 600), ttl=30)
    second = Lease(crm.store, Claimer.here("worker", 600), ttl=30)
    assert first.acquire() and not second.acquire()
    assert first.renew() and first.acquire()  # re-acquiring our own lease is fine
    crm.store.execute("UPDATE campaign_worker_lease SET expires_at = ?", [utcnow() - timedelta(seconds=1)])
    assert second.acquire() and not first.renew() and not first.acquire()
    holder = second.holder()
    assert holder is not None and holder["pid"] == os.getpid()
    second.release()
    assert first.acquire()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crm.store.execute("UPDATE campaign_worker_lease SET pid = ?, holder = 'gone'", [int(dead.stdout)])
    assert second.acquire()  # same host, holder process gone: no need to wait for the expiry


def test_plain_template_without_markup_in_values_stays_plain() -> None:
    assert render_message("Hallo {company}\nTschüss", {"company": "A & B"}) == "Hallo A & B\nTschüss"
    assert sanitize_html(render_message("{company}\n{city}", {"company": "a<b", "city": "c"})) == "a&lt;b<br>c"
