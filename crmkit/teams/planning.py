"""Planning a send: which messages go to whom, rendered and checked, before anything is written.

:func:`plan_ids` turns address ids, checked recipients, the prefixed subject and the text into a
:class:`SendPlan`: the personal-data policy is asked for the addresses, every message is rendered in the
Teams display format (a card or table per record, or a digest split under Teams' size limit) and
size-checked. Nothing here sends or writes; :mod:`crmkit.teams.staging` writes a plan to the outbox.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import privacy, record_links
from ..errors import NotFound, ValidationError, catalog_error
from .channels import CHANNEL_KIND, add_mentions
from .compose import build_message, check_size, split_rows
from .options import SendOptions
from .outbox import OutboxMessage

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["PLAN_CHUNK", "SendPlan", "address_ids", "plan_ids"]

PLAN_CHUNK = 1_000  # records planned, rendered and staged in the outbox at a time by send()


@dataclass
class SendPlan:
    """Everything a send would do; ``preview()`` returns it, ``send()`` carries it out."""

    subject: str
    text: str
    options: SendOptions
    channel: str
    trigger: str
    me: dict[str, Any]
    recipients: list[dict[str, Any]]
    messages: list[OutboxMessage]
    blocked: dict[int, str]
    log: bool
    purpose: str | None
    field_names: dict[int, list[str]] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """One row per message: recipients, records, size and the exact body."""
        rows = []
        for m in self.messages:
            rows.append({
                "recipients": ", ".join(r["name"] for r in m.recipients),
                "records": m.address_ids,
                "chat": m.chat_kind,
                "subject": m.payload["subject"],
                "size_bytes": len(json.dumps(m.payload, ensure_ascii=False).encode()),
                "body_html": m.payload["body"]["content"],
                "card": m.payload.get("attachments", [{}])[0].get("content"),
                "fields": sorted({f for a in m.address_ids for f in self.field_names.get(a, [])}),
            })
        for address_id, reason in self.blocked.items():
            rows.append({"recipients": "", "records": [address_id], "chat": None, "subject": self.subject,
                         "size_bytes": 0, "body_html": None, "card": None, "fields": [],
                         "blocked": reason})
        return pd.DataFrame(rows)


def address_ids(crm: CRM, records: Any) -> list[int]:
    """The address ids ``records`` names: an id, ids, a DataFrame with an ``id`` column, or a SQL filter."""
    if isinstance(records, bool):
        raise ValidationError("records must be address ids, a DataFrame with an id column, or a SQL filter.")
    if isinstance(records, int) or (hasattr(records, "__index__") and not isinstance(records, str)):
        return [int(records)]
    if isinstance(records, pd.DataFrame):
        if "id" not in records.columns:
            raise ValidationError("A DataFrame of records needs the address id column 'id'.")
        return [int(i) for i in records["id"].tolist()]
    if isinstance(records, str):
        return [int(i) for i in crm.addresses(where=records, columns=["id"])["id"].tolist()]
    if isinstance(records, Iterable):
        ids = []
        for r in records:
            if isinstance(r, bool) or not hasattr(r, "__index__"):
                raise ValidationError(f"An address id is an integer, not {r!r}.")
            ids.append(int(r))
        return ids
    raise ValidationError("records must be address ids, a DataFrame with an id column, or a SQL filter.")

def plan_ids(
    crm: CRM, ids: list[int], options: SendOptions, full_subject: str, message: str, me: dict[str, Any],
    people: list[dict[str, Any]], lang: str, fmt: Any, *, channel: str, trigger: str,
) -> SendPlan:
    """Every message of a send of ``ids`` (checked recipients, subject, text): rendered, size-checked and
    asked of the personal-data policy; nothing is sent or written."""
    frame = crm.addresses(id=ids)
    found = {int(r["id"]): r for r in frame.astype(object).where(frame.notna(), None).to_dict("records")}
    missing = [a for a in ids if a not in found]
    if missing:
        raise catalog_error(NotFound, "error.msg.no_addresses_sent", ids=missing[:10])
    names = {a: (fmt.rendered_field_names(found[a]) if options.include_record else []) for a in ids}
    decision = privacy.check_transfer(
        crm, channel, ids, options.purpose, fields=sorted({n for v in names.values() for n in v}),
    )
    allowed_ids = set(decision.allowed_ids)  # a set: decision.allowed(a) scans every address
    allowed = [a for a in ids if a in allowed_ids]
    targets = [p for p in people if p.get("kind") == CHANNEL_KIND]  # channels: a post each, no chat
    recips = [{"id": p["id"], "name": p.get("displayName") or p.get("userPrincipalName") or p["id"]}
              for p in people if p.get("kind") != CHANNEL_KIND]
    messages: list[OutboxMessage] = []
    lanes = ([[r] for r in recips] if options.chat == "one_on_one" else [recips]) if recips else []
    kind = "oneOnOne" if options.chat == "one_on_one" else "group"
    topic = full_subject[:250] if kind == "group" else None
    # The deep link per record (»Im CRM öffnen«): the setting once per plan; empty means no link.
    base = record_links.check_base(crm.setting(record_links.SETTING))
    links = {a: record_links.record_url(base, a) for a in allowed} if base else {}
    for lane in lanes:
        members = [me["id"], *(r["id"] for r in lane)]
        if options.mode == "per_record":
            for a in allowed:
                messages.append(record_message(full_subject, message, found[a], fmt, lang, options,
                                                     kind, members, lane, topic, names[a], links.get(a)))
        else:
            messages.extend(digest_messages(full_subject, message, [found[a] for a in allowed], fmt,
                                                  lang, options, kind, members, lane, topic, names, links))
    channel_recips = []
    for target in targets:  # the same messages as for a person, posted to the channel, @mentions first
        lane = [channel_recipient(target)]
        channel_recips.extend(lane)
        if options.mode == "per_record":
            posts = [record_message(full_subject, message, found[a], fmt, lang, options, CHANNEL_KIND,
                                    target["members"], lane, None, names[a], links.get(a)) for a in allowed]
        else:
            posts = digest_messages(full_subject, message, [found[a] for a in allowed], fmt, lang, options,
                                    CHANNEL_KIND, target["members"], lane, None, names, links)
        for m in posts:
            m.payload = add_mentions(m.payload, target.get("mention") or [])
            check_size(m.payload)
            m.chat_id = target["id"]
        messages.extend(posts)
    return SendPlan(
        subject=full_subject, text=message, options=options, channel=channel, trigger=trigger, me=me,
        recipients=[*recips, *channel_recips], messages=messages, blocked=decision.blocked, log=decision.log,
        purpose=decision.purpose, field_names=names,
    )

def channel_recipient(target: dict[str, Any]) -> dict[str, Any]:
    """A channel as the outbox's (and the transfer log's) recipient: its key, "Team / Channel", and its
    member and guest counts at planning time (the disclosure the post makes)."""
    return {"id": target["id"], "name": target["displayName"], "members": int(target["member_count"]),
            "guests": int(target["guest_count"])}


def record_message(subject: str, text: str, record: dict[str, Any], fmt: Any, lang: str,
                   options: SendOptions, kind: str, members: list[str], lane: list[dict[str, str]],
                   topic: str | None, names: list[str], link: str | None = None) -> OutboxMessage:
    marker = uuid.uuid4().hex
    card = table = None
    if options.include_record:  # the link is part of the card or table, so the size check below counts it
        if options.record_format == "card":
            card = fmt.card(record, lang, link=link)
        else:
            table = fmt.html_table(record, lang, link=link)
    payload = build_message(subject, text, record_html=table or "", card=card,
                            attachment_id=marker if card is not None else None, **options.payload())
    check_size(payload)
    return OutboxMessage(
        payload=payload, marker=marker, chat_kind=kind, members=members, recipients=lane,
        address_ids=[int(record["id"])], field_names={str(record["id"]): names}, topic=topic,
        contact_subject=subject, contact_notes=text or None,
    )

def digest_messages(subject: str, text: str, records: list[dict[str, Any]], fmt: Any, lang: str,
                    options: SendOptions, kind: str, members: list[str], lane: list[dict[str, str]],
                    topic: str | None, names: dict[int, list[str]],
                    links: dict[int, str] | None = None) -> list[OutboxMessage]:
    links = links or {}
    rows = [fmt.html_table_row(r, lang, link=links.get(int(r["id"]))) for r in records]
    ids_by_row = {row_index: int(r["id"]) for row_index, r in enumerate(records)}
    header = fmt.html_header(lang, links=bool(links))

    def build(chunk: list[str]) -> dict[str, Any]:
        table = f'<table class="crmkit-digest">{header}{"".join(chunk)}</table>'
        return build_message(subject, text, record_html=table, **options.payload())

    out: list[OutboxMessage] = []
    start = 0
    for chunk in split_rows(rows, build):
        chunk_ids = [ids_by_row[i] for i in range(start, start + len(chunk))]
        start += len(chunk)
        out.append(OutboxMessage(
            payload=build(chunk), marker=uuid.uuid4().hex, chat_kind=kind, members=members, recipients=lane,
            address_ids=chunk_ids, field_names={str(a): names[a] for a in chunk_ids}, topic=topic,
            contact_subject=subject, contact_notes=text or None,
        ))
    return out
