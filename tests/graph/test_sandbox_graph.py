"""The Graph client against the sandbox tenant: people picker, chats, messages, $batch, faults."""

from __future__ import annotations

from collections import Counter

import pytest

from crmkit.errors import GraphError
from crmkit.graph import GraphClient, RateLimiter, RetryPolicy
from crmkit.http import make_async_http_client
from crmkit.sandbox import GRAPH_BASE, SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN, SANDBOX_GUEST_UPN

pytestmark = pytest.mark.sandbox


def test_people_picker_search_and_paging(sandbox_admin) -> None:
    graph = sandbox_admin.graph_client()
    page = graph.search_users("anna", top=5)
    assert SANDBOX_DEFAULT_UPN in [u["userPrincipalName"] for u in page.users]
    assert page.count is not None and page.count >= 1
    everyone = graph.iter_users("", top=7)  # several pages; ConsistencyLevel re-sent on each
    assert len(everyone) == len({u["id"] for u in everyone}) > 7
    first = graph.search_users("", top=7)
    assert first.next_link and graph.search_users(next_link=first.next_link).users
    assert graph.search_users("zzzz-nobody").users == []
    as_typed = [graph.search_users(prefix, top=10).users for prefix in ("s", "sa", "san")]
    assert len(as_typed[2]) <= len(as_typed[0])


def test_get_user_including_guest_upn(sandbox_admin) -> None:
    graph = sandbox_admin.graph_client()
    assert graph.get_user(SANDBOX_DEFAULT_UPN)["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    guest = graph.get_user(SANDBOX_GUEST_UPN)
    assert guest["userPrincipalName"] == SANDBOX_GUEST_UPN
    with pytest.raises(GraphError) as info:
        graph.get_user("nobody@contoso.example")
    assert info.value.status == 404 and info.value.code and info.value.request_id


def test_chats_messages_and_batch(sandbox_admin) -> None:
    graph = sandbox_admin.graph_client()
    me = graph.me()
    chat = graph.get_or_create_chat(me["id"], SANDBOX_ADMIN_UPN)
    assert chat["chatType"] == "oneOnOne"
    assert graph.get_or_create_chat(me["id"], SANDBOX_ADMIN_UPN)["id"] == chat["id"]  # Graph returns the same
    group = graph.create_group_chat([me["id"], SANDBOX_ADMIN_UPN, SANDBOX_GUEST_UPN], topic="Deal 42",
                                    guests=[SANDBOX_GUEST_UPN])
    assert group["chatType"] == "group" and group["topic"] == "Deal 42"
    msg = graph.send_message(chat["id"], "<b>cobra CRM - Müller GmbH</b><p>see record</p>", importance="high")
    assert msg["chatId"] == chat["id"] and msg["importance"] == "high"
    results = graph.batch([
        {"method": "GET", "url": "/me"},
        {"method": "GET", "url": f"/users/{SANDBOX_ADMIN_UPN}"},
        {"method": "POST", "url": f"/chats/{group['id']}/messages", "body": {"body": {"content": "hi all"}}},
    ])
    assert [r["status"] for r in results] == [200, 200, 201]
    stored = sandbox_admin.get("messages")["value"]
    assert sorted(m["body"]["content"] for m in stored) == sorted(
        ["<b>cobra CRM - Müller GmbH</b><p>see record</p>", "hi all"])


def test_expired_token_is_refreshed_once(sandbox_admin) -> None:
    tokens = [sandbox_admin.token(lifetime_s=-60), sandbox_admin.token()]
    asked: list[bool] = []

    def provider(force: bool) -> str:
        asked.append(force)
        return tokens[len(asked) - 1]

    with GraphClient(provider, base_url=GRAPH_BASE, http=make_async_http_client(sandbox_admin.url)) as graph:
        assert graph.me()["userPrincipalName"] == SANDBOX_DEFAULT_UPN
        assert asked == [False, True] and graph.stats["status_401"] == 1


def test_guest_cannot_list_users_typed_error(sandbox_admin) -> None:
    graph = sandbox_admin.graph_client(SANDBOX_GUEST_UPN)
    with pytest.raises(GraphError) as info:
        graph.search_users("a")
    assert info.value.status == 403 and info.value.code and info.value.request_id


def test_every_message_delivered_under_ten_percent_faults(sandbox_admin) -> None:
    """10 % of message posts fail with 429/503/504 (Retry-After 1 s). A 429 is resent until the
    message arrives; a 503/504 on a POST may come after the post took effect, so the raw client
    reports it instead of resending (the outbox reconciles by reading the chat). Nothing twice."""
    graph = sandbox_admin.graph_client(retry=RetryPolicy(max_retries=8, backoff_base=0.2))
    me = graph.me()
    others = [u["id"] for u in graph.iter_users("", top=50) if u["id"] != me["id"]][:20]
    chats = [graph.get_or_create_chat(me["id"], o)["id"] for o in others]
    sandbox_admin.put("faults", {"rate": 0.10, "statuses": [429, 503, 504], "seed": 7, "paths": ["/v1.0/chats"]})
    messages = [(chats[i % len(chats)], {"body": {"content": f"record {i}"}}) for i in range(120)]
    outcomes = graph.send_many(messages)
    sandbox_admin.put("faults", {})
    stored = Counter(m["body"]["content"] for m in sandbox_admin.get("messages")["value"])
    assert max(stored.values()) == 1  # nothing twice
    failed = {f"record {i}": o.error for i, o in enumerate(outcomes) if not o.ok}
    assert {getattr(e, "status", None) for e in failed.values()} <= {503, 504}, failed  # 429s were all resent
    assert set(stored) == {f"record {i}" for i in range(120)} - set(failed)  # every other one arrived
    counters = sandbox_admin.get("counters")
    injected = {k: n for k, n in counters.items() if k.endswith("injected")}
    assert sum(injected.values()) >= 5 and failed, injected  # the faults really happened, of both kinds
    assert graph.stats["retries"] >= sum(n for k, n in injected.items() if "429" in k)


def test_pacing_can_be_disabled_for_other_tenants_limits(sandbox_admin) -> None:
    graph = sandbox_admin.graph_client(limiter=RateLimiter(tenant_rate=50, chat_rate=4))
    assert graph.aio.limiter.chat_gap == pytest.approx(1 / (4 * 0.95))
