"""The Graph client's retry loop, token refresh, typed errors and request shapes, on MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from crmkit.errors import GraphError, GraphThrottled
from crmkit.graph import (
    AsyncGraph,
    GraphClient,
    GraphNotFound,
    GraphUnauthorized,
    RateLimiter,
    RetryPolicy,
    search_expression,
)

pytestmark = pytest.mark.core  # MockTransport: no network

BASE = "https://graph.test/v1.0"


def graph_error(status: int, code: str, message: str = "boom", headers: dict[str, str] | None = None,
                rid: str = "rid-1") -> httpx.Response:
    body = {"error": {"code": code, "message": message, "innerError": {"request-id": rid, "date": "2025-01-01"}}}
    return httpx.Response(status, json=body, headers=headers or {})


class Recorder:
    """A MockTransport handler that replays scripted responses and records requests."""

    def __init__(self, *responses: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        nxt = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return nxt(request) if callable(nxt) else nxt


class Tokens:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def __call__(self, force: bool) -> str:
        self.calls.append(force)
        return f"tok-{len(self.calls)}"


def make(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> tuple[AsyncGraph, list[float], Tokens]:
    """A client on a virtual clock: retry sleeps are recorded, limiter waits advance the clock."""
    sleeps: list[float] = []
    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    async def pacing_sleep(seconds: float) -> None:
        now[0] += seconds

    tokens = Tokens()
    kw.setdefault("retry", RetryPolicy(max_retries=3))
    kw.setdefault("limiter", RateLimiter(clock=lambda: now[0], sleep=pacing_sleep))
    client = AsyncGraph(
        httpx.AsyncClient(transport=httpx.MockTransport(handler)), tokens, base_url=BASE, sleep=fake_sleep, **kw
    )
    return client, sleeps, tokens


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_503_then_success_is_retried_with_backoff() -> None:
    rec = Recorder(graph_error(503, "serviceNotAvailable"), httpx.Response(200, json={"id": "me"}))
    client, sleeps, _ = make(rec)
    assert run(client.me()) == {"id": "me"}
    assert len(rec.requests) == 2
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 0.5


def test_a_post_is_not_resent_after_503_or_504() -> None:
    for status in (503, 504):  # the message may be in the chat already: a resend could post it twice
        rec = Recorder(graph_error(status, "serviceNotAvailable"), httpx.Response(201, json={"id": "m1"}))
        client, sleeps, _ = make(rec)
        with pytest.raises(GraphError) as info:
            run(client.send_message("19:abc@thread.v2", "hi"))
        assert info.value.status == status and len(rec.requests) == 1 and sleeps == []


def test_429_honours_retry_after_seconds_and_http_date() -> None:
    rec = Recorder(
        graph_error(429, "TooManyRequests", headers={"Retry-After": "7"}),
        graph_error(429, "TooManyRequests", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
        httpx.Response(201, json={"id": "m1"}),
    )
    client, sleeps, _ = make(rec)
    assert run(client.send_message("19:abc@thread.v2", "hi")) == {"id": "m1"}
    assert sleeps == [7.0, 0.0]


def test_throttled_beyond_budget_raises_typed_error() -> None:
    rec = Recorder(graph_error(429, "TooManyRequests", headers={"Retry-After": "2", "request-id": "hdr-rid"}))
    client, sleeps, _ = make(rec)
    with pytest.raises(GraphThrottled) as info:
        run(client.me())
    err = info.value
    assert (err.status, err.code, err.request_id, err.retry_after) == (429, "TooManyRequests", "hdr-rid", 2.0)
    assert len(rec.requests) == 4 and sleeps == [2.0, 2.0, 2.0]


def test_500_and_404_are_not_retried_and_carry_code_and_request_id() -> None:
    client, _, _ = make(Recorder(graph_error(500, "generalException", rid="r500")))
    with pytest.raises(GraphError) as info:
        run(client.me())
    assert (info.value.status, info.value.code, info.value.request_id) == (500, "generalException", "r500")
    client, _, _ = make(Recorder(graph_error(404, "Request_ResourceNotFound", rid="r404")))
    with pytest.raises(GraphNotFound) as nf:
        run(client.get_user("nobody@contoso.example"))
    assert nf.value.code == "Request_ResourceNotFound" and "r404" in str(nf.value)


def test_lenient_error_bodies() -> None:
    """Dev Proxy codes with spaces, empty codes and HTML bodies all become GraphError."""
    for response in (
        graph_error(502, "Bad Gateway"),
        httpx.Response(400, json={"error": {"code": "", "message": "x"}}),
        httpx.Response(502, text="<html>bad gateway</html>"),
    ):
        client, _, _ = make(Recorder(response))
        with pytest.raises(GraphError) as info:
            run(client.me())
        assert info.value.status == response.status_code


def test_one_token_refresh_on_401() -> None:
    rec = Recorder(graph_error(401, "InvalidAuthenticationToken"), httpx.Response(200, json={"id": "me"}))
    client, sleeps, tokens = make(rec)
    assert run(client.me())["id"] == "me"
    assert tokens.calls == [False, True]
    assert [r.headers["Authorization"] for r in rec.requests] == ["Bearer tok-1", "Bearer tok-2"]
    assert sleeps == []


def test_second_401_is_raised() -> None:
    client, _, tokens = make(Recorder(graph_error(401, "InvalidAuthenticationToken")))
    with pytest.raises(GraphUnauthorized):
        run(client.me())
    assert tokens.calls == [False, True]


def test_teams_403_without_authorization_refreshes_once() -> None:
    rec = Recorder(graph_error(403, "Forbidden", "No authorization information present on the request."),
                   httpx.Response(201, json={"id": "m"}))
    client, _, tokens = make(rec)
    run(client.send_message("19:a@thread.v2", "x"))
    assert tokens.calls == [False, True]
    # an ordinary 403 is not refreshed
    client, _, tokens = make(Recorder(graph_error(403, "Authorization_RequestDenied")))
    with pytest.raises(GraphError) as info:
        run(client.me())
    assert info.value.status == 403 and tokens.calls == [False]


def test_token_is_reused_between_calls() -> None:
    client, _, tokens = make(Recorder(httpx.Response(200, json={})))

    async def twice() -> None:
        await client.me()
        await client.me()

    run(twice())
    assert tokens.calls == [False]


def test_transport_errors_retry_only_when_safe() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    rec = Recorder(refuse, httpx.Response(201, json={"id": "m"}))
    client, _, _ = make(rec)
    assert run(client.send_message("19:a@thread.v2", "x"))["id"] == "m"  # never reached the server

    rec = Recorder(read_timeout, httpx.Response(201, json={"id": "m"}))
    client, _, _ = make(rec)
    with pytest.raises(GraphError, match="ReadTimeout"):
        run(client.send_message("19:a@thread.v2", "x"))  # may have been posted: no blind resend
    assert len(rec.requests) == 1

    rec = Recorder(read_timeout, httpx.Response(200, json={"id": "me"}))
    client, _, _ = make(rec)
    assert run(client.me())["id"] == "me"  # GET is safe to resend


def test_client_request_id_is_stable_across_retries() -> None:
    rec = Recorder(graph_error(503, "x"), httpx.Response(200, json={}))
    client, _, _ = make(rec)
    run(client.me())
    ids = {r.headers["client-request-id"] for r in rec.requests}
    assert len(ids) == 1


def test_search_users_sends_consistency_level_on_every_page() -> None:
    pages = {
        "first": {"@odata.count": 3, "value": [{"id": "1"}, {"id": "2"}],
                  "@odata.nextLink": f"{BASE}/users?$skiptoken=abc&$search=x"},
        "second": {"value": [{"id": "3"}]},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages["second" if "skiptoken" in str(request.url) else "first"])

    rec = Recorder(handler)
    client, _, _ = make(rec)
    users = run(client.iter_users("wa"))
    assert [u["id"] for u in users] == ["1", "2", "3"]
    assert all(r.headers["ConsistencyLevel"] == "eventual" for r in rec.requests)
    first = rec.requests[0].url.params
    assert first["$search"] == '"displayName:wa" OR "mail:wa" OR "userPrincipalName:wa"'
    assert first["$count"] == "true" and first["$orderby"] == "displayName"
    assert "$skiptoken=abc" in str(rec.requests[1].url)  # nextLink followed verbatim


def test_search_page_reports_count_and_next_link() -> None:
    client, _, _ = make(Recorder(httpx.Response(200, json={"@odata.count": 9, "value": [], "@odata.nextLink": "n"})))
    page = run(client.search_users("x", top=5))
    assert (page.count, page.next_link, page.users) == (9, "n", [])


def test_search_expression_drops_quotes() -> None:
    assert search_expression('a"b  c') == '"displayName:a b c" OR "mail:a b c" OR "userPrincipalName:a b c"'


def test_get_or_create_chat_body_and_guest_upn_binding() -> None:
    rec = Recorder(httpx.Response(201, json={"id": "19:x_y@unq.gbl.spaces", "chatType": "oneOnOne"}))
    client, _, _ = make(rec)
    chat = run(client.get_or_create_chat("me-id", "kim.berg_partner.example#EXT#@contoso.example"))
    assert chat["chatType"] == "oneOnOne"
    body = json.loads(rec.requests[0].content)
    assert body["chatType"] == "oneOnOne"
    binds = [m["user@odata.bind"] for m in body["members"]]
    assert binds == [f"{BASE}/users('me-id')", f"{BASE}/users('kim.berg_partner.example%23EXT%23@contoso.example')"]
    assert all(m["roles"] == ["owner"] for m in body["members"])
    assert rec.requests[0].method == "POST" and rec.requests[0].url.path == "/v1.0/chats"


def test_group_chat_and_message_bodies() -> None:
    rec = Recorder(httpx.Response(201, json={"id": "19:g@thread.v2"}))
    client, _, _ = make(rec)
    run(client.create_group_chat(["a", "b", "c"], topic="Deal", guests=["c"]))
    body = json.loads(rec.requests[0].content)
    assert body["topic"] == "Deal" and [m["roles"] for m in body["members"]] == [["owner"], ["owner"], ["guest"]]
    run(client.send_message("19:g@thread.v2", "<b>x</b>", subject="cobra CRM - A", importance="high"))
    msg = rec.requests[1]
    assert msg.url.path == "/v1.0/chats/19:g@thread.v2/messages"
    assert json.loads(msg.content) == {
        "body": {"contentType": "html", "content": "<b>x</b>"}, "subject": "cobra CRM - A", "importance": "high",
    }


def test_batch_retries_only_throttled_items_with_their_retry_after() -> None:
    seen: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        reqs = json.loads(request.content)["requests"]
        seen.append([r["id"] for r in reqs])
        out = []
        for r in reqs:
            if r["id"] == "2" and len(seen) == 1:
                out.append({"id": "2", "status": 429, "headers": {"Retry-After": "3"},
                            "body": {"error": {"code": "TooManyRequests"}}})
            elif r["id"] == "3" and len(seen) == 1:
                out.append({"id": "3", "status": 424, "body": {"error": {"code": "FailedDependency"}}})
            else:
                out.append({"id": r["id"], "status": 200, "body": {"n": r["id"], "try": len(seen)}})
        return httpx.Response(200, json={"responses": list(reversed(out))})

    client, sleeps, _ = make(handler)
    result = run(client.batch([
        {"method": "GET", "url": "/me"},
        {"method": "GET", "url": f"{BASE}/users/x"},
        {"method": "POST", "url": "/chats/1/messages", "body": {"body": {"content": "x"}}, "dependsOn": ["2"]},
        {"method": "GET", "url": "/users/y"},
    ]))
    assert seen == [["1", "2", "3", "4"], ["2", "3"]]
    assert sleeps == [3.0]
    assert [r["id"] for r in result] == ["1", "2", "3", "4"]
    assert [r["status"] for r in result] == [200, 200, 200, 200]
    assert result[1]["body"]["try"] == 2


def test_batch_request_shape_and_limits() -> None:
    rec = Recorder(lambda req: httpx.Response(200, json={"responses": [
        {"id": r["id"], "status": 201, "body": {}} for r in json.loads(req.content)["requests"]]}))
    client, _, _ = make(rec)
    run(client.batch([{"method": "POST", "url": f"{BASE}/chats", "body": {"chatType": "oneOnOne"}}]))
    sent = json.loads(rec.requests[0].content)["requests"][0]
    assert sent == {"method": "POST", "url": "/chats", "body": {"chatType": "oneOnOne"}, "id": "1",
                    "headers": {"Content-Type": "application/json"}}
    assert rec.requests[0].url.path == "/v1.0/$batch"
    with pytest.raises(ValueError, match="at most 20"):
        run(client.batch([{"method": "GET", "url": "/me"}] * 21))
    with pytest.raises(ValueError, match="unique"):
        run(client.batch([{"id": "a", "method": "GET", "url": "/me"}, {"id": "a", "method": "GET", "url": "/me"}]))


def test_batch_dev_proxy_424_envelope() -> None:
    """Dev Proxy fails a whole batch with 424 and per-item errors; the items are retried."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(424, json={"responses": [
                {"id": "1", "status": 503, "headers": {"Retry-After": "1"}, "body": {"error": {"code": "x"}}}]})
        return httpx.Response(200, json={"responses": [{"id": "1", "status": 200, "body": {"ok": True}}]})

    client, sleeps, _ = make(handler)
    assert run(client.batch([{"method": "GET", "url": "/me"}]))[0]["body"] == {"ok": True}
    assert sleeps == [1.0]


