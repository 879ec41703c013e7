"""crmkit.graph's file upload and sharing (graph/_drive.py) against the sandbox's OneDrive: simple upload, an
upload session with faults on its fragments, a resume in a new client after a crash, and the chat message."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crmkit.errors import GraphError
from crmkit.graph import (
    GraphNotFound,
    RetryPolicy,
    SharedFile,
    UploadSession,
    cancel_upload,
    find_file,
    resume_upload,
    share_file,
    upload_file,
)
from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN

pytestmark = pytest.mark.sandbox

UNIT = 320 * 1024
DATA = bytes(range(251)) * (4 * UNIT // 251 + 7)  # a little more than 4 fragments of 320 KiB
FAST = RetryPolicy(backoff_base=0.01, backoff_cap=0.05)


class Crash(Exception):
    """Stands in for the process dying between two fragments."""


def _fragments(admin: Any) -> dict[str, int]:
    return {k.rsplit(" ", 1)[-1]: v for k, v in admin.counters().items() if k.startswith("PUT /up/{session}")}


def _download(admin: Any, item_id: str) -> bytes:
    g = admin.graph()
    return bytes(admin.http().get(g.get(f"me/drive/items/{item_id}/content").headers["location"]).content)


def test_small_file_simple_upload_shared_and_posted(sandbox_admin) -> None:
    sandbox_admin.put("limits", {"enabled": False})
    client = sandbox_admin.graph_client(retry=FAST)
    colleague = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).get("me").json()
    shared = client.submit(share_file(client.aio, "crmkit/Adressen.xlsx", b"PK-small", [colleague["id"]])).result()
    assert isinstance(shared, SharedFile) and shared.name == "Adressen.xlsx" and shared.size == 8
    assert [p["grantedToV2"]["user"]["id"] for p in shared.permissions] == [colleague["id"]]
    assert shared.permissions[0]["roles"] == ["read"] and shared.permissions[0]["invitation"]["signInRequired"]
    counters = sandbox_admin.counters()
    assert counters.get("PUT /v1.0/me/drive/root:/{path}:/content 201") == 1
    assert not any("createUploadSession" in k for k in counters)
    assert sandbox_admin.counters().get("drive invitations mailed") is None
    again = client.submit(share_file(client.aio, "crmkit/Adressen.xlsx", b"PK-2", [])).result()
    assert again.name == "Adressen 1.xlsx"  # rename by default: nobody's file is overwritten
    chat = client.get_or_create_chat(client.me()["id"], SANDBOX_ADMIN_UPN)
    msg = client.post_message(chat["id"], {"body": {"contentType": "html", "content": "Liste " + shared.marker()},
                                           "attachments": [shared.attachment()]})
    assert msg["attachments"][0]["name"] == "Adressen.xlsx"
    assert _download(sandbox_admin, shared.item_id) == b"PK-small"
    found = client.submit(find_file(client.aio, "crmkit/Adressen.xlsx")).result()
    assert found is not None and found["id"] == shared.item_id
    assert client.submit(find_file(client.aio, "crmkit/nothing here.xlsx")).result() is None


def test_upload_session_in_fragments_with_faults(sandbox_admin) -> None:
    client = sandbox_admin.graph_client(retry=FAST)
    # one 503 (the client's retry), one 500 (not retried by the client: the upload asks Graph what it holds),
    # one dropped connection (a transport error, resent)
    for fault in ({"rate": 1.0, "statuses": [503], "retry_after_s": 0},
                  {"rate": 1.0, "statuses": [500]}, {"drop_rate": 1.0}):
        sandbox_admin.put("faults", {**fault, "paths": ["/up/"], "methods": ["PUT"], "count": 1})
        item = client.submit(upload_file(client.aio, f"big-{len(fault)}-{fault.get('statuses', ['drop'])[0]}.xlsx",
                                         DATA, simple_max=0, fragment_size=UNIT)).result()
        assert item["size"] == len(DATA)
        assert _download(sandbox_admin, item["id"]) == DATA
    counts = sandbox_admin.counters()
    assert not [k for k in counts if k.startswith("PUT /up/") and "{session}" not in k]  # no token in a name
    assert counts.get("PUT /up/{session} 503 injected") == 1 and counts.get("PUT /up/{session} 500 injected") == 1
    assert counts.get("PUT /up/{session} dropped") == 1
    assert counts.get("GET /up/{session} 200", 0) >= 1  # the status asked after the 500
    assert _fragments(sandbox_admin).get("201") == 3 and _fragments(sandbox_admin).get("202") == 12


def test_crash_mid_upload_then_resume_from_next_expected_ranges(sandbox_admin, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    stored: list[str] = []
    first = sandbox_admin.graph_client(retry=FAST)

    def crash_after_two(received: int) -> None:
        if received >= 2 * UNIT:
            raise Crash

    with pytest.raises(Crash):
        first.submit(upload_file(first.aio, "crmkit/resumed.xlsx", DATA, simple_max=0, fragment_size=UNIT,
                                 on_session=lambda s: stored.append(s.to_json()),
                                 on_fragment=crash_after_two)).result()
    first.close()
    assert _fragments(sandbox_admin) == {"202": 2}
    # a later process: only what was stored
    session = UploadSession.from_json(stored[0])
    assert session.upload_url not in repr(session)
    later = sandbox_admin.graph_client(retry=FAST)
    item = later.submit(resume_upload(later.aio, session, DATA, fragment_size=UNIT)).result()
    assert item["name"] == "resumed.xlsx" and _download(sandbox_admin, item["id"]) == DATA
    assert _fragments(sandbox_admin) == {"202": 4, "201": 1}  # 5 fragments in all, none twice: on at 655360
    assert sandbox_admin.counters().get("GET /up/{session} 200") == 1
    # the capability URL is in no log line (httpx logs every request's URL at INFO)
    token = session.upload_url.rsplit("/", 1)[-1]
    assert any("HTTP Request: PUT" in r.getMessage() for r in caplog.records)
    assert not [r.getMessage() for r in caplog.records if token in r.getMessage()]
    # the session is gone: a resume says to upload again, without the URL
    with pytest.raises(GraphNotFound) as info:
        later.submit(resume_upload(later.aio, session, DATA, fragment_size=UNIT)).result()
    assert "upload the file again" in str(info.value) and token not in str(info.value)
    with pytest.raises(ValueError):
        later.submit(resume_upload(later.aio, session, DATA[:-1], fragment_size=UNIT)).result()


def test_cancel_and_refusals(sandbox_admin) -> None:
    client = sandbox_admin.graph_client(retry=FAST)
    stored: list[UploadSession] = []

    def stop(received: int) -> None:
        raise Crash

    with pytest.raises(Crash):
        client.submit(upload_file(client.aio, "cancelled.xlsx", DATA, simple_max=0, fragment_size=UNIT,
                                  on_session=stored.append, on_fragment=stop)).result()
    client.submit(cancel_upload(client.aio, stored[0])).result()
    assert sandbox_admin.counters().get("DELETE /up/{session} 204") == 1
    client.submit(upload_file(client.aio, "taken.xlsx", b"x")).result()
    with pytest.raises(GraphError) as info:
        client.submit(upload_file(client.aio, "taken.xlsx", DATA, conflict="fail", simple_max=0,
                                  fragment_size=UNIT)).result()
    assert info.value.status == 409 and info.value.code == "nameAlreadyExists"
    with pytest.raises(ValueError):
        client.submit(upload_file(client.aio, "odd.xlsx", DATA, fragment_size=1000)).result()
    no_files = sandbox_admin.graph_client(SANDBOX_DEFAULT_UPN, retry=FAST)
    no_files.aio._provider = lambda force: sandbox_admin.token(scopes=["User.Read"])  # a token without Files.*
    with pytest.raises(GraphError) as denied:
        no_files.submit(upload_file(no_files.aio, "x.xlsx", b"x")).result()
    assert denied.value.status == 403


def test_fragment_that_landed_without_an_answer(sandbox_admin) -> None:
    """The sandbox keeps a fragment but never answers (timeout after commit): the resent fragment gets 416,
    the upload asks for the status and goes on; the file holds every byte once."""
    client = sandbox_admin.graph_client(retry=FAST, timeout=1.0)
    sandbox_admin.put("faults", {"timeout_after_commit_rate": 1.0, "hang_s": 2, "paths": ["/up/"],
                                 "methods": ["PUT"], "count": 1})  # the first fragment
    item = client.submit(upload_file(client.aio, "late.xlsx", DATA, simple_max=0, fragment_size=UNIT)).result()
    assert _download(sandbox_admin, item["id"]) == DATA
    counts = sandbox_admin.counters()
    assert counts.get("PUT /up/{session} 202 timeout_after_commit") == 1
    assert counts.get("PUT /up/{session} 416", 0) >= 1 and counts.get("GET /up/{session} 200", 0) >= 1
