"""OneDrive subset of Microsoft Graph v1.0: each signed-in user's own drive (delegated, Files.ReadWrite).

As documented (driveitem-put-content, driveitem-createuploadsession, driveitem-invite, permission-list):

- ``PUT /me/drive/root:/{path}:/content``: simple upload (Graph takes up to 250 MB this way; the older
  page said 4 MB, crmkit uses it up to 4 MiB). ``?@microsoft.graph.conflictBehavior=fail|replace|rename``,
  default ``replace``. 201 with the driveItem for a new file, 200 for a replaced one.
- ``POST /me/drive/root:/{path}:/createUploadSession``: 200 ``{uploadUrl, expirationDateTime,
  nextExpectedRanges}``; ``item["@microsoft.graph.conflictBehavior"]`` (or the query) default ``fail``,
  409 ``nameAlreadyExists`` for a taken name, at creation and again when the last byte lands.
- The upload URL (``/up/{token}``, outside ``/v1.0`` as Graph's is on another host): a capability, so
  no Authorization header (Graph may answer one with 401; the sandbox always does). ``PUT`` with
  ``Content-Range: bytes a-b/total``: fragments in order, each a multiple of 320 KiB (327,680 bytes)
  but the last and below 60 MiB; 202 ``{expirationDateTime, nextExpectedRanges}`` until the last byte,
  then 201 with the driveItem. A fragment the server already has: 416 (``invalidRange``/
  ``fragmentOverlap``); one past the expected offset: 416 too (Graph: "out of order results in an
  error"). ``GET`` the URL: the status (for a client resuming after a crash); ``DELETE``: 204, the
  session is gone (404 ``itemNotFound`` after that, or once it expired).
- ``GET /me/drive/items/{id}`` and ``GET /me/drive/root:/{path}`` (the driveItem, with
  ``@microsoft.graph.downloadUrl``; 404 ``itemNotFound``), ``GET …:/content`` by path too,
  ``GET /me/drive/items/{id}/content`` (302 to the pre-authenticated download URL),
  ``POST /me/drive/items/{id}/invite`` (driveRecipients by ``email``/``objectId``/``alias``, roles
  ``read``/``write``; 200 ``{"value": [permission]}``; inviting someone again merges into their one
  permission), ``GET /me/drive/items/{id}/permissions`` (the owner's and the granted ones).

Storage: files under the state folder's ``drive/`` (``index.json`` and one file per item or upload
session); ``SandboxState.reset`` removes the folder. Upload tokens are kept as sha256 only.

Faults and throttling come from the middleware (``faults.py``) by path: ``{"paths": ["/up/"]}`` fails,
delays or drops upload fragments alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import graph as _graph
from .core import Sandbox, graph_error_body, iso_z, sandbox_of
from .directory import SandboxUser
from .graph import Ctx, GraphErrorResponse, Result, require, require_delegated

FRAGMENT_UNIT = 320 * 1024  # 327,680 bytes: every fragment but the last is a multiple of it
MAX_FRAGMENT = 60 * 1024 * 1024  # "less than 60 MiB" per request
MAX_SIMPLE_UPLOAD = 250 * 1024 * 1024
SESSION_LIFETIME_S = 3600.0  # each fragment extends the session (uploadSession.expirationDateTime)
MAX_INVITE_MESSAGE = 2000
FILE_SCOPES = ("Files.ReadWrite", "Files.ReadWrite.All", "Sites.ReadWrite.All")
CONFLICT_BEHAVIORS = ("fail", "replace", "rename")
_BAD_NAME_CHARS = re.compile(r'["*:<>?/\\|]')
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_MIME = {".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".csv": "text/csv",
         ".txt": "text/plain", ".json": "application/json", ".pdf": "application/pdf"}


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _item_id() -> str:
    # OneDrive for Business ids: "01" + 32 base32 characters
    return "01" + base64.b32encode(secrets.token_bytes(20)).decode()[:32]


class DriveStore:
    """Every user's drive in one folder: ``index.json`` (items, permissions, upload sessions) and blobs."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "drive"
        self._lock = threading.RLock()

    # index.json is small (metadata only) and read per request, so a reset (rmtree) needs no hook here
    def _load(self) -> dict[str, Any]:
        try:
            return json.loads((self.dir / "index.json").read_text())
        except FileNotFoundError:
            return {"items": {}, "sessions": {}}

    def _save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / "index.json.tmp"
        tmp.write_text(json.dumps(data))
        tmp.replace(self.dir / "index.json")

    def blob(self, name: str) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / name

    def transaction(self) -> _Tx:
        return _Tx(self)