def test_sync_facade_inside_a_running_event_loop() -> None:
    """As in Jupyter: a loop is running in this thread, and the blocking API still works."""
    rec = Recorder(httpx.Response(200, json={"id": "me"}))
    client = GraphClient(lambda force: "t", base_url=BASE,
                         http=httpx.AsyncClient(transport=httpx.MockTransport(rec)))

    async def cell() -> tuple[dict[str, Any], dict[str, Any]]:
        blocking = client.me()  # no asyncio.run clash
        awaited = await client.call(client.aio.me())  # and the notebook's loop stays free
        return blocking, awaited

    try:
        assert asyncio.run(cell()) == ({"id": "me"}, {"id": "me"})
        assert client.submit(client.aio.me()).result(5) == {"id": "me"}
        assert client.stats["requests"] == 3
    finally:
        client.close()


def test_blocking_call_from_the_loop_thread_is_refused() -> None:
    client = GraphClient(lambda force: "t", base_url=BASE,
                         http=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))))

    async def inner() -> None:
        client.me()

    try:
        with pytest.raises(RuntimeError, match="own event loop"):
            client.submit(inner()).result(5)
    finally:
        client.close()


def test_repr_hides_the_token() -> None:
    client, _, _ = make(Recorder(httpx.Response(200, json={})))
    run(client.me())
    assert "tok-" not in repr(client) and "tok-" not in repr(vars(client).get("_stats"))
