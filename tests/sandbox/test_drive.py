"""The sandbox's OneDrive subset (sandbox/graph_drive.py) over HTTP: uploads, upload sessions, sharing, and
chat messages carrying a file as a ``reference`` attachment."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN, SANDBOX_GUEST_UPN
from tests.support.sandbox import one_on_one_chat

from .shapes import BOOL, INT, ISO_Z, STR, ListOf, assert_shape

pytestmark = pytest.mark.sandbox

UNIT = 320 * 1024


def _session(g: Any, name: str, **item: Any) -> str:
    r = g.post(f"me/drive/root:/{name}:/createUploadSession", json={"item": item} if item else None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["nextExpectedRanges"] == ["0-"] and body["expirationDateTime"].endswith("Z")
    return str(body["uploadUrl"])


def _put(http: Any, url: str, data: bytes, start: int, end: int, total: int) -> Any:
    return http.put(url, content=data[start:end + 1], headers={"Content-Range": f"bytes {start}-{end}/{total}"})


def _guid(item: dict[str, Any]) -> str:
    m = re.match(r'^"\{([0-9A-F-]{36})\},\d+"$', item["eTag"])
    assert m, item["eTag"]
    return m.group(1).lower()


def test_simple_upload_shape_conflicts_and_download(sandbox_admin) -> None:
    g = sandbox_admin.graph()
    r = g.put("me/drive/root:/crmkit/Adressen.xlsx:/content", content=b"first")
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["name"] == "Adressen.xlsx" and item["size"] == 5 and item["id"].startswith("01")
    assert item["file"]["mimeType"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    assert item["parentReference"]["path"] == "/drive/root:/crmkit" and item["webUrl"].endswith(
        "/Documents/crmkit/Adressen.xlsx")
    _guid(item)
    replaced = g.put("me/drive/root:/crmkit/Adressen.xlsx:/content", content=b"second")  # default: replace
    assert replaced.status_code == 200 and replaced.json()["id"] == item["id"]
    assert replaced.json()["eTag"] != item["eTag"]
    fail = g.put("me/drive/root:/crmkit/adressen.xlsx:/content", params={"@microsoft.graph.conflictBehavior": "fail"},
                 content=b"x")
    assert fail.status_code == 409 and fail.json()["error"]["code"] == "nameAlreadyExists"
    renamed = g.put("me/drive/root:/crmkit/Adressen.xlsx:/content",
                    params={"@microsoft.graph.conflictBehavior": "rename"}, content=b"third")
    assert renamed.status_code == 201 and renamed.json()["name"] == "Adressen 1.xlsx"
    got = g.get(f"me/drive/items/{item['id']}")
    assert got.status_code == 200 and got.json()["size"] == 6
    by_path = g.get("me/drive/root:/crmkit/adressen.xlsx")  # names are case-insensitive
    assert by_path.status_code == 200 and by_path.json()["id"] == item["id"]
    assert g.get("me/drive/root:/crmkit/Adressen.xlsx:/content").status_code == 302
    assert g.get("me/drive/root:/crmkit/none.xlsx").json()["error"]["code"] == "itemNotFound"
    content = g.get(f"me/drive/items/{item['id']}/content")
    assert content.status_code == 302
    assert sandbox_admin.http().get(content.headers["location"]).content == b"second"
    # another user's drive does not have it; no Files scope, no drive
    other = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).get(f"me/drive/items/{item['id']}")
    assert other.status_code == 404 and other.json()["error"]["code"] == "itemNotFound"
    no_scope = sandbox_admin.graph(sandbox_admin.token(scopes=["User.Read"])).get(f"me/drive/items/{item['id']}")
    assert no_scope.status_code == 403
    bad = g.put("me/drive/root:/a<b.xlsx:/content", content=b"x")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalidRequest"


def test_upload_session_fragments_order_status_resume_and_cancel(sandbox_admin) -> None:
    g, http = sandbox_admin.graph(), sandbox_admin.http()
    data = bytes(range(256)) * (3 * UNIT // 256) + b"tail-bytes"  # 3 fragments of 320 KiB and a short last one
    total = len(data)
    url = _session(g, "big.xlsx")
    assert "/up/" in url
    # the upload URL carries its own authorisation: a bearer token is refused
    auth = http.put(url, content=data[:UNIT], headers={"Content-Range": f"bytes 0-{UNIT - 1}/{total}",
                                                       "Authorization": f"Bearer {sandbox_admin.token()}"})
    assert auth.status_code == 401
    odd = _put(http, url, data, 0, 1000, total)  # not a multiple of 320 KiB and not the last
    assert odd.status_code == 400 and odd.json()["error"]["code"] == "invalidRequest"
    first = _put(http, url, data, 0, UNIT - 1, total)
    assert first.status_code == 202 and first.json()["nextExpectedRanges"] == [f"{UNIT}-"]
    again = _put(http, url, data, 0, UNIT - 1, total)  # a fragment the server has
    assert again.status_code == 416 and again.json()["error"]["code"] == "invalidRange"
    assert again.json()["error"]["innerError"]["code"] == "fragmentOverlap"
    gap = _put(http, url, data, 2 * UNIT, 3 * UNIT - 1, total)  # out of order
    assert gap.status_code == 416
    wrong_total = _put(http, url, data, UNIT, 2 * UNIT - 1, total + 1)
    assert wrong_total.status_code == 400
    status = http.get(url)  # what a client resuming after a crash asks
    assert status.status_code == 200 and status.json()["nextExpectedRanges"] == [f"{UNIT}-"]
    assert _put(http, url, data, UNIT, 3 * UNIT - 1, total).status_code == 202  # two units in one fragment
    done = _put(http, url, data, 3 * UNIT, total - 1, total)
    assert done.status_code == 201, done.text
    item = done.json()
    assert item["name"] == "big.xlsx" and item["size"] == total
    download = http.get(g.get(f"me/drive/items/{item['id']}/content").headers["location"])
    assert download.content == data
    assert http.get(url).status_code == 404  # the session ended with its last byte
    # cancel
    url2 = _session(g, "cancelled.xlsx")
    assert _put(http, url2, data, 0, UNIT - 1, total).status_code == 202
    assert http.delete(url2).status_code == 204
    gone = http.get(url2)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "itemNotFound"


def test_upload_session_conflict_behaviour(sandbox_admin) -> None:
    g, http = sandbox_admin.graph(), sandbox_admin.http()
    g.put("me/drive/root:/taken.xlsx:/content", content=b"old")
    r = g.post("me/drive/root:/taken.xlsx:/createUploadSession", json={"item": {}})  # default: fail
    assert r.status_code == 409 and r.json()["error"]["code"] == "nameAlreadyExists"
    url = _session(g, "taken.xlsx", **{"@microsoft.graph.conflictBehavior": "rename"})
    assert _put(http, url, b"new", 0, 2, 3).json()["name"] == "taken 1.xlsx"
    url = _session(g, "taken.xlsx", **{"@microsoft.graph.conflictBehavior": "replace"})
    replaced = _put(http, url, b"newer", 0, 4, 5)
    assert replaced.status_code == 200 and replaced.json()["name"] == "taken.xlsx" and replaced.json()["size"] == 5
    bad = g.post("me/drive/root:/x.xlsx:/createUploadSession",
                 json={"item": {"@microsoft.graph.conflictBehavior": "overwrite"}})
    assert bad.status_code == 400


def test_invite_and_permissions(sandbox_admin) -> None:
    g = sandbox_admin.graph()
    item = g.put("me/drive/root:/shared.xlsx:/content", content=b"x").json()
    colleague = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).get("me").json()
    guest = g.get(f"users/{SANDBOX_GUEST_UPN.replace('#', '%23')}").json()
    body = {"recipients": [{"objectId": colleague["id"]}, {"email": guest["mail"]}], "roles": ["read"],
            "requireSignIn": True, "sendInvitation": False}
    r = g.post(f"me/drive/items/{item['id']}/invite", json=body)
    assert r.status_code == 200, r.text
    perms = r.json()["value"]
    assert [p["grantedToV2"]["user"]["id"] for p in perms] == [colleague["id"], guest["id"]]
    assert all(p["roles"] == ["read"] and p["invitation"]["signInRequired"] is True for p in perms)
    again = g.post(f"me/drive/items/{item['id']}/invite", json=body)  # inviting again changes nothing
    assert [p["id"] for p in again.json()["value"]] == [p["id"] for p in perms]
    listed = g.get(f"me/drive/items/{item['id']}/permissions").json()["value"]
    assert listed[0]["roles"] == ["owner"] and len(listed) == 3
    assert g.get(f"me/drive/items/{item['id']}").json()["shared"] == {"scope": "users"}
    for bad in ({**body, "roles": ["owner"]}, {**body, "recipients": []},
                {**body, "recipients": [{"email": "nobody@elsewhere.example"}]}, {**body, "message": "x" * 2001}):
        refused = g.post(f"me/drive/items/{item['id']}/invite", json=bad)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalidRequest"
    assert sandbox_admin.counters().get("drive invitations mailed") is None


def _file_message(item: dict[str, Any], *, aid: str | None = None, url: str | None = None) -> dict[str, Any]:
    aid = aid or _guid(item)
    return {"body": {"contentType": "html", "content": f'Die Adressen <attachment id="{aid}"></attachment>'},
            "attachments": [{"id": aid, "contentType": "reference", "contentUrl": url or item["webUrl"],
                             "name": item["name"]}]}


def test_chat_message_with_a_shared_file(sandbox_admin) -> None:
    sandbox_admin.put("limits", {"enabled": False})  # several posts to one chat in a second
    g = sandbox_admin.graph()
    colleague = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).get("me").json()
    chat_id = one_on_one_chat(g, SANDBOX_ADMIN_UPN)
    item = g.put("me/drive/root:/Adressen 2026.xlsx:/content", content=b"x").json()
    unshared = g.post(f"chats/{chat_id}/messages", json=_file_message(item))
    assert unshared.status_code == 403 and "not shared" in unshared.json()["error"]["message"]
    g.post(f"me/drive/items/{item['id']}/invite", json={"recipients": [{"objectId": colleague["id"]}],
                                                        "roles": ["read"], "requireSignIn": True,
                                                        "sendInvitation": False})
    wrong_id = g.post(f"chats/{chat_id}/messages", json=_file_message(item, aid=uuid.uuid4().hex))
    assert wrong_id.status_code == 400 and "eTag" in wrong_id.json()["error"]["message"]
    elsewhere = g.post(f"chats/{chat_id}/messages", json=_file_message(
        item, url=item["webUrl"].replace("Adressen%202026", "Other")))
    assert elsewhere.status_code == 400 and "OneDrive" in elsewhere.json()["error"]["message"]
    mismatch = _file_message(item)
    mismatch["body"]["content"] = '<attachment id="something-else"></attachment>'
    assert g.post(f"chats/{chat_id}/messages", json=mismatch).status_code == 400
    sent = g.post(f"chats/{chat_id}/messages", json=_file_message(item))
    assert sent.status_code == 201, sent.text
    att = sent.json()["attachments"][0]
    assert att["contentType"] == "reference" and att["name"] == "Adressen 2026.xlsx"
    page = sandbox_admin.http().get(f"{sandbox_admin.url}/teams", params={"chat": chat_id, "as": SANDBOX_DEFAULT_UPN,
                                                      "ui_locales": "de"})
    assert 'data-testid="file-attachment">Datei: Adressen 2026.xlsx<' in page.text
    # the colleague's own file cannot be sent by anna
    theirs = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).put("me/drive/root:/theirs.xlsx:/content",
                                                            content=b"y").json()
    assert g.post(f"chats/{chat_id}/messages", json=_file_message(theirs)).status_code == 400


def test_reset_empties_the_drives(sandbox_admin) -> None:
    g = sandbox_admin.graph()
    item = g.put("me/drive/root:/gone.xlsx:/content", content=b"x").json()
    sandbox_admin.reset()
    assert sandbox_admin.graph().get(f"me/drive/items/{item['id']}").status_code == 404


# Keys and JSON types from the documented examples (driveitem-put-content, driveitem-createuploadsession,
# driveitem-invite); the resources' other properties may come on top.
_IDENTITY = {"user": {"id": STR, "displayName": STR}}
DRIVE_ITEM = {
    "@odata.context": STR, "id": STR, "name": STR, "size": INT, "file": {"mimeType": STR},
    "createdDateTime": ISO_Z, "lastModifiedDateTime": ISO_Z, "eTag": STR, "cTag": STR, "webUrl": STR,
    "createdBy": _IDENTITY, "lastModifiedBy": _IDENTITY,
    "parentReference": {"driveType": STR, "driveId": STR, "id": STR, "path": STR},
    "fileSystemInfo": {"createdDateTime": ISO_Z, "lastModifiedDateTime": ISO_Z},
}
UPLOAD_SESSION = {"uploadUrl": STR, "expirationDateTime": ISO_Z, "nextExpectedRanges": ListOf(STR)}
UPLOAD_STATUS = {"expirationDateTime": ISO_Z, "nextExpectedRanges": ListOf(STR)}
PERMISSION = {
    "id": STR, "roles": ListOf(STR), "grantedTo": _IDENTITY, "hasPassword": BOOL,
    "grantedToV2": {**_IDENTITY, "siteUser": {"id": STR, "displayName": STR, "loginName": STR}},
    "invitation": {"email": STR, "signInRequired": BOOL},
}


def test_drive_answers_have_the_documented_shapes(sandbox_admin) -> None:
    g, http = sandbox_admin.graph(), sandbox_admin.http()
    item = g.put("me/drive/root:/shape.xlsx:/content", content=b"x").json()
    assert_shape(item, DRIVE_ITEM)
    assert_shape(g.get(f"me/drive/items/{item['id']}").json(), DRIVE_ITEM)
    made = g.post("me/drive/root:/shaped.xlsx:/createUploadSession", json={"item": {"name": "shaped.xlsx"}}).json()
    assert_shape(made, UPLOAD_SESSION)
    data = b"y" * (UNIT + 5)
    partial = _put(http, made["uploadUrl"], data, 0, UNIT - 1, len(data))
    assert partial.status_code == 202
    assert_shape(partial.json(), UPLOAD_STATUS)
    assert_shape(http.get(made["uploadUrl"]).json(), UPLOAD_STATUS)
    done = _put(http, made["uploadUrl"], data, UNIT, len(data) - 1, len(data)).json()
    assert_shape({"@odata.context": "", **done}, DRIVE_ITEM)
    colleague = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN).get("me").json()
    perms = g.post(f"me/drive/items/{item['id']}/invite", json={
        "recipients": [{"objectId": colleague["id"]}], "roles": ["write"], "requireSignIn": True,
        "sendInvitation": False}).json()
    assert_shape(perms, {"value": ListOf(PERMISSION)})
    listed = g.get(f"me/drive/items/{item['id']}/permissions").json()
    assert_shape(listed["value"][1], PERMISSION)
