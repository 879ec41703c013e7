"""A campaign worker SIGKILLed mid-way through 60 runs; a new worker finishes them, each exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support.sandbox import ROOT, SandboxAdmin, colleagues
from support.soak import scaled

import crmkit
from crmkit.auth import Microsoft365
from crmkit.campaigns import Campaigns
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from crmkit.teams import activation

pytestmark = pytest.mark.slow  # against a sandbox; slow is its one tier

ADDRESSES = scaled(30)  # x 2 actions (immediately, delay) = 60 runs (x CRMKIT_SOAK under bench --soak)
RUNS = 2 * ADDRESSES
KILL_AT = scaled(12)  # done runs when the first worker is killed


def _worker(db: str, log: Path) -> subprocess.Popen[str]:
    with log.open("a") as err:
        return subprocess.Popen([sys.executable, "-m", "crmkit.cli", "--db", db, "worker", "--interval", "0.5"],
                                cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=err, env=dict(os.environ))


def _done(db: str) -> int:
    store = crmkit.open(db).store
    try:
        return int(store.one("SELECT count(*) FROM campaign_runs WHERE status = 'done'"))
    finally:
        store.close()


def _wait(proc: subprocess.Popen[str], db: str, log: Path, until: int) -> int:
    deadline = time.monotonic() + scaled(240)
    while (done := _done(db)) < until:
        if proc.poll() is not None:
            pytest.fail(f"the worker exited ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"only {done} of {until} runs done; see {log}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return done


def test_worker_killed_mid_campaign_then_resumed_runs_each_action_once(
    fast_crm_tenant: SandboxAdmin, tmp_path: Path, db_location: str,
) -> None:
    db = db_location  # a DuckDB file (one active worker) or a PostgreSQL database (every worker active)
    crm = crmkit.open(db)
    activation.enable(crm)
    ids = [crm.add_address(company=f"Kunde {i:02d} GmbH", city="Köln", country="DE") for i in range(ADDRESSES)]
    m365 = Microsoft365(crm)
    try:
        m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
    finally:
        m365.close()
    camp = Campaigns(crm)
    activity = camp.add_activity(camp.add_campaign("Herbst 2026"), "Anruf-Aktion")
    camp.add_participants(activity, ids)
    reaction = camp.add_reaction(activity, "Rückruf erbeten")
    person = colleagues(fast_crm_tenant, 1)
    camp.add_teams_action(reaction, "Sofort melden", recipients=person, message="Bitte {company} anrufen.")
    camp.add_teams_action(reaction, "Später melden", recipients=person, timing="delay", delay=1)
    recorded = camp.record_reaction(reaction, ids, deliver=False)  # all 60 runs are left to the worker
    assert len(recorded.runs) == RUNS and recorded.outcomes == []
    camp.close()
    crm.store.close()

    log = tmp_path / "worker.log"
    first = _worker(db, log)
    try:
        at_kill = _wait(first, db, log, KILL_AT)
        first.send_signal(signal.SIGKILL)
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(60)  # reaped: the next worker sees the lease holder's pid is gone
        if first.stdout is not None:
            first.stdout.close()
    assert at_kill < RUNS, f"all {RUNS} runs were done before the kill; nothing left to resume"

    second = _worker(db, log)
    try:
        _wait(second, db, log, RUNS)
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, log.read_text()[-3000:]
    assert "runs:" in out

    store = crmkit.open(db).store
    runs = store.df("SELECT id, status, batch_id FROM campaign_runs ORDER BY id")
    assert len(runs) == RUNS and runs["status"].eq("done").all(), runs["status"].value_counts()
    assert runs["batch_id"].notna().all() and runs["batch_id"].is_unique  # one outbox batch per run
    outbox = store.df("SELECT batch_id, status, marker, message_id FROM outbox")
    assert Counter(outbox["batch_id"]) == Counter(runs["batch_id"])  # one message per run
    assert outbox["status"].eq("sent").all()

    delivered = fast_crm_tenant.get("messages")["value"]
    markers = Counter(a["id"] for m in delivered for a in m["attachments"])
    assert len(delivered) == RUNS, f"{len(delivered)} messages delivered for {RUNS} runs"
    assert max(markers.values()) == 1, "a message was delivered twice"
    assert set(outbox["marker"]) == set(markers)
    assert set(outbox["message_id"]) == {m["id"] for m in delivered}

    transfers = store.df("SELECT message_id, message_key, outcome FROM transfer_log")
    assert len(transfers) == RUNS and transfers["outcome"].eq("sent").all()
    assert transfers["message_id"].is_unique and set(transfers["message_id"]) == {m["id"] for m in delivered}
    assert store.one("SELECT count(*) FROM campaign_worker_lease") == 0  # released on SIGTERM
