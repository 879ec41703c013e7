"""A large record set as one file (issue 17 part 4): one workbook, shared with exactly the recipients, and one
chat message per recipient chat with the file attached, exactly once through the outbox.

Planning (:func:`plan_file`, when :meth:`SendOptions.one_file` says so) renders the records as an .xlsx workbook
(:mod:`crmkit.teams.workbook`: the Teams display format's fields and labels in the sender's language) and writes
one outbox row per recipient chat, like any message. The row's payload is the message without its attachment,
plus :data:`FILE_KEY`: the workbook's bytes and a OneDrive path fixed for the send
(``crmkit/<send key>/Adressen 2026-12-02 08-05.xlsx``).

Delivery (:class:`FileStep`, called by the delivery engine before it posts such a row) makes the file exist once
and be shared, in three steps whose state is kept in the row's ``file_state`` (migration 15):

1. the file: already known (``item_id``), else looked up at its path (:func:`crmkit.graph.find_file`: a process
   that died after the upload left it there), else uploaded with ``conflictBehavior=fail`` (a second upload of
   the same send is refused by OneDrive itself and the file found instead); an upload session in progress is
   kept encrypted (:class:`crmkit.auth._secrets.SecretBox`, its URL is a capability) and resumed by the next
   process (:func:`crmkit.graph.resume_upload`);
2. the invite: every recipient of the send, read only, no mail (inviting again changes nothing);
3. the post: the engine's own, with ``<attachment id>`` and the ``reference`` attachment, and its ambiguity
   read-back by the attachment id (the GUID of the file's eTag).

``CRMKIT_FILE_SIMPLE_MAX`` (bytes, default 4 MiB) and ``CRMKIT_FILE_FRAGMENT`` (a multiple of 320 KiB, default
5 MiB) change the upload's sizes, for tests and benchmarks of the upload session.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import os
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import privacy
from ..errors import ConfigError, GraphError, NotFound, ValidationError, catalog_error
from ..graph import FRAGMENT_SIZE, SIMPLE_UPLOAD_MAX, GraphNotFound, SharedFile, UploadSession
from ..i18n import format_count, t
from .compose import build_message
from .options import SendOptions
from .outbox import OutboxMessage
from .planning import SendPlan

if TYPE_CHECKING:
    from ..crm import CRM
    from ..graph import AsyncGraph
    from ..store import Store, Tx

__all__ = ["FILE_KEY", "FileStep", "file_id", "plan_file"]

FILE_KEY = "_crmkit_file"  # in an outbox row's payload: the file to attach (taken out before the post)
FOLDER = "crmkit"


def plan_file(
    crm: CRM, ids: list[int], options: SendOptions, full_subject: str, message: str, me: dict[str, Any],
    people: list[dict[str, Any]], lang: str, fmt: Any, *, channel: str, trigger: str,
) -> SendPlan:
    """The send of ``ids`` as one workbook and one message per recipient chat; nothing is sent or written."""
    if any(p.get("kind") == "channel" for p in people):
        raise catalog_error(ValidationError, "error.msg.file_no_channels")
    frame = crm.addresses(id=ids)
    clean = frame.astype(object).where(frame.notna(), None)
    found = {int(r["id"]): r for r in clean.to_dict("records")}
    missing = [a for a in ids if a not in found]
    if missing:
        raise catalog_error(NotFound, "error.msg.no_addresses_sent", ids=missing[:10])
    names = {a: fmt.rendered_field_names(found[a]) for a in ids}
    decision = privacy.check_transfer(crm, channel, ids, options.purpose,
                                      fields=sorted({n for v in names.values() for n in v}))
    allowed_ids = set(decision.allowed_ids)
    allowed = [a for a in ids if a in allowed_ids]
    recips = [{"id": p["id"], "name": p.get("displayName") or p.get("userPrincipalName") or p["id"]}
              for p in people]
    messages: list[OutboxMessage] = []
    if allowed:
        from .workbook import workbook_bytes, workbook_name  # openpyxl only for a file send

        now = datetime.now().replace(microsecond=0)
        data = workbook_bytes([found[a] for a in allowed], fmt, lang, created=now,
                              author=me.get("displayName") or None)
        name = workbook_name(lang, now)
        spec = {"path": f"{FOLDER}/{uuid.uuid4().hex}/{name}", "name": name, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "readers": [r["id"] for r in recips],
                "data": base64.b64encode(data).decode("ascii")}
        note = f"<p>{html.escape(t('teams.file.text', lang, count=format_count(len(allowed), lang)))}</p>"
        lanes = [[r] for r in recips] if options.chat == "one_on_one" else [recips]
        kind = "oneOnOne" if options.chat == "one_on_one" else "group"
        topic = full_subject[:250] if kind == "group" else None
        for lane in lanes:
            payload = build_message(full_subject, message, record_html=note, **options.payload())
            payload[FILE_KEY] = spec
            messages.append(OutboxMessage(
                payload=payload, marker=uuid.uuid4().hex, chat_kind=kind, members=[me["id"], *(r["id"] for r in lane)],
                recipients=lane, address_ids=allowed, field_names={str(a): names[a] for a in allowed}, topic=topic,
                contact_subject=full_subject, contact_notes=message or None,
            ))
    return SendPlan(
        subject=full_subject, text=message, options=options, channel=channel, trigger=trigger, me=me,
        recipients=recips, messages=messages, blocked=decision.blocked, log=decision.log,
        purpose=decision.purpose, field_names=names,
    )


def file_id(row: Any) -> str | None:
    """The OneDrive item id an outbox row's file got (for the transfer log), or None."""
    state = getattr(row, "file_state", None) if not isinstance(row, Mapping) else row.get("file_state")
    if not isinstance(state, str) or not state:
        return None
    return json.loads(state).get("item_id")


