"""Four `crmkit worker` processes on one PostgreSQL database deliver one queued send (1,000 messages; ×CRMKIT_SOAK
in the soak) exactly once, under injected faults, with one worker SIGKILLed mid-way, within Teams' limits for all
four together.

The sandbox's own throttle is raised out of the way here, so that it counts instead of refusing: every message
it stored carries its arrival time (the id is the tenant clock's epoch millisecond), and from those the test
reads how many posts Teams accepted within Teams' limit per app per tenant (20 a second) and in any one chat (at
most one a second). crmkit itself paces at Teams' real limits (no CRMKIT_TEAMS_* override).
The sandbox stands for Microsoft's servers but shares the workers' 2 cores: starved of a CPU, it stores the
requests that queued meanwhile at once, and their stamps bunch (24 and 27 in one second were seen under load,
though the workers had sent them paced). Its threads run at a higher CPU priority here, as in bench/workers_pg.py,
and the tenant limit is read over sliding 5-second windows (at most 100), which a stall of a few hundred ms
cannot push over while a pacing that is not shared can (four workers on their own: ~74 a second, ~370 in 5 s).
The most in one second is reported beside it; bench/workers_pg.py measures the real limits (429 responses).
Without the pacing the workers share through the database, four workers post at four times the rate.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from conftest import _migrated_template
from support.postgres import PgCluster, fresh_database_url
from support.sandbox import SandboxAdmin, SandboxProc
from support.soak import figure, scaled
from support.workers import SANDBOX_NICE, most_per_second, outbox_counts, queue_send, renice, start, stop, worker_argv

from crmkit.teams.outbox import holder_process

pytestmark = pytest.mark.slow  # four workers against a sandbox on PostgreSQL (PostgreSQL only: it is about sharing)

# make test's size: 1,000 messages (50 s at Teams' 20/s: the test was make test's slowest at 2,000, 194 s);
# `python -m bench --soak` runs it CRMKIT_SOAK times larger (5,000 at the default)
RECORDS = scaled(25)
PEOPLE = 40  # one-on-one chats: at 1/s each, 40 chats let the tenant's 20/s be the limit
TOTAL = RECORDS * PEOPLE
WORKERS = 4
KILL_AT = scaled(300)  # sent messages when one worker is SIGKILLed
SUBJECT = "Vier Worker"
TENANT_LIMIT = 20  # Teams: chat-message posts per second per app per tenant
WINDOW_S = 5  # the tenant limit is read over windows this long (a sandbox stall shifts stamps, see above)
DEADLINE_S = scaled(300)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh migrated PostgreSQL database (PostgreSQL only: no backend axis)."""
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        yield url


@pytest.fixture
def sandbox_first(sandbox_proc: SandboxProc) -> Iterator[None]:
    """The session's sandbox at a higher CPU priority for one test (root only; otherwise equal priority)."""
    renice(sandbox_proc.proc.pid, SANDBOX_NICE)
    yield
    renice(sandbox_proc.proc.pid, 0)


