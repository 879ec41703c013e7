"""A file to the signed-in user's OneDrive, shared with chosen people: what a chat message with a file needs.

Graph's documented calls (delegated ``Files.ReadWrite``), through :class:`AsyncGraph` and its retries:

- up to :data:`SIMPLE_UPLOAD_MAX` (4 MiB): one ``PUT /me/drive/root:/{path}:/content``;
- above: ``POST …:/createUploadSession``, then fragments of :data:`FRAGMENT_SIZE` (a multiple of 320 KiB;
  Graph recommends 5-10 MiB) ``PUT`` to the session's URL with ``Content-Range`` and *without* the bearer
  token (the URL is its own authorisation; Graph may answer a token with 401);
- a fragment that fails after the client's own retries (5xx, a dropped connection, 416 for bytes Graph
  already has) is followed by ``GET`` on the URL, and the upload goes on from ``nextExpectedRanges``;
- ``POST /me/drive/items/{id}/invite`` with the recipients' object ids, role ``read``, ``requireSignIn``
  and no invitation mail. Inviting someone again changes nothing, so it is resent like a PUT.

Resuming after a crash: ``on_session`` receives the :class:`UploadSession` as soon as Graph made it; store
``session.to_json()`` (the send path's outbox) and give it to :func:`resume_upload` in a later process. The
upload URL is a capability (anyone holding it can write the file until it expires): it is left out of
``repr``, of every error text and of httpx's request log lines, and must be stored like a secret.

    shared = await share_file(graph, "crmkit/Adressen 2026-12-02 08-05.xlsx", data, [colleague_id])
    body = {"body": {"contentType": "html", "content": "Die Adressen " + shared.marker()},
            "attachments": [shared.attachment()]}
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from ..errors import GraphError
from ._client import AsyncGraph
from ._errors import GraphNotFound

__all__ = [
    "FRAGMENT_SIZE",
    "FRAGMENT_UNIT",
    "SIMPLE_UPLOAD_MAX",
    "SharedFile",
    "UploadSession",
    "cancel_upload",
    "find_file",
    "invite_readers",
    "resume_upload",
    "share_file",
    "upload_file",
]

SIMPLE_UPLOAD_MAX = 4 * 1024 * 1024
FRAGMENT_UNIT = 320 * 1024  # 327,680 bytes
FRAGMENT_SIZE = 16 * FRAGMENT_UNIT  # 5 MiB
MAX_FRAGMENT = 60 * 1024 * 1024
MAX_STALLS = 5  # status checks in a row that bring no progress before the upload gives up
_LABEL = "the upload session's URL"
_ETAG_GUID = re.compile(r"\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?")


# -- keeping upload URLs out of httpx's log ---------------------------------------------------------
class _SecretUrls(logging.Filter):
    """Replaces an upload session's URL in httpx's "HTTP Request: PUT <url> ..." lines."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls and isinstance(record.args, tuple):
            with self.lock:
                urls = set(self.urls)
            record.args = tuple(f"<{_LABEL}>" if str(a) in urls else a for a in record.args)
        return True


_FILTER = _SecretUrls()
logging.getLogger("httpx").addFilter(_FILTER)


def _hide(url: str) -> None:
    with _FILTER.lock:
        _FILTER.urls.add(str(httpx.URL(url)))


def _unhide(url: str) -> None:
    with _FILTER.lock:
        _FILTER.urls.discard(str(httpx.URL(url)))


# -- values ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UploadSession:
    """An upload session in progress: enough to resume it in another process (see :meth:`to_json`).

    ``upload_url`` is a secret (a capability); ``repr`` leaves it out.
    """

    upload_url: str = field(repr=False)
    path: str
    size: int
    sha256: str  # of the file's bytes: a resume must send the same file
    expires: str | None = None

    def to_json(self) -> str:
        return json.dumps({"upload_url": self.upload_url, "path": self.path, "size": self.size,
                           "sha256": self.sha256, "expires": self.expires})

    @classmethod
    def from_json(cls, text: str) -> UploadSession:
        data = json.loads(text)
        return cls(str(data["upload_url"]), str(data["path"]), int(data["size"]), str(data["sha256"]),
                   data.get("expires"))


