"""Campaign run claims on PostgreSQL: several processes claim at once, each run goes to exactly one of them,
no claimer waits for another's rows, and a claim whose holder expired is taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import ROOT

from crmkit.campaigns import Claimer
from crmkit.campaigns._runner import claim_runs
from crmkit.store import Store
from crmkit.teams.outbox import utcnow

pytestmark = pytest.mark.postgres

# A claimer of another machine that stopped renewing: its claims ran out a minute ago.
GONE = "worker:far-host:4242:deadbeef"

# One claiming process: waits for the go file, then claims in batches until nothing is left to claim, and
# prints per claim call the ids it got and how often the call's transaction ran (more than once: it collided
# with another claimer and was retried).
CHILD = r"""
import json, os, sys, time
from crmkit.campaigns import Claimer
from crmkit.campaigns._runner import claim_runs
from crmkit.store import Store

url, go, limit, gone = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
selects = []
store = Store(url, tracer=lambda sql, _p: selects.append(1) if sql.startswith("SELECT id FROM campaign_runs WHERE "
                                                                             "status IN ('due', 'retry')") else None)
claimer = Claimer.here("claims-test", 600)
print(json.dumps({"holder": claimer.holder}), flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
while True:
    selects.clear()
    got = claim_runs(store, claimer, limit=limit)
    print(json.dumps([got, len(selects)]), flush=True)
    if not got and not store.one("SELECT count(*) FROM campaign_runs WHERE status = 'due' OR claimed_by = ?", [gone]):
        break
"""


def add_runs(store: Store, due: int, expired: int = 0) -> None:
    """``due`` runs due now, then ``expired`` runs running under GONE's claim that ran out (no other table
    is needed: a claim looks at campaign_runs alone)."""
    now = utcnow()
    store.execute(
        "INSERT INTO campaign_runs (action_id, recorded_reaction_id, address_id, status, created_at, due_at) "
        "SELECT 1, i, i, 'due', ?, ? FROM generate_series(1, ?) AS g(i)", [now, now - timedelta(minutes=5), due])
    if expired:
        store.execute(
            "INSERT INTO campaign_runs (action_id, recorded_reaction_id, address_id, status, created_at, due_at, "
            "attempts, claimed_by, claim_pid, claim_host, claim_expires_at) "
            "SELECT 2, i, i, 'running', ?, ?, 1, ?, 4242, 'far-host', ? FROM generate_series(1, ?) AS g(i)",
            [now, now - timedelta(minutes=10), GONE, now - timedelta(minutes=1), expired])


def test_four_processes_claim_1000_runs_each_exactly_once(pg_database_url: str, tmp_path: Path) -> None:
    store = Store(pg_database_url)
    add_runs(store, due=600, expired=400)
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, pg_database_url, str(go), "10", GONE], cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    try:
        holders = [json.loads(c.stdout.readline() or "{}").get("holder") for c in children]  # type: ignore[union-attr]
        assert all(holders), [c.stderr.read() for c in children if c.poll() is not None]  # type: ignore[union-attr]
        go.touch()  # all four start claiming together
        outputs = [c.communicate(timeout=120) for c in children]
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err[-3000:]
    calls = [json.loads(line) for out, _err in outputs for line in out.splitlines()]
    claimed = {h: [i for line in out.splitlines() for i in json.loads(line)[0]] for h, (out, _) in
               zip(holders, outputs, strict=True)}
    counts = Counter(i for ids in claimed.values() for i in ids)
    twice = sorted(i for i, n in counts.items() if n > 1)
    assert not twice, f"{len(twice)} runs claimed more than once, e.g. {twice[:10]}"
    all_ids = {r[0] for r in store.read(lambda tx: tx.rows("SELECT id FROM campaign_runs"))}
    assert set(counts) == all_ids and len(all_ids) == 1000
    assert all(claimed.values()), {h: len(ids) for h, ids in claimed.items()}  # they really claimed side by side
    retried = [ids for ids, transactions in calls if transactions > 1]
    assert not retried, f"{len(retried)} of {len(calls)} claims collided with another claimer and ran again"
    # The database agrees: every run is running under the claimer that reported it, claimed once more than
    # before (the due ones once, the expired ones taken over once).
    rows = store.read(lambda tx: tx.rows("SELECT id, claimed_by, attempts, action_id FROM campaign_runs"))
    owner = {i: h for h, ids in claimed.items() for i in ids}
    assert all(claimed_by == owner[i] for i, claimed_by, _a, _act in rows)
    assert Counter((act, attempts) for _i, _c, attempts, act in rows) == {(1, 1): 600, (2, 2): 400}
    assert not store.one("SELECT count(*) FROM campaign_runs WHERE status <> 'running' OR claim_expires_at < ?",
                         [utcnow()])


def test_a_claim_in_progress_holds_its_rows_and_another_claimer_takes_the_next_ones(pg_database_url: str) -> None:
    add_runs(Store(pg_database_url), due=30)
    paused, resume = threading.Event(), threading.Event()
    ready_selects: list[str] = []

    def hold_before_marking(sql: str, _params: Any) -> None:  # A stops inside its claim, its rows selected
        if sql.startswith("SELECT id FROM campaign_runs WHERE status IN ('due', 'retry')"):
            ready_selects.append(sql)
        if sql.startswith("UPDATE campaign_runs SET status = 'running'"):
            paused.set()
            resume.wait(30)

    a_store, b_store = Store(pg_database_url, tracer=hold_before_marking), Store(pg_database_url, lock_timeout=3)
    got: dict[str, list[int]] = {}
    a = threading.Thread(target=lambda: got.update(a=claim_runs(a_store, Claimer.here("a", 600), limit=10)))
    a.start()
    try:
        assert paused.wait(30)
        # B neither waits for A's rows nor takes them: it gets the next ten while A's transaction is open.
        got["b"] = claim_runs(b_store, Claimer.here("b", 600), limit=10)
    finally:
        resume.set()
        a.join(30)
    assert got["a"] == list(range(1, 11)) and len(ready_selects) == 1  # A's claim went through once, as chosen
    assert got["b"] == list(range(11, 21))
    assert a_store.one("SELECT count(*) FROM campaign_runs WHERE attempts = 1") == 20


def test_an_expired_claim_is_taken_over_once(pg_database_url: str) -> None:
    store = Store(pg_database_url)
    add_runs(store, due=3)
    far = Claimer("worker:far-host:7:feedface", 7, "far-host", ttl=600)  # another machine: only expiry counts
    me, other = Claimer.here("me", 600), Claimer.here("other", 600)
    assert claim_runs(store, far) == [1, 2, 3]
    assert claim_runs(store, me) == []  # a live claim of another machine is left alone
    store.execute("UPDATE campaign_runs SET claim_expires_at = ? WHERE id IN (1, 2)", [utcnow() - timedelta(seconds=1)])
    assert claim_runs(store, me) == [1, 2]
    assert claim_runs(store, other) == []  # taken over once: now my live claim
    rows = store.read(lambda tx: tx.rows("SELECT id, claimed_by, attempts FROM campaign_runs ORDER BY id"))
    assert rows == [(1, me.holder, 2), (2, me.holder, 2), (3, far.holder, 1)]