def test_four_workers_deliver_one_send_exactly_once_within_teams_limits(
    crm_tenant: SandboxAdmin, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_first: None,
) -> None:
    crm = queue_send(pg_url, crm_tenant, records=RECORDS, people=PEOPLE, subject=SUBJECT)  # left to the workers
    assert outbox_counts(crm.store) == {"pending": TOTAL}

    crm_tenant.put("limits", {"chat_post_per_app_per_s": 1000, "chat_post_per_chat_per_s": 100})  # count, not refuse
    crm_tenant.put("faults", {"rate": 0.10, "statuses": [429, 500, 502, 503, 504], "drop_rate": 0.01,
                              "timeout_after_commit_rate": 0.02, "hang_s": 10, "retry_after_s": 1, "seed": 11})
    monkeypatch.setenv("CRMKIT_GRAPH_TIMEOUT", "3")
    log = tmp_path / "workers.log"
    workers = start([worker_argv(pg_url)] * WORKERS, log, capture=True)
    killed: subprocess.Popen[str] | None = None
    held: list[str] = []
    started = time.monotonic()
    try:
        while True:
            counts = outbox_counts(crm.store)
            if killed is None and counts.get("sent", 0) >= KILL_AT:
                # The worker holding the most open rows: a takeover must then really happen.
                leases = crm.store.df("SELECT id, claimed_by FROM outbox WHERE status IN ('pending', 'sending') "
                                      "AND claimed_by IS NOT NULL")
                pids = {p.pid: p for p in workers}
                by_pid = Counter(holder_process(h)[1] for h in leases["claimed_by"])
                pid = next(p for p, _ in by_pid.most_common() if p in pids)
                killed = pids[pid]
                killed.send_signal(signal.SIGKILL)
                killed.wait(30)  # reaped: the others see its process is gone
                held = [r.id for r in leases.itertuples() if holder_process(r.claimed_by)[1] == pid]
            if not counts.get("pending") and not counts.get("sending"):
                break
            dead = [p for p in workers if p is not killed and p.poll() is not None]
            if dead:
                pytest.fail(f"a worker exited ({dead[0].returncode}); see {log}:\n{log.read_text()[-3000:]}")
            if time.monotonic() - started > DEADLINE_S:
                pytest.fail(f"not delivered in {DEADLINE_S} s: {counts}; see {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        seconds = time.monotonic() - started
    finally:
        outs = [out for p, out in zip(workers, stop(workers), strict=True) if p is not killed]
        crm_tenant.put("faults", {"rate": 0.0, "drop_rate": 0.0, "timeout_after_commit_rate": 0.0})
        crm_tenant.put("limits", {"chat_post_per_app_per_s": 20, "chat_post_per_chat_per_s": 1})
    assert killed is not None, "the send was delivered before a worker could be killed"
    assert held, "the killed worker held no rows: nothing was taken over"
    assert all(p.returncode == 0 for p in workers if p is not killed), log.read_text()[-3000:]
    assert all("queued messages delivered" in out for out in outs), outs

    counters = crm_tenant.counters()
    assert any("timeout_after_commit" in k for k in counters), counters  # the ambiguous case really happened
    delivered = [m for m in crm_tenant.get("messages")["value"] if m.get("subject") == f"cobra CRM - {SUBJECT}"]
    markers = Counter(a["id"] for m in delivered for a in m["attachments"])
    assert len(delivered) == TOTAL, f"{len(delivered)} messages in the sandbox for {TOTAL}"
    assert max(markers.values()) == 1, "a message was delivered twice"

    outbox = crm.store.df("SELECT id, status, marker, message_id, claimed_by FROM outbox")
    assert outbox["status"].eq("sent").all(), outbox["status"].value_counts()
    assert set(outbox["marker"]) == set(markers)
    assert set(outbox["message_id"]) == {m["id"] for m in delivered}
    finishers = outbox.set_index("id")["claimed_by"].map(lambda h: holder_process(h)[1] if h else None)
    assert not finishers.loc[held].eq(killed.pid).any()  # every row the killed worker held, another one finished
    assert finishers.nunique() >= WORKERS - 1, finishers.value_counts()  # the survivors all delivered

    transfers = crm.store.df("SELECT message_id, message_key, outcome FROM transfer_log")
    assert len(transfers) == TOTAL and transfers["outcome"].eq("sent").all()  # transfer-log rows = deliveries
    assert transfers["message_key"].is_unique and set(transfers["message_id"]) == {m["id"] for m in delivered}

    stamps = [int(m["id"]) for m in delivered]
    per_chat: defaultdict[str, list[int]] = defaultdict(list)
    for m in delivered:
        per_chat[m["chatId"]].append(int(m["id"]))
    closest = min(b - a for s in per_chat.values() for a, b in zip(sorted(s), sorted(s)[1:], strict=False))
    most = most_per_second(stamps)
    most_in_window = most_per_second(stamps, WINDOW_S * 1000)
    test = "test_four_workers_deliver_one_send_exactly_once_within_teams_limits"
    figure(test, "seconds", round(seconds, 1))
    figure(test, "most_per_second", most)
    figure(test, f"most_in_{WINDOW_S}_seconds", most_in_window)
    figure(test, "closest_in_a_chat_ms", closest)
    figure(test, "rows_taken_over", len(held))
    print(json.dumps({"seconds": round(seconds, 1), "msg_per_s": round(TOTAL / seconds, 1), "most_per_second": most,
                      f"most_in_{WINDOW_S}_s": most_in_window,
                      "closest_in_a_chat_ms": closest, "taken_over": len(held),
                      "finishers": {str(k): int(v) for k, v in finishers.value_counts().items()},
                      "injected": {k: v for k, v in counters.items() if "injected" in k or "timeout" in k
                                   or "dropped" in k}}))
    assert most_in_window <= TENANT_LIMIT * WINDOW_S, (
        f"{most_in_window} posts accepted in {WINDOW_S} seconds (Teams allows {TENANT_LIMIT} a second)")
    assert closest >= 1000, f"two posts into one chat {closest} ms apart (Teams allows one a second)"
    assert len(pd.unique(outbox["marker"])) == TOTAL
