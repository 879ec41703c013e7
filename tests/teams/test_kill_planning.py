"""A send whose planning dies (SIGKILL after two of three chunks were staged) leaves nothing behind.

Staged outbox rows are inert (no batch, never delivered); the next ``resume`` deletes those whose
planning process is gone, and keeps those of a send still being planned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from support.sandbox import ROOT, SandboxAdmin, colleagues

import crmkit
from crmkit.teams.outbox import STAGED, OutboxMessage, add_messages, purge_abandoned_staging, staging_id

pytestmark = pytest.mark.sandbox

RECORDS = 2_500  # three planning chunks of 1,000
CHILD = """
import json, os, signal, sys
import crmkit
import crmkit.teams.staging as staging

real, calls = staging._stage_rows, []

def stage_then_die(tx, *args):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # two chunks staged and committed, the third never
    real(tx, *args)

staging._stage_rows = stage_then_die
crm = crmkit.open(sys.argv[1])
crm.teams.send(list(range(1, int(sys.argv[2]) + 1)), to=json.loads(sys.argv[3]), subject="Half planned")
"""


def _messages(crm_tenant: SandboxAdmin, subject: str) -> list[dict[str, object]]:
    return [m for m in crm_tenant.get("messages")["value"] if m.get("subject") == f"cobra CRM - {subject}"]


def test_planning_killed_mid_way_leaves_nothing_to_send(sender: crmkit.CRM, crm_tenant: SandboxAdmin,
                                                        db_location: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"company": [f"Firma {i:04d} GmbH" for i in range(RECORDS)]})
    sender.store.write(lambda tx: (tx.register("f", frame), tx.execute(
        "INSERT INTO addresses (id, kind, company, city, country, created_by, created_at, modified_by, modified_at) "
        "SELECT 100 + row_number() OVER (), 'company', company, 'Berlin', 'DE', 'admin', now(), 'admin', now() "
        "FROM f")))
    first = int(sender.store.one("SELECT min(id) FROM addresses WHERE id > 100"))
    people = colleagues(crm_tenant, 1)
    log = tmp_path / "planner.log"
    with log.open("w") as out:
        proc = subprocess.run([sys.executable, "-c", CHILD.replace("range(1, ", f"range({first}, "),
                               db_location, str(first + RECORDS - 1), json.dumps(people)],
                              cwd=ROOT, stdout=out, stderr=out, timeout=600)
    assert proc.returncode == -9, log.read_text()[-3000:]

    store = crmkit.open(db_location).store
    left = store.df("SELECT batch_id, status FROM outbox")
    assert len(left) == 2_000 and left["status"].eq(STAGED).all()  # two chunks, inert
    assert int(store.one("SELECT count(*) FROM outbox_batches")) == 0

    again = crmkit.open(db_location)
    assert again.teams.resume().empty  # nothing of the dead send is delivered …
    assert int(again.store.one("SELECT count(*) FROM outbox")) == 0  # … and its rows are gone
    result = again.teams.send([1, 2], to=people, subject="After the crash")
    assert result["status"].eq("sent").all() and len(result) == 2
    again.teams.close()
    assert _messages(crm_tenant, "Half planned") == []
    assert len(_messages(crm_tenant, "After the crash")) == 2
    assert int(again.store.one("SELECT count(*) FROM outbox")) == 2


def _stage(crm: crmkit.CRM, batch_id: str) -> None:
    message = OutboxMessage(payload={"body": {"content": "x"}}, marker="m", chat_kind="oneOnOne", members=["a", "b"],
                            recipients=[{"id": "b", "name": "B"}], address_ids=[1], field_names={"1": ["company"]})
    crm.store.write(lambda tx: (add_messages(tx, batch_id, [message]),
                                tx.execute("UPDATE outbox SET status = ? WHERE batch_id = ?", [STAGED, batch_id])))


def test_which_staged_rows_count_as_abandoned(crm: crmkit.CRM) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    now = int(time.time())
    mine = staging_id()  # this process: still planning
    assert mine.split(":")[2] == str(os.getpid())
    elsewhere_recent = f"staging:other-host:1234:{now - 60}:x"  # another machine, can't tell: keep for a day
    elsewhere_old = f"staging:other-host:1234:{now - 2 * 86400}:x"
    died_here = mine.replace(f":{os.getpid()}:", f":{dead.pid}:")
    legacy = "0123456789abcdef0123456789abcdef"  # no owner recorded
    for batch_id in (mine, elsewhere_recent, elsewhere_old, died_here, legacy):
        _stage(crm, batch_id)
    assert purge_abandoned_staging(crm.store) == 3
    kept = {r[0] for r in crm.store.read(lambda tx: tx.rows("SELECT batch_id FROM outbox"))}
    assert kept == {mine, elsewhere_recent}
    assert purge_abandoned_staging(crm.store) == 0
