"""Dev-Proxy-style fault injection: random errors, latency, dropped connections, timeout after commit."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.sandbox import one_on_one_chat

from .shapes import GRAPH_ERROR, assert_shape

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"


def test_injected_status_has_graph_shape_and_spares_admin_api(sandbox_admin):
    g = sandbox_admin.graph()
    sandbox_admin.put("faults", {"rate": 1.0, "statuses": [503], "retry_after_s": 2, "seed": 1})
    r = g.get("me")
    assert r.status_code == 503
    assert_shape(r.json(), GRAPH_ERROR)
    assert r.headers["Retry-After"] == "2"
    assert r.json()["error"]["innerError"]["request-id"] == r.headers["request-id"]
    assert sandbox_admin.admin.get("/_sandbox/health").status_code == 200
    assert sandbox_admin.admin.get("/_sandbox/counters").json()["GET /v1.0/me 503 injected"] == 1


def test_random_error_rate_is_seeded_and_uses_configured_statuses(sandbox_admin):
    g = sandbox_admin.graph()

    def run() -> list[int]:
        sandbox_admin.put("faults", {"rate": 0.5, "statuses": [429, 500, 502, 503, 504], "seed": 7})
        return [g.get("me").status_code for _ in range(40)]

    first = run()
    assert first == run()  # same seed, same faults
    errors = [s for s in first if s != 200]
    assert 8 <= len(errors) <= 32
    assert set(errors) <= {429, 500, 502, 503, 504} and len(set(errors)) >= 3


def test_faults_only_on_configured_paths(sandbox_admin):
    g = sandbox_admin.graph()
    sandbox_admin.put("faults", {"rate": 1.0, "statuses": [500], "paths": ["/v1.0/chats"]})
    assert g.get("me").status_code == 200
    assert g.get("me/chats").status_code == 200  # /v1.0/me/chats is not under /v1.0/chats
    assert g.get("chats/19:x@thread.v2").status_code == 500


def test_added_latency_is_non_blocking(sandbox_admin):
    g = sandbox_admin.graph()
    sandbox_admin.put("faults", {"latency_ms": 300})
    t = time.monotonic()
    assert g.get("me").status_code == 200
    assert time.monotonic() - t >= 0.3
    # 25 concurrent requests overlap their waits: the server keeps up with 25 requests/s.
    statuses: list[int] = []
    threads = [threading.Thread(target=lambda: statuses.append(g.get("me").status_code)) for _ in range(25)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert statuses == [200] * 25
    assert time.monotonic() - t < 1.5


def test_dropped_connection(sandbox_admin):
    g = sandbox_admin.graph()
    sandbox_admin.put("faults", {"drop_rate": 1.0})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        g.get("me")
    sandbox_admin.put("faults", {})
    assert g.get("me").status_code == 200  # the client recovers with a new connection
    assert sandbox_admin.admin.get("/_sandbox/counters").json()["GET /v1.0/me dropped"] == 1


def test_timeout_after_commit_stores_the_message_but_never_answers(sandbox_admin):
    g = sandbox_admin.graph(timeout=1.5)
    chat_id = one_on_one_chat(g, BOB)
    sandbox_admin.put("faults", {"timeout_after_commit_rate": 1.0})
    assert g.get("me").status_code == 200  # reads are not affected
    with pytest.raises(httpx.ReadTimeout):
        g.post(f"chats/{chat_id}/messages", json={"body": {"content": "did it arrive?"}})
    stored = sandbox_admin.admin.get("/_sandbox/messages", params={"chat_id": chat_id}).json()
    assert [m["body"]["content"] for m in stored["value"]] == ["did it arrive?"]
    counters = sandbox_admin.admin.get("/_sandbox/counters").json()
    assert counters["POST /v1.0/chats/{chat}/messages 201 timeout_after_commit"] == 1


def test_fault_settings_are_validated(sandbox_admin):
    assert sandbox_admin.admin.put("/_sandbox/faults", json={"statuses": [418]}).status_code == 400
    assert sandbox_admin.admin.put("/_sandbox/faults", json={"rate": 2}).status_code == 400
    assert sandbox_admin.admin.put("/_sandbox/faults", json={"paths": ["/_sandbox/"]}).status_code == 400
    assert sandbox_admin.admin.put("/_sandbox/faults", json={"bogus": 1}).status_code == 400
    assert sandbox_admin.admin.get("/_sandbox/faults").json()["rate"] == 0.0


def test_count_limits_faults_to_the_first_matching_requests(sandbox_admin):
    g = sandbox_admin.graph()
    assert sandbox_admin.admin.put("/_sandbox/faults", json={"count": -1}).status_code == 400
    assert sandbox_admin.admin.put("/_sandbox/faults", json={"count": "2"}).status_code == 400
    sandbox_admin.put("faults", {"rate": 1.0, "statuses": [500], "paths": ["/v1.0/me"], "methods": ["GET"], "count": 2})
    assert g.get("users").status_code == 200  # not a matching request: the count stays
    assert [g.get("me").status_code for _ in range(4)] == [500, 500, 200, 200]
    assert sandbox_admin.admin.get("/_sandbox/faults").json()["count"] == 0
    assert sandbox_admin.admin.get("/_sandbox/counters").json()["GET /v1.0/me 500 injected"] == 2
