"""The Teams feature on PostgreSQL, beyond the tests both backends run: what only a database server does."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support.postgres import PgCluster, fresh_database_url
from support.sandbox import ROOT, SandboxAdmin, colleagues, sign_in

import crmkit
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams import activation, sessions

pytestmark = pytest.mark.postgres


def test_register_session_never_fails_an_open_the_server_refuses(
        pg_cluster: PgCluster, caplog: pytest.LogCaptureFixture) -> None:
    """A PostgreSQL login that may read but not write ``sessions`` (the server refuses with psycopg's
    InsufficientPrivilege, not a StoreError) still opens the CRM, unregistered, with a warning."""
    import psycopg
    from psycopg import sql

    from crmkit.store import Store
    from crmkit.store.postgres import close_pools

    template = pg_cluster.template_for("crm", lambda url: Store(url).close())  # the one conftest's fixtures clone
    role = f"reader_{pg_cluster.unique_name()}"  # roles are cluster-wide
    with fresh_database_url(pg_cluster, template) as db_url:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        url = db_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        try:
            with caplog.at_level(logging.WARNING, logger="crmkit.teams"):
                reader = crmkit.open(url)
            assert reader.session_id is None  # type: ignore[attr-defined]
            assert "not registered" in caplog.text and "permission denied" in caplog.text
            assert sessions.reopen_notice(reader) is None
            assert crmkit.open(db_url).store.one("SELECT count(*) FROM sessions") == 1  # only this open's row
        finally:
            close_pools(url)
            with psycopg.connect(db_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


RACER = """
import json, os, sys, time
import crmkit
crm = crmkit.open(sys.argv[1])
while not os.path.exists(sys.argv[2]):  # both processes are ready: press at the same moment
    time.sleep(0.005)
result = crm.teams.send([1, 2, 3], to=json.loads(sys.argv[3]), subject="Zwei Rechner", idempotency_key="race")
print(json.dumps({"batches": result.attrs["batch_ids"], "status": result["status"].tolist()}))
"""


def test_two_processes_sending_under_one_key_make_one_batch_delivered_once(
        pg_cluster: PgCluster, crm_tenant: SandboxAdmin, tmp_path: Path) -> None:
    """Two machines' sessions of one CRM user send with one key at once: in-process locks cannot see each
    other, so the database decides (the key's unique index, the outbox's claims): one batch, each message
    posted once, one transfer-log row per delivery."""
    from crmkit.store import Store

    template = pg_cluster.template_for("crm", lambda url: Store(url).close())
    with fresh_database_url(pg_cluster, template) as url:
        crm = crmkit.open(url)
        activation.enable(crm)
        for i in range(3):
            crm.add_address(company=f"Firma {i} GmbH", city="Berlin", country="DE")
        sign_in(crm, SANDBOX_DEFAULT_UPN)
        crm.teams.close()
        to = colleagues(crm_tenant, 2)
        go = tmp_path / "go"
        procs = [subprocess.Popen([sys.executable, "-c", RACER, url, str(go), json.dumps(to)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            time.sleep(1.0)
            go.touch()
            outs = [p.communicate(timeout=180) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert [p.returncode for p in procs] == [0, 0], [err[-3000:] for _, err in outs]
        answers = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
        assert answers[0]["batches"] == answers[1]["batches"] and len(answers[0]["batches"]) == 1
        delivered = [m for m in crm_tenant.get("messages")["value"] if m.get("subject") == "cobra CRM - Zwei Rechner"]
        markers = Counter(a["id"] for m in delivered for a in m["attachments"])
        assert len(delivered) == 6 and max(markers.values()) == 1  # 3 records x 2 people, none twice
        store = crmkit.open(url).store
        assert store.one("SELECT count(*) FROM outbox_batches") == 1
        assert store.df("SELECT status FROM outbox")["status"].tolist() == ["sent"] * 6
        log = store.df("SELECT message_id FROM transfer_log WHERE outcome = 'sent'")
        assert sorted(log["message_id"]) == sorted(m["id"] for m in delivered)