class _Tx:
    def __init__(self, store: DriveStore) -> None:
        self.store = store

    def __enter__(self) -> dict[str, Any]:
        self.store._lock.acquire()
        self.data = self.store._load()
        return self.data

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.store._save(self.data)
        finally:
            self.store._lock.release()


_stores: dict[str, DriveStore] = {}


def store_of(sb: Sandbox) -> DriveStore:
    key = str(sb.state_dir)
    if key not in _stores:
        _stores[key] = DriveStore(sb.state_dir)
    return _stores[key]


# -- shapes ------------------------------------------------------------------------------------
def _web_url(browser: str, owner: SandboxUser, path: str) -> str:
    # SharePoint's personal-site form: /personal/{upn with . and @ as _}/Documents/{path}
    site = re.sub(r"[^a-z0-9]", "_", owner.userPrincipalName.lower())
    return f"{browser}/personal/{site}/Documents/{quote(path)}"


def _identity(user: SandboxUser) -> dict[str, Any]:
    return {"user": {"email": user.mail, "id": user.id, "displayName": user.displayName}}


def item_json(ctx: Ctx, item: dict[str, Any], *, context: bool = True) -> dict[str, Any]:
    owner = ctx.sb.state.user(item["owner"])
    assert owner is not None
    name = PurePosixPath(item["path"]).name
    parent = str(PurePosixPath(item["path"]).parent).strip(".")
    out: dict[str, Any] = {}
    if context:
        out["@odata.context"] = f"{ctx.base}/$metadata#users('{owner.id}')/drive/items/$entity"
    out.update({
        "@microsoft.graph.downloadUrl": f"{ctx.origin}/dl/{item['download']}",
        "createdDateTime": iso_z(item["created"]),
        "eTag": f"\"{{{item['guid'].upper()}}},{item['version']}\"",
        "id": item["id"],
        "lastModifiedDateTime": iso_z(item["modified"]),
        "name": name,
        "webUrl": _web_url(ctx.browser, owner, item["path"]),
        "webDavUrl": _web_url(ctx.browser, owner, item["path"]),
        "cTag": f"\"c:{{{item['guid'].upper()}}},{item['version']}\"",
        "size": item["size"],
        "createdBy": _identity(owner),
        "lastModifiedBy": _identity(owner),
        "parentReference": {"driveType": "business", "driveId": _drive_id(owner), "id": _root_id(owner),
                            "path": f"/drive/root:{('/' + parent) if parent else ''}"},
        "file": {"mimeType": _MIME.get(PurePosixPath(name).suffix.lower(), "application/octet-stream"),
                 "hashes": {"quickXorHash": None}},
        "fileSystemInfo": {"createdDateTime": iso_z(item["created"]),
                           "lastModifiedDateTime": iso_z(item["modified"])},
        "shared": {"scope": "users"} if item["permissions"] else None,
    })
    if out["shared"] is None:
        del out["shared"]
    return out


def _drive_id(owner: SandboxUser) -> str:
    return "b!" + base64.urlsafe_b64encode(hashlib.sha256(owner.id.encode()).digest()[:24]).decode()


def _root_id(owner: SandboxUser) -> str:
    return "01" + base64.b32encode(hashlib.sha256(("root" + owner.id).encode()).digest()).decode()[:32]


