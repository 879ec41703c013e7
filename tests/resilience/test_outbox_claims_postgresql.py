"""Outbox claims on PostgreSQL (teams.outbox.claim_open): processes claiming at once get each row once, a live
holder's rows stay its own, a dead or expired holder's are taken over, and only the holder may mark one sending."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from support.postgres import PgCluster, fresh_database_url
from support.sandbox import colleagues, sign_in

from crmkit.store import Store
from crmkit.teams.outbox import (
    PER_CHAT,
    OutboxMessage,
    add_messages,
    claim_leased,
    claim_open,
    create_batch,
    holder_process,
    new_holder,
    release_leases,
    utcnow,
)

pytestmark = pytest.mark.postgres

CHATS = 20


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    template = pg_cluster.template_for("crm", lambda url: Store(url).close())
    with fresh_database_url(pg_cluster, template) as url:
        yield url


def _batch(store: Store, n: int) -> str:
    """A batch of ``n`` messages over CHATS one-on-one chats, chat by chat in seq order (as a send to several
    people makes them): only a claim that lets the chats take turns spreads a chunk over them."""
    def run(tx):  # type: ignore[no-untyped-def]
        batch = create_batch(tx, user="admin", account=None, channel="teams_manual", trigger="manual", purpose=None,
                             subject="s", options={}, record_contact=False)
        add_messages(tx, batch, [OutboxMessage({"body": {"content": "x"}}, f"m{i}", "oneOnOne",
                                               ["me", f"p{i * CHATS // n}"], [], [], {}) for i in range(n)])
        return batch
    return store.write(run)


# Claims chunks until none is left, finishing each (as a sender would), and prints what it claimed. It says when it
# is ready (imports done, connected) and starts on the test's word: a start at a fixed time let the first two
# processes claim every row while a slow-starting third and fourth were still importing (CI: [375, 625, 0, 0]).
CLAIMER = """
import json, sys
from crmkit.store import Store
from crmkit.teams.outbox import claim_open, new_holder
store, holder, got = Store(sys.argv[1]), new_holder("test"), []
store.execute("SELECT 1")
print("ready", flush=True)
sys.stdin.readline()  # start together
while ids := claim_open(store, holder, [sys.argv[2]], limit=25):
    got += ids
    store.execute(f"UPDATE outbox SET status = 'sent' WHERE id IN ({', '.join('?' * len(ids))})", ids)
print(json.dumps(got))
"""


def test_four_processes_claiming_at_once_get_each_row_once(pg_url: str) -> None:
    store = Store(pg_url)
    batch = _batch(store, 1000)
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, pg_url, batch], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n", p.stderr and p.stderr.read()[-2000:]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    claimed = Counter(i for ids in results for i in ids)
    assert len(claimed) == 1000 and max(claimed.values()) == 1
    assert all(results), [len(ids) for ids in results]  # every process got rows: nobody waited the others out


def test_a_claim_takes_whole_chats_and_leaves_the_others_chats_alone(pg_url: str) -> None:
    store = Store(pg_url)
    batch = _batch(store, 200)  # seq order: ten rows of one chat, then ten of the next ...

    def chats(ids: list[str]) -> Counter[str]:
        marks = ", ".join("?" * len(ids))
        return Counter(store.df(f"SELECT members FROM outbox WHERE id IN ({marks})", ids)["members"])

    first = chats(claim_open(store, new_holder("a"), [batch], limit=20))
    assert sorted(first.values()) == [PER_CHAT] * 4  # four chats' next turns, not twenty rows of two chats
    second = chats(claim_open(store, new_holder("b"), [batch], limit=200))
    assert not set(first) & set(second)  # no chat shared with a live holder: nobody waits for the other
    assert len(second) == CHATS - 4 and max(second.values()) == PER_CHAT


def test_live_leases_are_kept_and_dead_or_expired_ones_taken_over(pg_url: str) -> None:
    store = Store(pg_url)
    batch = _batch(store, 30)
    live, me = new_holder("live"), new_holder("me")
    host = holder_process(live)[0]
    dead = f"worker:{host}:{2**22 + 7}:feedbeef"  # a pid no process has, on this machine
    ids = claim_open(store, live, [batch], limit=30)
    store.execute("UPDATE outbox SET claimed_by = ? WHERE id IN (?, ?, ?)", [dead, *ids[:3]])
    store.execute("UPDATE outbox SET claimed_by = 'worker:elsewhere:1:abc', claim_expires_at = ? WHERE id IN (?, ?)",
                  [utcnow() - timedelta(seconds=1), *ids[3:5]])
    store.execute("UPDATE outbox SET status = 'sending' WHERE id = ?", [ids[0]])
    taken = claim_open(store, me, [batch], limit=30)
    assert set(taken) == set(ids[:5])  # the dead one's (this machine) and the expired one's; not live's 25
    assert taken[0] == ids[0]  # an unconfirmed row first: it is read back before anything else is posted
    assert store.one("SELECT status FROM outbox WHERE id = ?", [ids[0]]) == "sending"  # statuses kept
    assert not claim_leased(store, ids[10], me)  # live's row: never marked sending by another
    assert claim_leased(store, ids[1], me)
    release_leases(store, live)
    assert len(claim_open(store, me, [batch], limit=30)) == 30


def test_a_senders_send_waits_for_the_rows_another_live_process_holds(
    fast_crm_tenant: Any, pg_url: str,
) -> None:
    """A send on PostgreSQL returns final results even when another process (a worker) held some of its rows:
    the sender delivers what it can claim, then waits for the others' rows (here released after 2 s, as a
    worker's are when it stops) and delivers them too."""
    import crmkit
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation

    crm = crmkit.open(pg_url)
    activation.enable(crm)
    ids = [crm.add_address(company=f"Firma {i} GmbH", city="Köln", country="DE") for i in range(3)]
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    crm.teams.send(ids, to=colleagues(fast_crm_tenant, 2), subject="Geteilt", deliver=False)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live process elsewhere
    try:
        other = f"worker:{holder_process(new_holder('x'))[0]}:{sleeper.pid}:cafe"
        held = crm.store.df("SELECT id FROM outbox ORDER BY seq LIMIT 2")["id"].tolist()
        crm.store.execute("UPDATE outbox SET claimed_by = ?, claim_expires_at = ? WHERE id IN (?, ?)",
                          [other, utcnow() + timedelta(seconds=60), *held])
        threading.Timer(2.0, release_leases, args=(crm.store, other)).start()
        results = crm.teams.resume()
    finally:
        sleeper.kill()
        sleeper.wait()
        crm.teams.close()
    assert results["status"].eq("sent").all() and len(results) == 6, results[["status"]].value_counts()
    assert len(fast_crm_tenant.get("messages")["value"]) == 6
