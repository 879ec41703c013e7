"""Reconciliation reads a bounded part of the chat: the window since the row's first claim.

An unanswered post is looked for by reading the chat back (``GraphChatGateway.find_marker``). The
read asks Graph for ``$orderby=lastModifiedDateTime desc`` with ``$filter=lastModifiedDateTime gt
<since>``, ``since`` being the first claim moved onto the server's clock (measured from ``Date``
headers) less a few seconds; so its length depends on the messages in that window, not on the chat.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from support.sandbox import SandboxAdmin, colleagues, minted_graph

import crmkit
from crmkit.graph import GraphClient, RateLimiter
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams.gateway import GraphChatGateway
from crmkit.teams.outbox import utcnow

HISTORY = 400  # messages already in the chat, older than the window: 8 pages of 50


def _card(marker: str) -> dict:
    return {"body": {"contentType": "html", "content": f'<attachment id="{marker}"></attachment>'},
            "subject": "Bounded", "attachments": [{
                "id": marker, "contentType": "application/vnd.microsoft.card.adaptive",
                "content": '{"type":"AdaptiveCard","version":"1.4","body":[]}'}]}


def _list_pages(admin: SandboxAdmin) -> int:
    return sum(n for k, n in admin.counters().items() if k.startswith("GET /v1.0/chats/{chat}/messages "))


@pytest.fixture
def graph(crm_tenant: SandboxAdmin) -> GraphClient:
    crm_tenant.put("limits", {"enabled": False})
    g = minted_graph(crm_tenant, limiter=RateLimiter(2000, 2000))
    yield g
    g.close()


def _busy_chat(admin: SandboxAdmin, g: GraphClient, skew: float = 0) -> str:
    """A chat holding HISTORY messages stamped a minute ago; the server's clock then runs ``skew`` s off."""
    admin.put("clock", {"offset_s": skew})
    chat = g.get_or_create_chat(SANDBOX_DEFAULT_UPN, colleagues(admin, 1)[0])["id"]
    admin.put("clock", {"offset_s": skew - 60})
    with minted_graph(admin, limiter=RateLimiter(2000, 2000)) as other:  # its Date headers say -60 s
        outcomes = other.send_many([(chat, {"body": {"content": f"earlier {i}"}}) for i in range(HISTORY)])
    assert all(o.ok for o in outcomes)
    admin.put("clock", {"offset_s": skew})
    return chat


def _find(g: GraphClient, chat: str, marker: str, since) -> str | None:
    return g.submit(GraphChatGateway(g).find_marker(chat, marker, _card(marker), since)).result(120)


@pytest.mark.sandbox
def test_a_read_back_after_many_messages_reads_one_page(crm_tenant: SandboxAdmin, graph: GraphClient) -> None:
    admin, g = crm_tenant, graph
    chat = _busy_chat(admin, g)
    since = utcnow()
    posted = g.post_message(chat, _card(m := uuid.uuid4().hex))["id"]
    g.post_message(chat, {"body": {"content": "a later message"}})
    before = _list_pages(admin)
    assert _find(g, chat, m, since) == posted
    assert _find(g, chat, uuid.uuid4().hex, since) is None  # absent: the window is read to its end
    assert _list_pages(admin) - before == 2  # one page each, with 400 older messages in the chat


@pytest.mark.sandbox
@pytest.mark.parametrize("skew", [-600, 600])
def test_a_skewed_server_clock_neither_hides_the_message_nor_widens_the_read(
    crm_tenant: SandboxAdmin, graph: GraphClient, skew: int,
) -> None:
    admin, g = crm_tenant, graph
    chat = _busy_chat(admin, g, skew)
    try:
        assert g.aio.clock.samples == 1  # the chat's creation: its Date told the client the server's clock
        since = utcnow()
        posted = g.post_message(chat, _card(m := uuid.uuid4().hex))["id"]
        g.post_message(chat, {"body": {"content": "a later message"}})
        before = _list_pages(admin)
        assert _find(g, chat, m, since) == posted  # a fixed 5-minute margin missed it 10 minutes behind
        assert _find(g, chat, uuid.uuid4().hex, since) is None
        assert _list_pages(admin) - before == 2
    finally:
        admin.put("clock", {"offset_s": 0})


@pytest.mark.sandbox
def test_a_refused_read_back_page_is_retried_by_the_delivery_client(
        crm_tenant: SandboxAdmin, sender: crmkit.CRM) -> None:
    g = sender.teams._delivery_graph()  # the client delivery reads back with
    chat = g.get_or_create_chat(SANDBOX_DEFAULT_UPN, colleagues(crm_tenant, 1)[0])["id"]
    since = utcnow()
    posted = g.post_message(chat, _card(m := uuid.uuid4().hex))["id"]
    crm_tenant.put("faults", {"rate": 1.0, "statuses": [503], "retry_after_s": 1, "methods": ["GET"],
                           "paths": [f"/v1.0/chats/{chat}/messages"], "count": 1})
    try:  # a refusal of the read is no answer about the message: read again, do not give the attempt up
        assert _find(g, chat, m, since) == posted
        assert crm_tenant.get("faults")["count"] == 0  # the fault did hit the read
    finally:
        crm_tenant.put("faults", {})


@pytest.mark.core
def test_without_a_date_header_the_window_keeps_the_five_minute_margin() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"value": []})  # MockTransport sends no Date header

    g = GraphClient(lambda force: "tok", base_url="https://graph.test/v1.0",
                    http=httpx.AsyncClient(transport=httpx.MockTransport(handler)), limiter=RateLimiter(1000, 1000))
    try:
        since = utcnow().replace(microsecond=0)
        assert g.submit(GraphChatGateway(g).find_marker("19:c@thread.v2", "m", _card("m"), since)).result(10) is None
        q = seen[0].url.params
        assert q["$orderby"] == "lastModifiedDateTime desc"
        floor = (since - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
        assert q["$filter"].startswith(f"lastModifiedDateTime gt {floor}"), q["$filter"]
        assert int(q["$top"]) == 50
    finally:
        g.close()