@dataclass(frozen=True)
class SharedFile:
    """The uploaded, shared file: what a chat message's ``reference`` attachment needs."""

    item_id: str
    name: str
    web_url: str
    etag: str
    size: int
    permissions: tuple[dict[str, Any], ...] = ()

    @property
    def attachment_id(self) -> str:
        """The GUID in the driveItem's eTag: Graph's docs make it the attachment's id."""
        m = _ETAG_GUID.search(self.etag)
        if m is None:
            raise GraphError(f"Microsoft Graph returned the file '{self.name}' with an eTag without a GUID; "
                             "it cannot be attached to a message. Upload it again.")
        return m.group(1).lower()

    def attachment(self) -> dict[str, Any]:
        """``{"id", "contentType": "reference", "contentUrl": webUrl, "name"}`` for ``attachments``."""
        return {"id": self.attachment_id, "contentType": "reference", "contentUrl": self.web_url, "name": self.name}

    def marker(self) -> str:
        """``<attachment id="…"></attachment>`` for the message body (contentType html)."""
        return f'<attachment id="{self.attachment_id}"></attachment>'

    @classmethod
    def from_item(cls, item: dict[str, Any], permissions: Sequence[dict[str, Any]] = ()) -> SharedFile:
        return cls(str(item["id"]), str(item["name"]), str(item["webUrl"]), str(item.get("eTag") or ""),
                   int(item.get("size") or 0), tuple(permissions))


def _item_path(path: str) -> str:
    return quote(path.strip("/"), safe="/")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _next_start(status: dict[str, Any], size: int) -> int:
    ranges = status.get("nextExpectedRanges") or []
    if not ranges:
        return size
    first = str(ranges[0]).split("-", 1)[0]
    try:
        return int(first)
    except ValueError as exc:
        raise GraphError(f"Microsoft Graph returned an unreadable nextExpectedRanges '{ranges[0]}'; upload the "
                         "file again.") from exc


