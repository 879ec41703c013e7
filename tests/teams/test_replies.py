"""Replies filed on the record (issue 17 part 3): a reply in Teams to a crmkit message becomes one TS contact.

The sandbox's admin hook posts a reply as a chat member, as Teams stores one (a ``messageReference`` attachment
quoting the message); a pass (``crm.teams.file_replies()``, or ``crmkit worker``) files it once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from support.sandbox import ROOT, SandboxAdmin, colleagues

import crmkit
from crmkit import privacy
from crmkit.campaigns.worker import run_worker
from crmkit.errors import IntegrationDisabled, PermissionDenied
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams.replies import poll_cost


def _send(sender: crmkit.CRM, crm_tenant: SandboxAdmin, address: int = 1) -> tuple[str, str, str]:
    """One record sent to a colleague with a contact; (chat id, crmkit's message id, the colleague's UPN)."""
    to = colleagues(crm_tenant, 1)[0]
    result = sender.teams.send(address, to=[to], subject="Neuer Lead", record_contact=True)
    assert result["status"].tolist() == ["sent"]
    chat, message = sender.store.read(lambda tx: tx.rows(
        "SELECT chat_id, message_id FROM outbox WHERE batch_id = ?", [result.attrs["batch_ids"][0]]))[0]
    return chat, message, to


def _reply(crm_tenant: SandboxAdmin, chat: str, reply_to: str, who: str, text: str) -> dict[str, Any]:
    r = crm_tenant.admin.post(f"/_sandbox/chats/{chat}/replies",
                              json={"from": who, "reply_to": reply_to, "content": text, "content_type": "text"})
    assert r.status_code == 201, r.text
    return r.json()


def _post(g: Any, chat: str, text: str) -> dict[str, Any]:
    """A plain message in the chat through Graph, waiting out Teams' 1 post per second per user and chat."""
    for _ in range(10):
        r = g.post(f"chats/{chat}/messages", json={"body": {"content": text}})
        if r.status_code != 429:
            break
        time.sleep(float(r.headers.get("retry-after") or 1))
    assert r.status_code == 201, r.text
    return r.json()


def _chat_reads(crm_tenant: SandboxAdmin) -> int:
    """GET requests on chats' messages the sandbox answered so far (any status)."""
    return sum(n for key, n in crm_tenant.counters().items() if key.startswith("GET /v1.0/chats/"))


def _reply_contacts(crm: crmkit.CRM, address: int = 1) -> Any:
    frame = crm.contacts(address)
    return frame[frame["source"].str.startswith("teams-reply:")]