def permission_json(ctx: Ctx, perm: dict[str, Any]) -> dict[str, Any]:
    user = ctx.sb.state.user(perm["user"])
    ident = ({"id": user.id, "displayName": user.displayName, "email": user.mail} if user
             else {"id": perm["user"], "displayName": None, "email": None})
    out: dict[str, Any] = {
        "id": perm["id"],
        "roles": list(perm["roles"]),
        "@deprecated.GrantedTo": "GrantedTo has been deprecated. Refer to GrantedToV2",
        "grantedTo": {"user": ident},
        "grantedToV2": {"user": ident, "siteUser": {"id": perm["site_user"], "displayName": ident["displayName"],
                                                   "loginName": f"i:0#.f|membership|{(ident['email'] or '').lower()}"}},
        "hasPassword": False,
    }
    if perm.get("invitation"):
        out["invitation"] = perm["invitation"]
    return out


# -- paths, names, conflicts ---------------------------------------------------------------------
def _clean_path(raw: str) -> str:
    parts = [p for p in unquote(raw).split("/") if p]
    if not parts:
        raise GraphErrorResponse(400, "invalidRequest", "The item path is empty.")
    for p in parts:
        if _BAD_NAME_CHARS.search(p) or p in (".", "..") or p != p.strip() or p.endswith("."):
            raise GraphErrorResponse(400, "invalidRequest", f"The provided name '{p}' contains invalid characters "
                                     "or is otherwise not allowed.")
    return "/".join(parts)


def _conflict(ctx: Ctx, body_value: Any, default: str) -> str:
    value = ctx.query.get("@microsoft.graph.conflictBehavior", body_value) or default
    if value not in CONFLICT_BEHAVIORS:
        raise GraphErrorResponse(400, "invalidRequest", f"Invalid value '{value}' for "
                                 "@microsoft.graph.conflictBehavior; use fail, replace or rename.")
    return str(value)


def _by_path(data: dict[str, Any], owner: str, path: str) -> dict[str, Any] | None:
    low = path.lower()  # OneDrive names are case-insensitive
    return next((i for i in data["items"].values() if i["owner"] == owner and i["path"].lower() == low), None)


def _free_name(data: dict[str, Any], owner: str, path: str) -> str:
    p = PurePosixPath(path)
    n = 1
    while _by_path(data, owner, path) is not None:
        path = str(p.with_name(f"{p.stem} {n}{p.suffix}"))
        n += 1
    return path


def _place(data: dict[str, Any], owner: str, path: str, behavior: str) -> tuple[str, dict[str, Any] | None]:
    """The path to write and the item it replaces (None: a new item), or 409 under ``fail``."""
    existing = _by_path(data, owner, path)
    if existing is None:
        return path, None
    if behavior == "fail":
        raise GraphErrorResponse(409, "nameAlreadyExists", "The specified item name already exists.")
    if behavior == "rename":
        return _free_name(data, owner, path), None
    return existing["path"], existing


def _write_item(ctx: Ctx, data: dict[str, Any], owner: SandboxUser, path: str, replaced: dict[str, Any] | None,
                content: bytes) -> tuple[dict[str, Any], bool]:
    now = time.time()
    if replaced is not None:
        item = replaced
        item.update(size=len(content), modified=now, version=item["version"] + 1)
    else:
        item = {"id": _item_id(), "owner": owner.id, "path": path, "size": len(content), "created": now,
                "modified": now, "guid": str(uuid.uuid4()), "version": 1, "permissions": [],
                "download": secrets.token_urlsafe(24)}
        data["items"][item["id"]] = item
    store_of(ctx.sb).blob(f"{item['id']}.bin").write_bytes(content)
    return item, replaced is None


def _require_files(ctx: Ctx) -> SandboxUser:
    user = require_delegated(ctx, "me/drive")
    require(ctx, FILE_SCOPES, code="accessDenied")
    return user


def _own_item(ctx: Ctx, data: dict[str, Any], user: SandboxUser) -> dict[str, Any]:
    item = data["items"].get(ctx.params["item"])
    if item is None or item["owner"] != user.id:
        raise GraphErrorResponse(404, "itemNotFound", "The resource could not be found.")
    return item