# -- calls -------------------------------------------------------------------------------------------
async def upload_file(
    graph: AsyncGraph, path: str, data: bytes, *, conflict: str = "rename", simple_max: int = SIMPLE_UPLOAD_MAX,
    fragment_size: int = FRAGMENT_SIZE, on_session: Callable[[UploadSession], None] | None = None,
    on_fragment: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Upload ``data`` to ``path`` under the signed-in user's OneDrive root; return the driveItem.

    Args:
        path: e.g. ``"crmkit/Adressen 2026-12-02.xlsx"`` (folders are made as needed).
        conflict: ``rename`` (default: never overwrite someone's file), ``replace`` or ``fail``.
        simple_max: up to this size one PUT; above, an upload session.
        fragment_size: bytes per fragment, a multiple of 320 KiB below 60 MiB.
        on_session: called with the new :class:`UploadSession` before the first fragment (store it to resume).
        on_fragment: called with the bytes Graph holds after each accepted fragment.

    Raises:
        GraphError: Graph refused (409 ``nameAlreadyExists`` under ``fail``, 403 without Files.ReadWrite …).
        ValueError: a fragment size Graph does not take.
    """
    _check_fragment(fragment_size)
    if conflict not in ("rename", "replace", "fail"):
        raise ValueError("conflict must be 'rename', 'replace' or 'fail'")
    if len(data) <= simple_max:
        return await graph.json("PUT", f"/me/drive/root:/{_item_path(path)}:/content", content=data,
                                params={"@microsoft.graph.conflictBehavior": conflict},
                                headers={"Content-Type": "application/octet-stream"})
    name = path.strip("/").rsplit("/", 1)[-1]
    # POST, but making a session twice only leaves an unused one behind (it expires): safe to resend.
    made = await graph.json("POST", f"/me/drive/root:/{_item_path(path)}:/createUploadSession", idempotent=True,
                            json={"item": {"@microsoft.graph.conflictBehavior": conflict, "name": name}})
    session = UploadSession(str(made["uploadUrl"]), path, len(data), _digest(data), made.get("expirationDateTime"))
    _hide(session.upload_url)
    if on_session is not None:
        on_session(session)
    return await _send_fragments(graph, session, data, 0, fragment_size, on_fragment)


async def resume_upload(
    graph: AsyncGraph, session: UploadSession, data: bytes, *, fragment_size: int = FRAGMENT_SIZE,
    on_fragment: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Finish an upload session another process started: ask Graph what it holds, send the rest.

    Raises:
        GraphNotFound: the session expired or was cancelled; upload the file anew (:func:`upload_file`).
        ValueError: ``data`` is not the file the session was made for.
    """
    _check_fragment(fragment_size)
    if len(data) != session.size or _digest(data) != session.sha256:
        raise ValueError("resume_upload needs the same file the upload session was made for")
    _hide(session.upload_url)
    start = _next_start(await _status(graph, session), session.size)
    return await _send_fragments(graph, session, data, start, fragment_size, on_fragment)


async def cancel_upload(graph: AsyncGraph, session: UploadSession) -> None:
    """``DELETE`` the session's URL: Graph drops the bytes it holds. A session already gone is fine."""
    try:
        await graph.request("DELETE", session.upload_url, auth=False, label=f"DELETE {_LABEL}")
    except GraphNotFound:
        pass
    finally:
        _unhide(session.upload_url)


async def _status(graph: AsyncGraph, session: UploadSession) -> dict[str, Any]:
    try:
        return await graph.json("GET", session.upload_url, auth=False, label=f"GET {_LABEL}")
    except GraphNotFound as exc:
        _unhide(session.upload_url)
        raise GraphNotFound(f"The upload session of '{session.path}' expired or was cancelled; upload the file "
                            "again.", status=exc.status, code=exc.code, request_id=exc.request_id) from exc


async def _send_fragments(graph: AsyncGraph, session: UploadSession, data: bytes, start: int, fragment_size: int,
                          on_fragment: Callable[[int], None] | None) -> dict[str, Any]:
    size = session.size
    stalls = 0
    while True:
        end = min(start + fragment_size, size) - 1
        try:
            response = await graph.request(
                "PUT", session.upload_url, content=data[start:end + 1], auth=False, label=f"PUT {_LABEL}",
                headers={"Content-Range": f"bytes {start}-{end}/{size}", "Content-Type": "application/octet-stream"},
                accept=frozenset({416}))
        except GraphNotFound:
            await _status(graph, session)  # raises the typed "upload again"
            raise
        except GraphError as exc:
            # 5xx beyond the client's retries, a dropped connection: Graph may hold more or less than we think
            if exc.status is not None and exc.status < 500:
                _unhide(session.upload_url)
                raise
            response = None
        if response is not None and response.status_code in (200, 201):
            _unhide(session.upload_url)
            item: dict[str, Any] = response.json()
            return item
        if response is not None and response.status_code == 202:
            start, stalls = _next_start(response.json(), size), 0
        else:  # 416 (bytes Graph has: a fragment that landed although its answer was lost) or an error
            known = _next_start(await _status(graph, session), size)
            stalls = stalls + 1 if known <= start else 0
            if stalls > MAX_STALLS:
                raise GraphError(f"Uploading '{session.path}' makes no progress (Microsoft Graph keeps expecting "
                                 f"byte {known}); try again later.")
            start = known
        if on_fragment is not None:
            on_fragment(start)
        if start >= size:  # Graph has every byte but did not answer the last fragment: it has the file
            raise GraphError(f"Microsoft Graph holds all of '{session.path}' but did not confirm the upload; look "
                             "for the file in OneDrive before uploading it again.")


def _check_fragment(fragment_size: int) -> None:
    if fragment_size <= 0 or fragment_size % FRAGMENT_UNIT or fragment_size >= MAX_FRAGMENT:
        raise ValueError("fragment_size must be a multiple of 320 KiB (327,680 bytes) below 60 MiB")


async def find_file(graph: AsyncGraph, path: str) -> dict[str, Any] | None:
    """The driveItem at ``path`` under the signed-in user's OneDrive root, or None: after a crash between the
    upload and the chat post, the send path looks for the file it made before uploading it again."""
    try:
        return await graph.json("GET", f"/me/drive/root:/{_item_path(path)}")
    except GraphNotFound:
        return None


async def invite_readers(graph: AsyncGraph, item_id: str, recipients: Sequence[str]) -> list[dict[str, Any]]:
    """Give ``recipients`` (object ids) read access to the item: sign-in required, no invitation mail.

    Returns Graph's permission objects, one per recipient.
    """
    body = {"recipients": [{"objectId": r} for r in recipients], "roles": ["read"], "requireSignIn": True,
            "sendInvitation": False}
    # Inviting the same people again leaves one permission each: safe to resend after a lost answer.
    data = await graph.json("POST", f"/me/drive/items/{quote(item_id, safe='')}/invite", json=body, idempotent=True)
    return list(data.get("value") or [])


async def share_file(
    graph: AsyncGraph, path: str, data: bytes, recipients: Sequence[str], *, conflict: str = "rename",
    simple_max: int = SIMPLE_UPLOAD_MAX, fragment_size: int = FRAGMENT_SIZE,
    on_session: Callable[[UploadSession], None] | None = None,
) -> SharedFile:
    """:func:`upload_file`, then :func:`invite_readers`; the :class:`SharedFile` a chat post needs."""
    item = await upload_file(graph, path, data, conflict=conflict, simple_max=simple_max,
                             fragment_size=fragment_size, on_session=on_session)
    permissions = await invite_readers(graph, str(item["id"]), recipients) if recipients else []
    return SharedFile.from_item(item, permissions)
