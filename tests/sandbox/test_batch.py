"""JSON batching: at most 20 items, dependsOn → 424, per-item throttling with Retry-After."""

from __future__ import annotations

import pytest

from tests.support.sandbox import one_on_one_chat

from .shapes import BATCH, BATCH_ITEM, GRAPH_ERROR, MESSAGE, USER, assert_shape

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"


def _post(i: int, chat_id: str, **extra) -> dict:
    return {"id": str(i), "method": "POST", "url": f"/chats/{chat_id}/messages",
            "headers": {"Content-Type": "application/json"}, "body": {"body": {"content": f"batch {i}"}}, **extra}


def test_batch_shapes_and_mixed_items(sandbox_admin):
    g = sandbox_admin.graph()
    chat_id = one_on_one_chat(g, BOB)
    r = g.post("$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": "/me"},
        {"id": "2", "method": "GET", "url": "users?$top=2&$select=displayName"},
        _post(3, chat_id),
        {"id": "4", "method": "GET", "url": "/users/nobody@contoso.example"},
    ]})
    assert r.status_code == 200  # the envelope is 200 even when items fail
    body = r.json()
    assert_shape(body, BATCH)
    items = {i["id"]: i for i in body["responses"]}
    for item in items.values():
        assert_shape(item, BATCH_ITEM)
    assert items["1"]["status"] == 200
    assert_shape(items["1"]["body"], USER)
    assert len(items["2"]["body"]["value"]) == 2
    assert items["3"]["status"] == 201
    assert_shape(items["3"]["body"], MESSAGE)
    assert items["4"]["status"] == 404
    assert_shape(items["4"]["body"], GRAPH_ERROR)


def test_batch_limit_of_20(sandbox_admin):
    g = sandbox_admin.graph()
    reqs = [{"id": str(i), "method": "GET", "url": "/me"} for i in range(21)]
    r = g.post("$batch", json={"requests": reqs})
    assert r.status_code == 400
    assert_shape(r.json(), GRAPH_ERROR)
    assert g.post("$batch", json={"requests": reqs[:20]}).status_code == 200
    dup = g.post("$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/me"}] * 2})
    assert dup.status_code == 400


def test_depends_on_failure_gives_424(sandbox_admin):
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    chat_id = one_on_one_chat(g, BOB)
    r = g.post("$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": "/users/ghost@contoso.example"},
        {**_post(2, chat_id), "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": "/me"},
        {**_post(4, chat_id), "dependsOn": ["3"]},
    ]}).json()
    items = {i["id"]: i for i in r["responses"]}
    assert items["1"]["status"] == 404
    assert items["2"]["status"] == 424
    assert items["4"]["status"] == 201
    msgs = sandbox_admin.admin.get("/_sandbox/messages", params={"chat_id": chat_id}).json()
    assert [m["body"]["content"] for m in msgs["value"]] == ["batch 4"]


def test_items_are_throttled_individually(sandbox_admin):
    g = sandbox_admin.graph()
    chat_id = one_on_one_chat(g, BOB)
    r = g.post("$batch", json={"requests": [_post(i, chat_id) for i in range(1, 6)]}).json()
    statuses = sorted(i["status"] for i in r["responses"])
    assert statuses == [201, 429, 429, 429, 429]  # 1 request/s per chat
    for item in r["responses"]:
        if item["status"] == 429:
            assert int(item["headers"]["Retry-After"]) >= 1
            assert item["body"]["error"]["code"] == "TooManyRequests"
    # Retry only the failed ids after Retry-After.
    counters = sandbox_admin.admin.get("/_sandbox/counters").json()
    assert counters["BATCH POST /v1.0/chats/{chat}/messages 429"] == 4


def test_batch_requires_token(sandbox_admin):
    r = sandbox_admin.graph(token="").post("$batch", json={"requests": [{"id": "1", "method": "GET", "url": "/me"}]})
    assert r.status_code == 401