# -- Graph handlers ------------------------------------------------------------------------------
async def put_content(ctx: Ctx) -> Result:
    user = _require_files(ctx)
    path = _clean_path(ctx.params["path"])
    if len(ctx.body) > MAX_SIMPLE_UPLOAD:
        raise GraphErrorResponse(413, "requestBodyTooLarge", "The request body is larger than simple upload takes; "
                                 "use an upload session.")
    behavior = _conflict(ctx, None, "replace")
    with store_of(ctx.sb).transaction() as data:
        target, replaced = _place(data, user.id, path, behavior)
        item, created = _write_item(ctx, data, user, target, replaced, ctx.body)
        return Result(201 if created else 200, item_json(ctx, item))


async def create_upload_session(ctx: Ctx) -> Result:
    user = _require_files(ctx)
    path = _clean_path(ctx.params["path"])
    body = ctx.json() if ctx.body.strip() else {}
    if not isinstance(body, dict):
        raise GraphErrorResponse(400, "invalidRequest", "The request body must be an object.")
    props = body.get("item") or {}
    if not isinstance(props, dict):
        raise GraphErrorResponse(400, "invalidRequest", "'item' must be a driveItemUploadableProperties object.")
    if props.get("name") not in (None, PurePosixPath(path).name):
        raise GraphErrorResponse(400, "invalidRequest", "The item name in the body must match the name in the path.")
    behavior = _conflict(ctx, props.get("@microsoft.graph.conflictBehavior"), "fail")
    size = props.get("fileSize")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise GraphErrorResponse(400, "invalidRequest", "fileSize must be a non-negative integer.")
    token = secrets.token_urlsafe(32)
    with store_of(ctx.sb).transaction() as data:
        if behavior == "fail":
            _place(data, user.id, path, behavior)  # 409 now for a taken name
        sid = uuid.uuid4().hex
        session = {"id": sid, "owner": user.id, "path": path, "behavior": behavior, "total": size,
                   "received": 0, "expires": time.time() + SESSION_LIFETIME_S, "origin": ctx.origin,
                   "browser": ctx.browser}
        data["sessions"][_sha(token)] = session
    store_of(ctx.sb).blob(f"session-{sid}.part").write_bytes(b"")
    return Result(200, {
        "@odata.context": f"{ctx.base}/$metadata#microsoft.graph.uploadSession",
        "uploadUrl": f"{ctx.origin}/up/{token}",
        "expirationDateTime": iso_z(session["expires"]),
        "nextExpectedRanges": ["0-"],
    })


async def get_item(ctx: Ctx) -> Result:
    user = _require_files(ctx)
    with store_of(ctx.sb).transaction() as data:
        return Result(200, item_json(ctx, _own_item(ctx, data, user)))


async def get_by_path(ctx: Ctx) -> Result:
    user = _require_files(ctx)
    path = _clean_path(ctx.params["path"])
    with store_of(ctx.sb).transaction() as data:
        item = _by_path(data, user.id, path)
        if item is None:
            raise GraphErrorResponse(404, "itemNotFound", "The resource could not be found.")
        if ctx.params.get("content") is not None:
            return Result(302, None, {"Location": f"{ctx.origin}/dl/{item['download']}"})
        return Result(200, item_json(ctx, item))


async def get_content_by_path(ctx: Ctx) -> Result:
    ctx.params["content"] = "1"
    return await get_by_path(ctx)


async def get_content(ctx: Ctx) -> Result:
    user = _require_files(ctx)
    with store_of(ctx.sb).transaction() as data:
        item = _own_item(ctx, data, user)
        return Result(302, None, {"Location": f"{ctx.origin}/dl/{item['download']}"})


