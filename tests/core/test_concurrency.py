"""Four real processes write one database at the same time; nothing is lost, no lock error surfaces.

DuckDB lets one process at a time write a file; the store attaches per operation and waits out the
other processes' locks. PostgreSQL lets them all write and fails one of two conflicting transactions,
which the store retries. Here a settings writer, a user-settings writer, a demo-data loader and an
address writer run together, then every row is counted (on both backends).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.soak import scaled

import crmkit

pytestmark = pytest.mark.core

ROUNDS = scaled(25)  # setting changes / addresses per writer process (x CRMKIT_SOAK under bench --soak)
LOADS = scaled(4)    # demo-data loads
LOAD_SIZE = 150      # addresses per load

WORKER = r"""
import json, sys, time
from pathlib import Path
import crmkit
from crmkit import demo_data

role, path, go, rounds, loads, load_size = sys.argv[1], sys.argv[2], Path(sys.argv[3]), *map(int, sys.argv[4:7])
crm = crmkit.open(path, {"settings": "tom", "user_settings": "anna", "loader": "admin", "addresses": "ben"}[role])
if role == "loader":
    demo_data._pools(7)  # build the Faker pools before the start signal, so the loads overlap the others
(go.parent / f"ready-{role}").touch()
while not go.exists():
    time.sleep(0.005)
started = time.time()
out = {"role": role, "contacts": 0, "addresses": 0}
if role == "settings":
    for i in range(rounds):
        crm.set_setting("teams.subject_prefix", f"cobra CRM {i} - ")
elif role == "user_settings":
    for i in range(rounds):
        crm.set_user_setting("page_size", 10 + i)
elif role == "loader":
    for i in range(loads):
        summary = demo_data.generate(crm, load_size, seed=7)
        out["contacts"] += summary["contacts"]
        out["addresses"] += summary["addresses"]
elif role == "addresses":
    for i in range(rounds):
        crm.add_address(company=f"Parallel {i} GmbH", city="Leipzig", country="DE")
        out["addresses"] += 1
out.update(started=started, ended=time.time(), lock_waits=crm.store.lock_waits)
print(json.dumps(out))
"""


def test_four_processes_write_the_same_file(db_location: str, tmp_path: Path) -> None:
    db_path = db_location
    admin = crmkit.open(db_path)
    admin.add_user("tom", "Tom Krause", roles=["teams_admin"])
    admin.add_user("anna", "Anna Berger", roles=["sales"])
    admin.add_user("ben", "Ben Hartmann", roles=["sales"])
    audit_before = admin.store.one("SELECT count(*) FROM audit")
    admin.store.close()

    go = tmp_path / "go"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    roles = ["settings", "user_settings", "loader", "addresses"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, role, str(db_path), str(go), str(ROUNDS), str(LOADS), str(LOAD_SIZE)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for role in roles
    ]
    deadline = time.monotonic() + 90
    while not all((tmp_path / f"ready-{role}").exists() for role in roles):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a worker did not start"
        time.sleep(0.02)
    go.touch()  # all four have imported crmkit and opened the file: they start writing together
    results = {}
    for role, proc in zip(roles, procs, strict=True):
        out, err = proc.communicate(timeout=scaled(120))
        assert proc.returncode == 0, f"{role} failed:\n{err}"
        assert "DatabaseLocked" not in err and "lock" not in err.lower(), err
        results[role] = json.loads(out.strip().splitlines()[-1])

    # They really ran at the same time: every worker was still busy when the last one started.
    last_start = max(r["started"] for r in results.values())
    first_end = min(r["ended"] for r in results.values())
    assert last_start < first_end, results

    crm = crmkit.open(db_path)
    audit = crm.store.df("SELECT scope, key, user_name FROM audit")
    assert len(audit) == audit_before + 2 * ROUNDS + LOADS
    assert (audit["key"] == "teams.subject_prefix").sum() == ROUNDS
    assert (audit["scope"] == "user:anna").sum() == ROUNDS
    assert (audit["scope"] == "demo_data").sum() == LOADS
    assert crm.setting("teams.subject_prefix") == f"cobra CRM {ROUNDS - 1} - "
    assert crmkit.CRM(crm.store, "anna").user_setting("page_size") == 10 + ROUNDS - 1

    ids = crm.store.df("SELECT id FROM addresses ORDER BY id")["id"].tolist()
    assert ids == list(range(1, LOADS * LOAD_SIZE + ROUNDS + 1))  # no id taken twice, none lost
    assert crm.count_addresses(company=[f"Parallel {i} GmbH" for i in range(ROUNDS)]) == ROUNDS
    assert crm.store.one("SELECT count(*) FROM contacts") == results["loader"]["contacts"]
    # Each load's sub-addresses point into the same load (parents were remapped onto its ids).
    orphans = crm.store.one(
        "SELECT count(*) FROM addresses a LEFT JOIN addresses p ON p.id = a.parent_id "
        "WHERE a.parent_id IS NOT NULL AND (p.id IS NULL OR p.kind <> 'company' OR p.company <> a.company)"
    )
    assert orphans == 0
    dangling = crm.store.one(
        "SELECT count(*) FROM contacts c LEFT JOIN addresses a ON a.id = c.address_id WHERE a.id IS NULL"
    )
    assert dangling == 0