def _sizes() -> tuple[int, int]:
    simple = int(os.environ.get("CRMKIT_FILE_SIMPLE_MAX") or SIMPLE_UPLOAD_MAX)
    fragment = int(os.environ.get("CRMKIT_FILE_FRAGMENT") or FRAGMENT_SIZE)
    return simple, fragment


class FileStep:
    """The file of a file row, uploaded once and shared: the delivery engine's step before the post.

    One per engine; rows of one send (one path) take turns, so the first does the upload and the others find
    what it left in the outbox (``file_state``).
    """

    def __init__(self, store: Store, graph: AsyncGraph) -> None:
        self.store = store
        self.graph = graph
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._done: dict[str, SharedFile] = {}

    def __repr__(self) -> str:
        return "<FileStep>"

    async def complete(self, row: Mapping[str, Any], payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The payload to post (``<attachment id>`` first in the body, the ``reference`` attachment) and the
        marker to read the chat back for (the attachment id)."""
        shared = await self.shared(row, payload[FILE_KEY])  # the payload unchanged if this raises: tried again
        out = {k: v for k, v in payload.items() if k != FILE_KEY}
        out["body"] = {**payload["body"], "content": shared.marker() + payload["body"]["content"]}
        out["attachments"] = [shared.attachment()]
        return out, shared.attachment_id

    async def shared(self, row: Mapping[str, Any], spec: Mapping[str, Any]) -> SharedFile:
        """The send's file, in OneDrive and shared with every reader: steps 1 and 2 of the module's docstring."""
        from ..graph import find_file, invite_readers

        path = str(spec["path"])
        async with self._locks[path]:
            if path in self._done:
                return self._done[path]
            state = await asyncio.to_thread(self._state, str(row["batch_id"]), path)
            if not state.get("item_id"):
                item = await find_file(self.graph, path)
                if item is None:
                    item = await self._upload(row, spec, state)
                if int(item.get("size") or 0) != int(spec["size"]):
                    raise GraphError(f"The file '{spec['name']}' in OneDrive is not the one this send made "
                                     f"({item.get('size')} bytes, not {spec['size']}); look at it in OneDrive.")
                state = {"path": path, "item_id": str(item["id"]), "name": str(item["name"]),
                         "web_url": str(item["webUrl"]), "etag": str(item.get("eTag") or ""),
                         "size": int(item.get("size") or 0), "shared_with": state.get("shared_with", [])}
                await asyncio.to_thread(self._save, str(row["id"]), state)  # the session is gone from the state
            readers = [str(r) for r in spec["readers"]]
            if not set(readers) <= set(state.get("shared_with") or []):
                await invite_readers(self.graph, state["item_id"], readers)
                state = {**state, "shared_with": sorted(set(readers) | set(state.get("shared_with") or []))}
                await asyncio.to_thread(self._save, str(row["id"]), state)
            shared = SharedFile(state["item_id"], state["name"], state["web_url"], state["etag"], state["size"])
            self._done[path] = shared
            return shared

    async def _upload(self, row: Mapping[str, Any], spec: Mapping[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        from ..auth._secrets import SecretBox
        from ..config import crmkit_home
        from ..graph import find_file, resume_upload, upload_file

        data = base64.b64decode(spec["data"])
        simple, fragment = _sizes()
        box = SecretBox(crmkit_home())
        kept = state.get("session")
        if kept:  # a process that died mid-upload: go on from what Graph holds
            try:
                session = UploadSession.from_json(box.decrypt(kept["ciphertext"], kept["key_id"]))
                return await resume_upload(self.graph, session, data, fragment_size=fragment)
            except (GraphNotFound, ConfigError, ValueError):
                pass  # expired, cancelled or another machine's key: a new upload (no item exists yet)

        def keep(session: UploadSession) -> None:
            ciphertext, key_id = box.encrypt(session.to_json())
            self._save(str(row["id"]), {**state, "path": spec["path"],
                                        "session": {"ciphertext": ciphertext, "key_id": key_id}})

        try:
            return await upload_file(self.graph, str(spec["path"]), data, conflict="fail", simple_max=simple,
                                     fragment_size=fragment, on_session=keep)
        except GraphError:
            # 409: this send's file is there already (a resent PUT whose first answer was lost); or Graph holds
            # every byte without having said so. Either way the file at the path is ours.
            item = await find_file(self.graph, str(spec["path"]))
            if item is None:
                raise
            return item

    def _state(self, batch_id: str, path: str) -> dict[str, Any]:
        """What the send's rows know of the file (any row may have done a step)."""
        rows = self.store.read(lambda tx: tx.rows(
            "SELECT file_state FROM outbox WHERE batch_id = ? AND file_state IS NOT NULL", [batch_id]))
        merged: dict[str, Any] = {}
        readers: set[str] = set()
        for (text,) in rows:
            state = json.loads(text)
            if state.get("path") != path:
                continue
            readers |= set(state.get("shared_with") or [])
            if state.get("item_id"):
                merged.update({k: v for k, v in state.items() if k != "session"})
            elif state.get("session") and not merged.get("item_id"):
                merged["session"] = state["session"]
        if merged.get("item_id"):
            merged.pop("session", None)
        merged["shared_with"] = sorted(readers)
        return merged

    def _save(self, row_id: str, state: dict[str, Any]) -> None:
        def run(tx: Tx) -> None:
            tx.execute("UPDATE outbox SET file_state = ? WHERE id = ?", [json.dumps(state), row_id])

        self.store.write(run)