def _recipient(ctx: Ctx, r: Any) -> SandboxUser:
    if not isinstance(r, dict):
        raise GraphErrorResponse(400, "invalidRequest", "Each recipient must be a driveRecipient object.")
    key = r.get("objectId") or r.get("email") or r.get("alias")
    user = ctx.sb.state.user(str(key)) if key else None
    if user is None and r.get("email"):
        user = next((u for u in ctx.sb.state.users() if (u.mail or "").lower() == str(r["email"]).lower()), None)
    if user is None:
        raise GraphErrorResponse(400, "invalidRequest", f"Recipient '{key}' was not found in the tenant; the "
                                 "sandbox does not invite external users.")
    return user


async def invite(ctx: Ctx) -> Result:
    me = _require_files(ctx)
    body = ctx.json()
    if not isinstance(body, dict):
        raise GraphErrorResponse(400, "invalidRequest", "The request body must be an object.")
    recipients = body.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        raise GraphErrorResponse(400, "invalidRequest", "'recipients' must be a non-empty list of driveRecipient.")
    roles = body.get("roles")
    if not isinstance(roles, list) or not roles or not set(roles) <= {"read", "write"}:
        raise GraphErrorResponse(400, "invalidRequest", "'roles' must list 'read' and/or 'write'.")
    for flag in ("requireSignIn", "sendInvitation"):
        if flag in body and not isinstance(body[flag], bool):
            raise GraphErrorResponse(400, "invalidRequest", f"'{flag}' must be true or false.")
    message = body.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_INVITE_MESSAGE):
        raise GraphErrorResponse(400, "invalidRequest", f"'message' must be text of at most {MAX_INVITE_MESSAGE} "
                                 "characters.")
    users = [_recipient(ctx, r) for r in recipients]
    sign_in = bool(body.get("requireSignIn", False))
    out = []
    with store_of(ctx.sb).transaction() as data:
        item = _own_item(ctx, data, me)
        for u in users:
            if u.id == me.id:
                continue  # the owner has access already
            perm = next((p for p in item["permissions"] if p["user"] == u.id), None)
            if perm is None:
                perm = {"id": _permission_id(item["id"], u.id), "user": u.id, "roles": [],
                        "site_user": str(10 + len(item["permissions"]))}
                item["permissions"].append(perm)
            perm["roles"] = sorted(set(perm["roles"]) | set(roles), key=("read", "write").index)
            perm["invitation"] = {"email": u.mail, "signInRequired": sign_in}
            out.append(permission_json(ctx, perm))
        if body.get("sendInvitation", False):
            ctx.sb.counters.add("drive invitations mailed")
    return Result(200, {"@odata.context": f"{ctx.base}/$metadata#Collection(microsoft.graph.permission)",
                        "value": out})