def _local(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().replace(tzinfo=None)


@pytest.mark.sandbox
def test_a_reply_is_filed_once_with_author_time_and_text(sender: crmkit.CRM, crm_tenant: SandboxAdmin,
                                                         db_location: str) -> None:
    sender.set_setting("teams.file_replies", True)
    chat, message, to = _send(sender, crm_tenant)
    author = next(u for u in crm_tenant.get("users")["value"] if u["userPrincipalName"] == to)
    reply = _reply(crm_tenant, chat, message, to, "Danke, ich rufe <b>heute</b> an.\u202e\nGruß")

    filed = sender.teams.file_replies()
    assert len(filed) == 1 and filed["reply_id"].tolist() == [reply["id"]]
    assert filed.attrs["requests"] >= 1 and filed.attrs["failed"] == {}
    contacts = _reply_contacts(sender)
    assert len(contacts) == 1
    contact = contacts.iloc[0]
    assert contact["type_code"] == "TS"
    assert contact["notes"] == "Danke, ich rufe <b>heute</b> an.\nGruß"  # the text as typed, the bidi override gone
    assert author["displayName"] in contact["subject"]
    assert contact["happened_at"].to_pydatetime() == _local(reply["createdDateTime"]).replace(microsecond=
        contact["happened_at"].to_pydatetime().microsecond)
    assert contact["message_id"] == reply["id"] and contact["user_name"] == "admin"
    row = sender.store.read(lambda tx: tx.rows("SELECT author_id, author_name, reply_to FROM teams_replies"))
    assert row == [(author["id"], author["displayName"], message)]
    incoming = privacy.transfer_log(sender, address_id=1)
    incoming = incoming[incoming["direction"] == "in"]
    assert incoming[["recipient_id", "recipient_name", "message_id", "outcome"]].values.tolist() == [
        [author["id"], author["displayName"], reply["id"], "sent"]]
    assert set(privacy.transfer_log(sender)["direction"]) == {"in", "out"}

    # A second pass files nothing more, and reads only what is new (one request for the one chat).
    again = sender.teams.file_replies()
    assert again.empty and again.attrs["requests"] == 1
    assert len(_reply_contacts(sender)) == 1

    # A fresh worker process (a restart) files the next reply, and the first one not again.
    second = _reply(crm_tenant, chat, message, to, "Noch eine Frage")
    sender.teams.close()
    sender.store.close()
    run = subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", db_location, "worker", "--once",
                          "--reply-interval", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "replies filed: 1" in run.stdout, run.stdout + run.stderr
    crm = crmkit.open(db_location)
    contacts = _reply_contacts(crm)
    assert sorted(contacts["message_id"]) == sorted([reply["id"], second["id"]])
    assert len(privacy.transfer_log(crm, message_key=f"reply:{chat}:{reply['id']}")) == 1
    crm.store.close()


@pytest.mark.sandbox
def test_replies_to_other_messages_and_the_senders_own_are_not_filed(
        sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    sender.set_setting("teams.file_replies", True)
    chat, message, to = _send(sender, crm_tenant)
    g = crm_tenant.graph()  # Anna, the sender, writing in the chat herself, not through crmkit
    other = _post(g, chat, "Wie geht's?")
    _reply(crm_tenant, chat, other["id"], to, "Gut, danke")  # a reply, but not to crmkit's message
    _reply(crm_tenant, chat, message, SANDBOX_DEFAULT_UPN, "Nachtrag von mir")  # the sender quoting herself
    _post(g, chat, "no quote at all")
    assert sender.teams.file_replies().empty
    assert _reply_contacts(sender).empty
    assert sender.store.one("SELECT count(*) FROM teams_replies") == 0


@pytest.mark.sandbox
def test_with_the_setting_off_no_graph_request_is_made(sender: crmkit.CRM, crm_tenant: SandboxAdmin,
                                                       db_location: str) -> None:
    chat, message, to = _send(sender, crm_tenant)
    _reply(crm_tenant, chat, message, to, "Danke")
    before = _chat_reads(crm_tenant)
    with pytest.raises(IntegrationDisabled, match="File replies from Teams"):
        sender.teams.file_replies()
    stats = run_worker(db_location, once=True, reply_interval=1)
    assert stats.replies == 0
    assert _chat_reads(crm_tenant) == before
    assert _reply_contacts(sender).empty
    sender.set_setting("teams.file_replies", True)  # switched on, the same worker files it
    assert run_worker(db_location, once=True, reply_interval=1).replies == 1
    assert _chat_reads(crm_tenant) > before


# Graph's faults on the list call, the same on both stores (13 s each); PostgreSQL's own case is two passes at once
@pytest.mark.sandbox
@pytest.mark.duckdb_only
def test_throttled_and_refused_list_calls_lose_nothing_and_file_nothing_twice(
        sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    sender.set_setting("teams.file_replies", True)
    chat, message, to = _send(sender, crm_tenant)
    first = _reply(crm_tenant, chat, message, to, "Eins")
    path = f"/v1.0/chats/{chat}/messages"
    try:
        crm_tenant.put("faults", {"rate": 1.0, "statuses": [429], "retry_after_s": 1, "methods": ["GET"],
                                  "paths": [path], "count": 1})
        assert sender.teams.file_replies()["reply_id"].tolist() == [first["id"]]  # retried after Retry-After
        assert crm_tenant.get("faults")["count"] == 0
        second = _reply(crm_tenant, chat, message, to, "Zwei")
        # 503 on every try: the chat is not read, its watermark stays, nothing is filed ...
        crm_tenant.put("faults", {"rate": 1.0, "statuses": [503], "retry_after_s": 0, "methods": ["GET"],
                                  "paths": [path]})
        refused = sender.teams.file_replies()
        assert refused.empty and list(refused.attrs["failed"]) == [chat]
        # ... and the next pass, Graph answering again, files the reply once
        crm_tenant.put("faults", {"rate": 1.0, "statuses": [503], "retry_after_s": 0, "methods": ["GET"],
                                  "paths": [path], "count": 1})
        assert sender.teams.file_replies()["reply_id"].tolist() == [second["id"]]
    finally:
        crm_tenant.put("faults", {})
    assert sender.teams.file_replies().empty
    assert sorted(_reply_contacts(sender)["message_id"]) == sorted([first["id"], second["id"]])


@pytest.mark.sandbox
def test_a_viewer_is_refused_before_anything_is_read(sender: crmkit.CRM, crm_tenant: SandboxAdmin,
                                                     db_location: str) -> None:
    sender.set_setting("teams.file_replies", True)
    chat, message, to = _send(sender, crm_tenant)
    _reply(crm_tenant, chat, message, to, "Danke")
    sender.add_user("vera", "Vera Viewer", roles=["viewer"])
    viewer = crmkit.open(db_location, user="vera")
    before = _chat_reads(crm_tenant)
    with pytest.raises(PermissionDenied, match=r"teams\.send"):
        viewer.teams.file_replies()
    assert _chat_reads(crm_tenant) == before
    assert _reply_contacts(sender).empty
    viewer.store.close()


@pytest.mark.core
def test_poll_cost_of_a_thousand_chats() -> None:
    cost = poll_cost(1000, 60)
    assert cost.per_pass == 1000 and cost.per_minute == pytest.approx(1000)
    assert cost.pass_s == pytest.approx(1000 / 19)
    # polled every 10 s, the pass (52.6 s at Teams' 20 GETs/s, paced at 95 %) is what bounds the rate
    assert poll_cost(1000, 10).per_minute == pytest.approx(19 * 60)
    with pytest.raises(ValueError):
        poll_cost(10, 0)


@pytest.mark.sandbox
def test_a_reply_in_a_channel_thread_is_filed_once(sender: crmkit.CRM, crm_tenant: SandboxAdmin) -> None:
    sender.set_setting("teams.file_replies", True)
    team = next(t for t in crm_tenant.get("teams")["value"] if t["displayName"] == "Vertrieb")
    channel = next(c for c in team["channels"] if c["displayName"] == "General")
    key = f"channel:{team['id']}/{channel['id']}"
    result = sender.teams.send(3, to=[key], subject="Für alle", record_contact=True)
    assert result["status"].tolist() == ["sent"]
    root = sender.store.one("SELECT message_id FROM outbox WHERE chat_id = ?", [key])
    member = next(u for u in channel["members"] if u != SANDBOX_DEFAULT_UPN)
    hook = f"/_sandbox/teams/{team['id']}/channels/{channel['id']}/messages/{root}/replies"
    own = crm_tenant.admin.post(hook, json={"from": SANDBOX_DEFAULT_UPN, "content": "von mir selbst"})
    reply = crm_tenant.admin.post(hook, json={"from": member, "content": "Übernehme ich"})
    assert own.status_code == reply.status_code == 201, (own.text, reply.text)
    filed = sender.teams.file_replies()
    assert filed["reply_id"].tolist() == [reply.json()["id"]]  # the sender's own reply is no reply to file
    contacts = _reply_contacts(sender, 3)
    assert contacts["notes"].tolist() == ["Übernehme ich"] and contacts["address_id"].tolist() == [3]
    assert sender.teams.file_replies().empty
    assert len(_reply_contacts(sender, 3)) == 1


@pytest.mark.sandbox
def test_two_passes_at_once_file_a_reply_once(sender: crmkit.CRM, crm_tenant: SandboxAdmin,
                                              db_location: str, backend: str) -> None:
    """Two sessions (two workers of one CRM user) read the same chat at the same time: one contact."""
    if backend != "postgresql":  # a DuckDB file has one writing process, one active worker (its lease)
        pytest.skip("PostgreSQL: workers run side by side there")
    sender.set_setting("teams.file_replies", True)
    chat, message, to = _send(sender, crm_tenant)
    _reply(crm_tenant, chat, message, to, "Einmal bitte")
    sessions = [crmkit.open(db_location) for _ in range(2)]
    start = threading.Barrier(2)
    counts: list[int] = []

    def run(crm: crmkit.CRM) -> None:
        start.wait()
        counts.append(len(crm.teams.file_replies()))

    threads = [threading.Thread(target=run, args=(crm,)) for crm in sessions]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert sorted(counts) == [0, 1]
    assert len(_reply_contacts(sender)) == 1
    assert sender.store.one("SELECT count(*) FROM transfer_log WHERE direction = 'in'") == 1
    for crm in sessions:
        crm.teams.close()
        crm.store.close()
