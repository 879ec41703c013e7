"""Exactly once: 2,000 messages under injected faults, the sender SIGKILLed twice and resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from support.sandbox import ROOT, SandboxAdmin, colleagues, sign_in
from support.soak import figure, scaled

import crmkit
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams import activation

pytestmark = pytest.mark.slow  # against a sandbox; slow is its one tier

RECORDS = scaled(400)  # x 5 recipients: 2,000 messages (x CRMKIT_SOAK under bench --soak)
SUBJECT = "Exactly once"
# A reconciliation asks Graph for the window since the row's first claim, never for the whole chat
# (at x1 a chat ends with 400 messages, 8 pages; at x5 with 2,000, 40 pages). The window is as long
# as the row stayed unconfirmed, seconds mostly, minutes for a row whose sender was killed or whose
# attempts ran out; so the pages are bounded by that, here by a quarter of a chat at x5. The sandbox
# counts the page number of every list it serves, and the lists served without a date filter.
MAX_READ_BACK_PAGES = 10
CHILD = """
import json, sys
import crmkit
crm = crmkit.open(sys.argv[1])
if sys.argv[2] == "send":
    crm.teams.send(list(range(1, int(sys.argv[3]) + 1)), to=json.loads(sys.argv[4]), subject=sys.argv[5])
else:
    crm.teams.resume()
"""


def _sent(db: str) -> int:
    return int(crmkit.open(db).store.one("SELECT count(*) FROM outbox WHERE status = 'sent'"))


def _run_until(args: list[str], db: str, kill_at: int | None, log: Path) -> None:
    with log.open("a") as out:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, db, *args], cwd=ROOT, stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + scaled(600)
            while proc.poll() is None and time.monotonic() < deadline:
                if kill_at is not None and _sent(db) >= kill_at:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    return
                time.sleep(0.3)
            if proc.poll() is None:
                pytest.fail(f"sender did not finish; see {log}")
        finally:
            if proc.poll() is None:  # never leave a sender running into the next test's tenant
                proc.kill()
                proc.wait()
    assert kill_at is None, f"the sender finished before reaching {kill_at} sent messages; kill came too late"
    assert proc.returncode == 0, log.read_text()[-3000:]


# On PostgreSQL the same 2,000 go exactly once through kills and faults with 4 workers sharing the outbox
# (tests/resilience/test_pg_workers.py); this single sender's variant there took 233 s of make test's 45 min.
@pytest.mark.duckdb_only
def test_two_thousand_messages_exactly_once_through_kills_and_faults(
    crm_tenant: SandboxAdmin, db_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Exactly-once, not speed: raise the limits on both sides so 2,000 messages take a minute, not ten.
    crm_tenant.put("limits", {"chat_post_per_app_per_s": 400, "chat_post_per_chat_per_s": 100})
    monkeypatch.setenv("CRMKIT_TEAMS_TENANT_RPS", "300")
    monkeypatch.setenv("CRMKIT_TEAMS_CHAT_RPS", "80")
    db = db_location  # a DuckDB file or a PostgreSQL database: the killed and resumed senders open it by name
    crm = crmkit.open(db)
    activation.enable(crm)
    frame = pd.DataFrame({"company": [f"Firma {i:04d} GmbH" for i in range(RECORDS)]})
    crm.store.write(lambda tx: (tx.register("f", frame), tx.execute(
        "INSERT INTO addresses (id, kind, company, city, country, created_by, created_at, modified_by, modified_at) "
        "SELECT row_number() OVER (), 'company', company, 'Berlin', 'DE', 'admin', now(), 'admin', now() FROM f")))
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    crm.teams.close()
    people = colleagues(crm_tenant, 5)
    crm_tenant.put("faults", {"rate": 0.10, "statuses": [429, 500, 502, 503, 504], "drop_rate": 0.01,
                           "timeout_after_commit_rate": 0.02, "hang_s": 30, "retry_after_s": 1, "seed": 7})
    monkeypatch.setenv("CRMKIT_GRAPH_TIMEOUT", "3")
    log = tmp_path / "sender.log"
    total = RECORDS * len(people)

    try:
        _run_until(["send", str(RECORDS), json.dumps(people), SUBJECT], db, kill_at=total // 5, log=log)
        _run_until(["resume"], db, kill_at=total * 3 // 5, log=log)
        _run_until(["resume"], db, kill_at=None, log=log)
    finally:
        crm_tenant.put("faults", {"rate": 0.0, "drop_rate": 0.0, "timeout_after_commit_rate": 0.0})
        crm_tenant.put("limits", {"chat_post_per_app_per_s": 20, "chat_post_per_chat_per_s": 1})

    counters = crm_tenant.counters()
    assert any("timeout_after_commit" in k for k in counters), counters  # the ambiguous case really happened
    depth = {int(k.rsplit(" ", 1)[1]): n for k, n in counters.items() if k.startswith("chat messages listed: page ")}
    deepest = max(depth, default=0)
    test = "test_two_thousand_messages_exactly_once_through_kills_and_faults"
    figure(test, "read_backs", depth.get(1, 0))
    figure(test, "read_back_pages_max", deepest)
    figure(test, "read_back_pages_bound", MAX_READ_BACK_PAGES)
    figure(test, "read_back_pages_histogram", dict(sorted(depth.items())))
    unfiltered = counters.get("chat messages listed: unfiltered", 0)
    figure(test, "read_backs_unfiltered", unfiltered)
    delivered = [m for m in crm_tenant.get("messages")["value"] if m.get("subject") == f"cobra CRM - {SUBJECT}"]
    markers = Counter(a["id"] for m in delivered for a in m["attachments"])
    assert len(delivered) == total
    assert max(markers.values()) == 1, "a message was delivered twice"
    store = crmkit.open(db).store
    outbox = store.df("SELECT status, marker, message_id FROM outbox")
    assert outbox["status"].eq("sent").all()
    assert set(outbox["marker"]) == set(markers)
    assert set(outbox["message_id"]) == {m["id"] for m in delivered}
    log_rows = store.df("SELECT message_id, message_key, outcome FROM transfer_log")
    assert len(log_rows) == total and log_rows["outcome"].eq("sent").all()
    assert log_rows["message_key"].is_unique and set(log_rows["message_id"]) == {m["id"] for m in delivered}
    assert depth.get(1, 0) > 0, counters  # reconciliations really read the chat back
    assert unfiltered == 0, counters  # every read-back asked for its window only
    assert deepest <= MAX_READ_BACK_PAGES, depth