def _permission_id(item_id: str, user_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{item_id}/{user_id}")).upper()


async def list_permissions(ctx: Ctx) -> Result:
    me = _require_files(ctx)
    with store_of(ctx.sb).transaction() as data:
        item = _own_item(ctx, data, me)
        owner = {"id": "aTowIy5mfG1lbWJlcnNoaXB8" + me.id[:8], "user": me.id, "roles": ["owner"], "site_user": "3"}
        value = [permission_json(ctx, owner)] + [permission_json(ctx, p) for p in item["permissions"]]
    return Result(200, {"@odata.context": f"{ctx.base}/$metadata#users('{me.id}')/drive/items('{item['id']}')"
                        "/permissions", "value": value})


def register(add: Any) -> None:
    seg = r"([^/]+)"
    add("PUT", r"/me/drive/root:/(.+?):/content", ["path"], put_content, "/v1.0/me/drive/root:/{path}:/content")
    add("POST", r"/me/drive/root:/(.+?):/createUploadSession", ["path"], create_upload_session,
        "/v1.0/me/drive/root:/{path}:/createUploadSession")
    add("GET", r"/me/drive/root:/(.+?):/content", ["path"], get_content_by_path, "/v1.0/me/drive/root:/{path}:/content")
    add("GET", r"/me/drive/root:/(.+)", ["path"], get_by_path, "/v1.0/me/drive/root:/{path}")
    add("GET", f"/me/drive/items/{seg}", ["item"], get_item, "/v1.0/me/drive/items/{item}")
    add("GET", f"/me/drive/items/{seg}/content", ["item"], get_content, "/v1.0/me/drive/items/{item}/content")
    add("POST", f"/me/drive/items/{seg}/invite", ["item"], invite, "/v1.0/me/drive/items/{item}/invite")
    add("GET", f"/me/drive/items/{seg}/permissions", ["item"], list_permissions,
        "/v1.0/me/drive/items/{item}/permissions")


# -- chat messages with a file (graph.py's _validate_message and post_message call these) ----------
def _same_url(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return unquote(pa.path).rstrip("/").lower() == unquote(pb.path).rstrip("/").lower() and bool(pa.path)


def reference_item(ctx: Ctx, attachment: dict[str, Any]) -> dict[str, Any]:
    """The sender's drive item a ``reference`` attachment points at, checked as the chatMessage docs
    describe the attachment (id: the GUID of the item's eTag; contentUrl: its webUrl or webDavUrl; name:
    its name), else 400 naming what does not match."""
    assert ctx.caller is not None and ctx.caller.user is not None
    user = ctx.caller.user
    aid = str(attachment["id"]).strip("{}").lower()
    url = str(attachment.get("contentUrl") or "")
    data = store_of(ctx.sb)._load()
    for item in data["items"].values():
        if item["owner"] != user.id:
            continue
        shaped = item_json(ctx, item, context=False)
        if _same_url(url, shaped["webUrl"]) or _same_url(url, shaped["webDavUrl"]):
            if aid != item["guid"].lower():
                raise GraphErrorResponse(400, "BadRequest", f"Attachment '{attachment['id']}': the id of a file "
                                         "attachment must be the GUID in the driveItem's eTag.")
            name = attachment.get("name")
            if name is not None and name != shaped["name"]:
                raise GraphErrorResponse(400, "BadRequest", f"Attachment '{attachment['id']}': name '{name}' is not "
                                         "the file's name.")
            return {**item, "name": shaped["name"]}
    raise GraphErrorResponse(400, "BadRequest", f"Attachment '{attachment['id']}': contentUrl is not a file in the "
                             "sender's OneDrive.")


def check_shared(ctx: Ctx, items: list[dict[str, Any]], member_ids: list[str]) -> None:
    """Every member of the chat can open every attached file (owner or a read/write permission), else 403."""
    for item in items:
        allowed = {item["owner"], *(p["user"] for p in item["permissions"] if p["roles"])}
        missing = [m for m in member_ids if m not in allowed]
        if missing:
            names = ", ".join(sorted((ctx.sb.state.user(m).displayName if ctx.sb.state.user(m) else m)
                                     for m in missing))
            raise GraphErrorResponse(403, "Forbidden", f"The file '{item['name']}' is not shared with every member "
                                     f"of the chat ({names}); share it with them (driveItem invite) first.")


# -- the upload URL and the download URL (outside /v1.0, no bearer token) -------------------------
def _error(request: Request, status: int, code: str, message: str, inner: str | None = None) -> JSONResponse:
    body = graph_error_body(request.scope, code, message)
    if inner:
        body["error"]["innerError"]["code"] = inner
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _session_status(session: dict[str, Any]) -> dict[str, Any]:
    return {"expirationDateTime": iso_z(session["expires"]), "nextExpectedRanges": [f"{session['received']}-"]}


async def upload_url(request: Request) -> Response:
    sb = sandbox_of(request)
    store = store_of(sb)
    request.scope["route_template"] = "/up/{session}"
    key = _sha(request.path_params["token"])
    body = await request.body()
    if request.headers.get("authorization"):
        return _error(request, 401, "unauthenticated", "Do not send an Authorization header to an upload URL; it "
                      "carries its own authorisation.")
    with store.transaction() as data:
        session = data["sessions"].get(key)
        if session is None or session["expires"] < time.time():
            if session is not None:
                del data["sessions"][key]
            return _error(request, 404, "itemNotFound", "The upload session was not found or has expired.")
        part = store.blob(f"session-{session['id']}.part")
        if request.method == "GET":
            return JSONResponse(_session_status(session), headers={"Cache-Control": "no-store"})
        if request.method == "DELETE":
            del data["sessions"][key]
            part.unlink(missing_ok=True)
            return Response(status_code=204)
        m = _RANGE.match(request.headers.get("content-range", "").strip())
        if m is None:
            return _error(request, 400, "invalidRequest", "A fragment needs a Content-Range header 'bytes "
                          "start-end/total'.")
        start, end, total = (int(g) for g in m.groups())
        length = end - start + 1
        if end < start or end >= total:
            return _error(request, 400, "invalidRequest", "The Content-Range is not a valid range of the file.")
        if session["total"] is not None and session["total"] != total:
            return _error(request, 400, "invalidRequest", f"The Content-Range total {total} differs from the file "
                          f"size {session['total']} given before.")
        if len(body) != length:
            return _error(request, 400, "invalidRequest", f"The fragment has {len(body)} bytes but its Content-Range "
                          f"declares {length}.")
        if length >= MAX_FRAGMENT:
            return _error(request, 413, "requestBodyTooLarge", "A fragment must be smaller than 60 MiB.")
        if start < session["received"]:
            return _error(request, 416, "invalidRange", "The uploaded fragment overlaps with data that has already "
                          "been received.", inner="fragmentOverlap")
        if start > session["received"]:
            return _error(request, 416, "invalidRange", f"Fragments must be uploaded in order; the next expected "
                          f"byte is {session['received']}.")
        last = end + 1 == total
        if not last and length % FRAGMENT_UNIT:
            return _error(request, 400, "invalidRequest", "Each fragment but the last must be a multiple of 320 KiB "
                          "(327,680 bytes).")
        with part.open("ab") as fh:
            fh.write(body)
        session["total"] = total
        session["received"] = end + 1
        session["expires"] = time.time() + SESSION_LIFETIME_S
        if not last:
            return JSONResponse(_session_status(session), status_code=202, headers={"Cache-Control": "no-store"})
        owner = sb.state.user(session["owner"])
        assert owner is not None
        ctx = Ctx(sb, request.scope, "PUT", "", {}, {}, b"", session["origin"], session["browser"])
        try:
            target, replaced = _place(data, owner.id, session["path"], session["behavior"])
        except GraphErrorResponse as e:
            # Graph keeps the session until it expires, so the client can commit it under another name
            session["received"] = end + 1
            return _error(request, e.status, e.code, "Another file exists with the same name as the uploaded "
                          "session.")
        item, created = _write_item(ctx, data, owner, target, replaced, part.read_bytes())
        del data["sessions"][key]
        part.unlink(missing_ok=True)
        return JSONResponse(item_json(ctx, item), status_code=201 if created else 200,
                            headers={"Cache-Control": "no-store"})


async def download_url(request: Request) -> Response:
    sb = sandbox_of(request)
    request.scope["route_template"] = "/dl/{item}"
    token = request.path_params["token"]
    store = store_of(sb)
    data = store._load()
    item = next((i for i in data["items"].values() if secrets.compare_digest(i["download"], token)), None)
    if item is None:
        return _error(request, 404, "itemNotFound", "The resource could not be found.")
    name = PurePosixPath(item["path"]).name
    return Response(store.blob(f"{item['id']}.bin").read_bytes(), headers={
        "Content-Type": _MIME.get(PurePosixPath(name).suffix.lower(), "application/octet-stream"),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}", "Cache-Control": "no-store"})


routes = [
    Route("/up/{token}", upload_url, methods=["GET", "PUT", "DELETE"]),
    Route("/dl/{token}", download_url, methods=["GET"]),
]

# Registered from here (app.py imports this module), so that graph.py does not import it back.
_graph.register_routes(register)
_graph.routes.extend(routes)
_graph.FILE_HOOKS.update(reference_item=reference_item, check_shared=check_shared)
