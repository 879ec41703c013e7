"""GET /chats/{id}/messages query rules as Graph documents them, and the sandbox's clock.

Graph (chat-list-messages): ``$top`` at most 50; ``$orderby`` on lastModifiedDateTime (the default)
or createdDateTime, descending only; ``$filter`` is a date range on the same property as
``$orderby`` and ignored otherwise; lastModifiedDateTime takes ``gt`` and ``lt``, createdDateTime
``lt`` only. Other operators are refused with 400 BadRequest "The entity property … and
operationKind … is not allowed in $filter query." (the answer Graph gives, microsoft-graph-docs#20146).
"""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from .shapes import COLLECTION_WITH_COUNT, assert_shape
from .test_graph import assert_error, one_on_one

pytestmark = pytest.mark.sandbox

LM, CR = "lastModifiedDateTime", "createdDateTime"


def _chat_with(sandbox_admin, n: int) -> tuple[object, str, list[dict]]:
    """A chat with ``n`` messages, oldest first, each in its own millisecond."""
    sandbox_admin.put("limits", {"enabled": False})
    g = sandbox_admin.graph()
    chat = one_on_one(g)
    msgs = []
    for i in range(n):
        r = g.post(f"chats/{chat['id']}/messages", json={"body": {"content": f"m{i}"}})
        assert r.status_code == 201, r.text
        msgs.append(r.json())
    return g, f"chats/{chat['id']}/messages", msgs


def _ids(g, url: str, **params: str) -> list[str]:
    r = g.get(url, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(body, COLLECTION_WITH_COUNT)
    got = [m["id"] for m in body["value"]]
    link = body.get("@odata.nextLink")
    while link:
        page = g.get(link)
        assert page.status_code == 200, page.text
        got += [m["id"] for m in page.json()["value"]]
        link = page.json().get("@odata.nextLink")
    return got


def test_orderby_and_filter_only_as_documented(sandbox_admin):
    g, url, msgs = _chat_with(sandbox_admin, 6)
    stamps = [m[LM] for m in msgs]
    ids = [m["id"] for m in msgs]
    after_2 = f"{LM} gt {stamps[2]}"
    assert _ids(g, url, **{"$orderby": f"{LM} desc", "$filter": after_2}) == ids[:2:-1]  # m5, m4, m3
    window = f"{LM} gt {stamps[1]} and {LM} lt {stamps[4]}"
    assert _ids(g, url, **{"$orderby": f"{LM} desc", "$filter": window}) == [ids[3], ids[2]]
    assert _ids(g, url, **{"$orderby": f"{CR} desc", "$filter": f"{CR} lt {stamps[2]}"}) == [ids[1], ids[0]]
    # Otherwise ignored, as documented: no $orderby, or $orderby on the other property.
    assert _ids(g, url, **{"$filter": after_2}) == ids[::-1]
    assert _ids(g, url, **{"$orderby": f"{CR} desc", "$filter": after_2}) == ids[::-1]
    assert _ids(g, url, **{"$orderby": f"{LM} desc", "$filter": f"{CR} lt {stamps[2]}"}) == ids[::-1]
    # Descending on the two properties only (lastModifiedDateTime is the default).
    assert _ids(g, url, **{"$orderby": f"{CR} desc"}) == ids[::-1]
    for order in (f"{LM} asc", f"{CR} asc", LM, CR, "subject desc", "id desc", f"{LM} sideways"):
        err = assert_error(g.get(url, params={"$orderby": order}), 400, "BadRequest")
        assert order.split()[0] in err["message"], err


@pytest.mark.parametrize(("prop", "op", "kind"), [
    (CR, "gt", "GreaterThan"), (CR, "le", "LessThanOrEqual"), (CR, "eq", "Equal"),
    (LM, "ge", "GreaterThanOrEqual"), (LM, "le", "LessThanOrEqual"), (LM, "ne", "NotEqual"),
])
def test_unsupported_filter_operators_are_refused(sandbox_admin, prop: str, op: str, kind: str):
    g, url, msgs = _chat_with(sandbox_admin, 1)
    r = g.get(url, params={"$orderby": f"{prop} desc", "$filter": f"{prop} {op} {msgs[0][LM]}"})
    err = assert_error(r, 400, "BadRequest")
    assert f"'{prop}'" in err["message"] and f"'{kind}'" in err["message"], err


@pytest.mark.parametrize("expr", [
    f"{LM} gt 'yesterday'", f"{LM} gt 2026-13-45T00:00:00Z", f"{LM} gt", "lastModifiedDateTime",
    f"{LM} gt 2026-01-01T00:00:00Z or {LM} lt 2026-01-02T00:00:00Z", "subject gt 2026-01-01T00:00:00Z",
])
def test_malformed_filters_are_refused(sandbox_admin, expr: str):
    g, url, _ = _chat_with(sandbox_admin, 1)
    assert_error(g.get(url, params={"$orderby": f"{LM} desc", "$filter": expr}), 400, "BadRequest")


def test_next_link_keeps_the_query_and_pages_through_the_filtered_set(sandbox_admin):
    g, url, msgs = _chat_with(sandbox_admin, 9)
    since = msgs[3][LM]
    first = g.get(url, params={"$top": "2", "$orderby": f"{LM} desc", "$filter": f"{LM} gt {since}"}).json()
    q = parse_qs(urlsplit(first["@odata.nextLink"]).query)
    assert q["$orderby"] == [f"{LM} desc"] and q["$filter"] == [f"{LM} gt {since}"] and q["$top"] == ["2"]
    got = _ids(g, url, **{"$top": "2", "$orderby": f"{LM} desc", "$filter": f"{LM} gt {since}"})
    assert got == [m["id"] for m in reversed(msgs[4:])]
    assert_error(g.get(url, params={"$top": "51"}), 400)
    assert_error(g.get(url, params={"$top": "0"}), 400)


def test_paging_neither_repeats_nor_skips_when_messages_arrive_between_pages(sandbox_admin):
    g, url, msgs = _chat_with(sandbox_admin, 4)
    first = g.get(url, params={"$top": "2"}).json()
    g.post(url, json={"body": {"content": "late"}})  # newer than everything already listed
    second = g.get(first["@odata.nextLink"]).json()
    assert [m["id"] for m in first["value"] + second["value"]] == [m["id"] for m in reversed(msgs)]


def test_every_response_carries_a_date_header_from_the_sandbox_clock(sandbox_admin):
    g = sandbox_admin.graph()
    before = time.time()
    r = g.get("me")
    after = time.time()
    date = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
    assert int(before) - 1 <= date <= after  # whole seconds, never ahead
    assert len(r.headers.get_list("date")) == 1
    shifted = sandbox_admin.put("clock", {"offset_s": -3600})
    assert shifted["offset_s"] == -3600
    try:
        _, _, msgs = _chat_with(sandbox_admin, 1)
        r = g.get("me")
        date = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
        assert abs(date - (time.time() - 3600)) < 3, r.headers["date"]
        created = datetime.fromisoformat(msgs[0][CR].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - created).total_seconds() - 3600) < 3
        err = assert_error(sandbox_admin.graph().get("chats/nope/messages"), 404)
        assert abs(datetime.fromisoformat(err["innerError"]["date"]).replace(tzinfo=UTC).timestamp()
                   - (time.time() - 3600)) < 3
    finally:
        sandbox_admin.put("clock", {"offset_s": 0})
    sandbox_admin.reset()
    assert sandbox_admin.admin.get("/_sandbox/clock").json()["offset_s"] == 0
