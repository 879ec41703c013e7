"""Running Teams reaction actions against the sandbox tenant: immediately, delayed by the worker, two
workers at once, a dead recorder, and a missing or broken campaign account."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from support.sandbox import SandboxAdmin

from crmkit import privacy
from crmkit.auth import Microsoft365
from crmkit.campaigns import Claimer
from crmkit.campaigns._runner import _CONTEXT_SQL, _plan_and_enqueue, claim_due
from crmkit.campaigns.worker import run_worker
from crmkit.sandbox import SANDBOX_DEFAULT_UPN

from .conftest import EVIL, Setup, start_worker

pytestmark = pytest.mark.sandbox


def campaign_sender_id(fast_crm_tenant: SandboxAdmin) -> str:
    return next(u["id"] for u in fast_crm_tenant.get("users")["value"] if u["userPrincipalName"] == SANDBOX_DEFAULT_UPN)


def messages(fast_crm_tenant: SandboxAdmin) -> list[dict]:
    return list(fast_crm_tenant.get("messages")["value"])


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_immediate_run_sends_from_the_campaign_account_once(setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    setup.set_campaign_account()
    act = setup.action(record_contact=True, subject="Interesse: {company}")
    result = setup.camp.record_reaction(setup.reaction, [1, 2])
    assert [o.status for o in result.outcomes] == ["done", "done"], result.outcomes
    again = setup.camp.record_reaction(setup.reaction, [1, 2])
    assert again.runs == [] and again.outcomes == []
    delivered = messages(fast_crm_tenant)
    assert len(delivered) == 2
    assert {m["from"]["user"]["id"] for m in delivered} == {campaign_sender_id(fast_crm_tenant)}
    evil = next(m for m in delivered if "AG" in m["subject"])
    assert "<script>" not in evil["body"]["content"] and "&lt;script&gt;" in evil["body"]["content"]
    assert evil["subject"] == f"cobra CRM - Interesse: {EVIL}"
    runs = setup.camp.runs(action_id=act)
    assert runs["status"].tolist() == ["done", "done"] and runs["error"].isna().all()
    log = privacy.transfer_log(setup.crm)
    assert set(log["trigger"]) == {"campaign"} and set(log["channel"]) == {"teams_campaign"}
    assert set(log["ms_account"]) == {SANDBOX_DEFAULT_UPN} and set(log["user_name"]) == {"admin"}
    assert all("company" in list(f) for f in log["fields"])  # the template's field is logged too
    assert setup.crm.contacts(1)["type_code"].tolist() == ["TS"]


def test_blocked_addresses_are_skipped_or_failed_as_the_option_says(
        setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    setup.set_campaign_account()
    privacy.set_flag(setup.crm, 3, "no_campaign")
    skip = setup.action()
    report = setup.camp.add_teams_action(setup.reaction, "Melden", recipients=setup.people[1:2], skip_blocked=False)
    outcomes = {o.run_id: o for o in setup.camp.record_reaction(setup.reaction, [3]).outcomes}
    runs = setup.camp.runs().set_index("action_id")
    assert runs.loc[skip, "status"] == "skipped" and runs.loc[report, "status"] == "failed"
    assert "flag:no_campaign" in str(outcomes[int(runs.loc[report, "id"])].error)
    assert messages(fast_crm_tenant) == []
    assert privacy.transfer_log(setup.crm)["outcome"].tolist() == ["blocked", "blocked"]


def test_delayed_action_whose_worker_starts_late_sends_exactly_once(
    setup: Setup, fast_crm_tenant: SandboxAdmin, tmp_path: Path,
) -> None:
    setup.set_campaign_account()
    setup.action(timing="delay", delay=1)
    assert setup.camp.record_reaction(setup.reaction, [1]).outcomes == []
    time.sleep(1.5)
    assert messages(fast_crm_tenant) == [] and setup.camp.runs()["status"].tolist() == ["due"]
    for _ in range(2):  # the second worker finds nothing left to do
        worker = start_worker(setup.db, tmp_path / "worker.log", "--once")
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
    assert "runs: 1 done" in out or "runs: none" in out
    assert len(messages(fast_crm_tenant)) == 1
    assert setup.camp.runs()["status"].tolist() == ["done"]


def test_two_workers_started_together_never_double_send(
    setup: Setup, fast_crm_tenant: SandboxAdmin, tmp_path: Path, backend: str,
) -> None:
    setup.set_campaign_account()
    setup.action(timing="delay", delay=2)
    setup.camp.record_reaction(setup.reaction, [1, 2, 3])
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [start_worker(setup.db, log, "--interval", "0.2") for log in logs]
    try:
        wait_for(lambda: set(setup.camp.runs()["status"]) == {"done"}, timeout=90, what="three runs done")
        time.sleep(1)  # give a double send the chance to show
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outs = [w.communicate(timeout=60)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [log.read_text()[-2000:] for log in logs]
    delivered = messages(fast_crm_tenant)
    assert len(delivered) == 3
    assert len({a["id"] for m in delivered for a in m["attachments"]}) == 3
    if backend == "duckdb":  # one active worker; on PostgreSQL both work, claiming runs with row locks
        assert any("stands by" in log.read_text() for log in logs), [log.read_text() for log in logs]
        assert sum("runs: 3 done" in out for out in outs) == 1, outs
    assert setup.crm.store.one("SELECT count(*) FROM campaign_worker_lease") == 0  # released on SIGTERM


def test_worker_finishes_what_a_dead_recorder_enqueued(setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    """The recorder wrote the outbox batch and died before delivering: the worker delivers it, once."""
    setup.set_campaign_account()
    setup.action()
    setup.camp.record_reaction(setup.reaction, [1], deliver=False)
    dead = Claimer("session:gone", 2**22 + 7, Claimer.here("x", 1).host, 900)  # a pid no process has
    [run_id] = claim_due(setup.crm, dead)
    ctx = setup.crm.store.df(_CONTEXT_SQL, [run_id])
    record = ctx.astype(object).where(ctx.notna(), None).iloc[0].to_dict()
    batch = _plan_and_enqueue(setup.crm, setup.camp.teams, dead, record)
    assert isinstance(batch, str)
    assert messages(fast_crm_tenant) == []
    stats = run_worker(setup.db, once=True)
    assert stats.active and dict(stats.outcomes) == {"done": 1}
    assert len(messages(fast_crm_tenant)) == 1
    assert setup.camp.runs()[["status", "batch_id"]].values.tolist() == [["done", batch]]


@pytest.mark.parametrize("broken", ["missing", "wrong_password"])
def test_account_trouble_fails_with_reason_and_is_retried_after_the_fix(
    setup: Setup, fast_crm_tenant: SandboxAdmin, monkeypatch: pytest.MonkeyPatch, broken: str,
) -> None:
    monkeypatch.setenv("CRMKIT_CAMPAIGN_RETRY_S", "1")
    setup.set_campaign_account()
    setup.action(record_contact=True)  # saved while the account works: its recipients are resolved as it
    if broken == "wrong_password":
        setup.set_campaign_account("wrong-Pass-9")
    else:
        m365 = Microsoft365(setup.crm)
        try:
            m365.campaign.clear()
        finally:
            m365.close()
    setup.camp.close()  # the session's signed-in client goes with it; the runs sign in anew
    outcomes = setup.camp.record_reaction(setup.reaction, [1, 2, 3]).outcomes
    reason = "No campaign account is set up" if broken == "missing" else "password"
    assert [o.status for o in outcomes] == ["retry"] * 3
    assert all("Campaign account cannot sign in" in str(o.error) and reason in str(o.error) for o in outcomes), \
        outcomes
    runs = setup.camp.runs()
    assert set(runs["status"]) == {"retry"} and runs["error"].str.contains(reason).all()
    assert messages(fast_crm_tenant) == []
    time.sleep(1.1)
    stats = run_worker(setup.db, once=True)  # still broken: retried, fails again, nothing lost
    assert dict(stats.outcomes) == {"retry": 3}
    assert setup.camp.runs()["attempts"].tolist() == [2, 2, 2]
    setup.set_campaign_account()
    time.sleep(2.1)  # the second backoff doubles to 2 s
    stats = run_worker(setup.db, once=True)
    assert dict(stats.outcomes) == {"done": 3}
    assert len(messages(fast_crm_tenant)) == 3
    assert len(setup.crm.contacts(type_code="TS")) == 3
    assert json.loads(setup.camp.runs()["status"].to_json(orient="values")) == ["done"] * 3


def test_a_users_manual_send_never_delivers_a_pending_campaign_batch(
        setup: Setup, fast_crm_tenant: SandboxAdmin) -> None:
    """Resuming is per sender: the user's own resume must not post campaign messages as the user."""
    from support.sandbox import sign_in

    setup.set_campaign_account()
    setup.action()
    setup.camp.record_reaction(setup.reaction, [1], deliver=False)
    dead = Claimer("session:gone", 2**22 + 7, Claimer.here("x", 1).host, 900)
    [run_id] = claim_due(setup.crm, dead)
    ctx = setup.crm.store.df(_CONTEXT_SQL, [run_id])
    _plan_and_enqueue(setup.crm, setup.camp.teams, dead, ctx.astype(object).where(ctx.notna(), None).iloc[0].to_dict())
    sign_in(setup.crm, setup.people[2])
    try:
        setup.crm.teams.send(2, to=setup.people[1:2], subject="Von Hand")
    finally:
        setup.crm.teams.close()
    assert [m["subject"] for m in messages(fast_crm_tenant)] == ["cobra CRM - Von Hand"]
    assert dict(run_worker(setup.db, once=True).outcomes) == {"done": 1}
    campaign = [m for m in messages(fast_crm_tenant) if m["subject"] != "cobra CRM - Von Hand"]
    assert [m["from"]["user"]["id"] for m in campaign] == [campaign_sender_id(fast_crm_tenant)]
