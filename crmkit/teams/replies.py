"""Replies filed on the record (issue 17 part 3): a reply in Teams to a message crmkit posted becomes a TS contact.

Opt-in: the system setting ``teams.file_replies`` (a Teams administrator's, default off). A *pass* reads, with the
sender's delegated token, the conversations crmkit posted to and files each new reply **once**:

- **Which messages are watched**: the outbox's delivered rows (``status = 'sent'`` with their ``chat_id`` and Graph
  ``message_id``) of the last :data:`WATCH_DAYS` days, of one sender: a user's own sends (``teams_manual``, their
  Teams account) or the campaign account's (``teams_campaign``).
- **Chats**: one ``GET /chats/{id}/messages?$orderby=lastModifiedDateTime desc&$filter=lastModifiedDateTime gt
  <watermark>&$top=50`` per chat (chat-list-messages: the filter applies with an ``$orderby`` on the same property;
  50 is the largest page), pages followed while they hold newer messages. A reply is a message carrying a
  ``messageReference`` attachment (chatmessage-replywithquote) whose id is one of crmkit's message ids in that chat,
  written by someone other than the sending account.
- **Channels**: the replies of a root message crmkit posted (``GET /teams/{t}/channels/{c}/messages/{m}/replies``,
  newest first, ``$top=50``; that list has no date filter, so the watermark only stops the paging).
- **Once**: ``teams_replies`` has the primary key (conversation, reply id). The reply row, its contacts and
  transfer-log rows and the conversation's new watermark commit in one transaction; the INSERT is ``ON CONFLICT DO
  NOTHING``, so a second pass, a restarted worker or two workers on PostgreSQL (the loser's transaction fails to
  serialize and is retried, then sees the row) file nothing twice. A conversation whose read failed keeps its old
  watermark: the next pass reads it again, and nothing is lost.
- **Watermark** (``teams_reply_watermarks``): the newest ``lastModifiedDateTime`` read in a conversation (Graph's
  clock); a pass asks for messages newer than it less :data:`REREAD` (a message stored a moment late is not passed
  over; what is read twice is known by its key). A conversation's first pass starts where the read-back of an
  unanswered post would (:meth:`GraphChatGateway.window_start` of the first crmkit post in it).
- **Limits**: the requests go through the delivery client's pacing (Teams: 1 request per second per chat, the
  tenant's budget; shared by every process on PostgreSQL), retried on 429 and 503/504 like every GET.
  :func:`poll_cost` says what a pass over N chats costs.

Each reply files a contact of type TS on each address of the message it answers (subject »Antwort von … in Teams«,
the reply's text made inert as crmkit shows stored text, the reply's ``createdDateTime`` as the contact's time,
source ``teams-reply:<conversation>:<reply id>``) and one transfer-log row per address with ``direction = 'in'``:
the author (display name and directory id) in the recipient columns, the reply's id as message id.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from .. import contacts, privacy
from ..addresses import write_new
from ..errors import IntegrationDisabled, catalog_error
from ..graph import TEAMS_TENANT_RATE
from ..text_rules import inert
from .activation import TEAMS_CONTACT_TYPE_CODE, switched_off
from .channels import CHANNEL_KIND, channel_path
from .gateway import GraphChatGateway, _graph_time
from .outbox import utcnow
from .recipients import parse_channel_key
from .results import message_link

if TYPE_CHECKING:
    from ..graph import GraphClient
    from ..session import Session
    from ..store import Tx

__all__ = ["REPLY_COLUMNS", "SETTING", "FiledReply", "PollCost", "ReplyPass", "check_ready", "enabled", "poll_cost",
           "reply_pass", "reply_text", "watched"]

SETTING = "teams.file_replies"
WATCH_DAYS = 30  # a message's replies are looked for this long after it was delivered
PAGE = 50  # chat-list-messages and chatmessage-list-replies: the largest $top
REREAD = timedelta(seconds=5)
CONCURRENT = 16  # conversations read at once; the pacing decides how fast
MAX_PAGES = 20  # per conversation and pass (1,000 messages); the rest is read by the next pass
REPLY_COLUMNS = ["address_id", "contact_id", "author_name", "author_id", "created_at", "text", "reply_id",
                 "reply_to", "conversation_id"]


def enabled(session: Session) -> bool:
    """Whether replies are filed (the integration on and ``teams.file_replies`` on)."""
    return bool(session.setting("teams.enabled")) and bool(session.setting(SETTING))


def check_ready(session: Session) -> None:
    """Refuse a pass the session may not run: ``teams.send`` (PermissionDenied), the integration and the setting on
    (IntegrationDisabled, saying where to switch it on). Checked before anything is read."""
    session.require("teams.send")
    if not session.setting("teams.enabled"):
        raise switched_off()
    if not session.setting(SETTING):
        raise catalog_error(IntegrationDisabled, "error.msg.replies_off")


@dataclass(frozen=True)
class Watched:
    """A message crmkit delivered whose replies are looked for."""

    outbox_id: str
    conversation: str  # the chat id, or "<team>/<channel>/<root message>" of a channel post
    message_id: str
    kind: str  # chat | channel
    address_ids: tuple[int, ...]
    senders: frozenset[str]  # the sending account's directory id(s): its own messages are no replies
    user_name: str
    channel: str
    trigger: str
    account: str | None
    first_attempt_at: datetime | None
    team_id: str | None = None
    channel_id: str | None = None
    pace: str | None = None  # the limiter's key: the chat id, or the channel key (Teams' 1/s per channel)


@dataclass(frozen=True)
class FiledReply:
    """A reply filed by a pass: one contact per address of the message it answers."""

    conversation_id: str
    reply_id: str
    reply_to: str
    author_id: str | None
    author_name: str | None
    created_at: datetime  # local time, as contacts are stored
    text: str
    contact_ids: tuple[int, ...]
    address_ids: tuple[int, ...]


@dataclass
class ReplyPass:
    """What one pass did: the replies it filed, the conversations it read, its Graph requests, what failed."""

    filed: list[FiledReply] = field(default_factory=list)
    conversations: int = 0
    requests: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # conversation -> why it was not read (kept for next pass)

    def frame(self) -> pd.DataFrame:
        """One row per address and reply filed (:data:`REPLY_COLUMNS`); ``attrs``: requests, conversations, failed."""
        rows = [[a, c, r.author_name, r.author_id, r.created_at, r.text, r.reply_id, r.reply_to, r.conversation_id]
                for r in self.filed for a, c in zip(r.address_ids, r.contact_ids, strict=True)]
        frame = pd.DataFrame(rows, columns=REPLY_COLUMNS)
        frame.attrs.update(requests=self.requests, conversations=self.conversations, failed=dict(self.failed))
        return frame


# -- what is watched ---------------------------------------------------------------------------------------------

def _channel_target(row: Any) -> tuple[str, str] | None:
    """(team id, channel id) of a channel post's outbox row (chat kind ``channel``, its chat id the channel key
    ``channel:<team>/<channel>``, crmkit.teams.channels), else None (a chat)."""
    if row.chat_kind != CHANNEL_KIND:
        return None
    return parse_channel_key(row.chat_id)


def watched(session: Session, *, channels: Sequence[str], user: str | None,
            now: datetime | None = None) -> dict[str, list[Watched]]:
    """The delivered messages of one sender to look for replies to, by conversation."""
    since = (now or datetime.now()) - timedelta(days=WATCH_DAYS)  # finished_at is local time
    sql = ("SELECT o.id, o.chat_id, o.message_id, o.chat_kind, o.members, o.recipients, o.address_ids, "
           "o.first_attempt_at, b.user_name, b.channel, b.trigger, b.account FROM outbox o "
           "JOIN outbox_batches b ON b.id = o.batch_id WHERE o.status = 'sent' AND o.message_id IS NOT NULL "
           f"AND o.chat_id IS NOT NULL AND o.finished_at >= ? AND b.channel IN ({', '.join('?' * len(channels))})")
    params: list[Any] = [since, *channels]
    if user is not None:
        sql += " AND b.user_name = ?"
        params.append(user)
    frame = session.store.read(lambda tx: tx.df(sql + " ORDER BY o.chat_id, o.first_attempt_at", params))
    out: dict[str, list[Watched]] = {}
    for row in frame.itertuples(index=False):
        target = _channel_target(row)
        recipients = {str(r.get("id")) for r in json.loads(row.recipients or "[]") if isinstance(r, dict)}
        members = json.loads(row.members or "[]")
        # a channel post's members are the channel's: its sender is learnt from /me when its replies are read
        senders = frozenset(str(m) for m in members if isinstance(m, str)) - recipients if target is None \
            else frozenset()
        first = row.first_attempt_at
        first = None if first is None or pd.isna(first) else pd.Timestamp(first).to_pydatetime()
        common = dict(outbox_id=row.id, message_id=str(row.message_id),
                      address_ids=tuple(int(a) for a in json.loads(row.address_ids)), senders=senders,
                      user_name=row.user_name, channel=row.channel, trigger=row.trigger, account=row.account,
                      first_attempt_at=first, pace=row.chat_id)
        if target is None:
            out.setdefault(row.chat_id, []).append(Watched(conversation=row.chat_id, kind="chat", **common))
        else:
            conversation = f"{row.chat_id}/{row.message_id}"  # channel:<team>/<channel>/<root>
            out.setdefault(conversation, []).append(Watched(conversation=conversation, kind="channel",
                                                            team_id=target[0], channel_id=target[1], **common))
    return out


def _watermarks(session: Session, conversations: Sequence[str]) -> dict[str, pd.Timestamp]:
    if not conversations:
        return {}
    rows = session.store.read(lambda tx: tx.rows(
        "SELECT conversation_id, watermark FROM teams_reply_watermarks WHERE conversation_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [list(conversations)]))
    return {c: pd.Timestamp(w) for c, w in rows}


# -- reading ----------------------------------------------------------------------------------------------------

def _stamp(m: dict[str, Any]) -> pd.Timestamp:
    raw = m.get("lastModifiedDateTime") or m.get("createdDateTime") or "1970-01-01T00:00:00Z"
    return pd.Timestamp(raw).tz_convert(None)


@dataclass
class _Read:
    conversation: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    newest: pd.Timestamp | None = None
    error: str | None = None


async def _read(aio: Any, w: Watched, floor: pd.Timestamp) -> _Read:
    """A conversation's messages newer than ``floor`` (Graph's clock), newest first, every page."""
    read = _Read(w.conversation)
    if w.kind == "chat":
        path: str | None = f"/chats/{quote(w.conversation, safe=':@')}/messages"
        params: dict[str, Any] | None = {"$top": PAGE, "$orderby": "lastModifiedDateTime desc",
                                         "$filter": f"lastModifiedDateTime gt {_graph_time(floor)}"}
    else:
        path = f"{channel_path(str(w.pace))}/messages/{quote(w.message_id, safe='')}/replies"
        params = {"$top": PAGE}
    pace = w.pace or w.conversation  # as delivery paces posts: per chat, per channel
    pages = 0
    while path is not None and pages < MAX_PAGES:
        data = await aio.json("GET", path, params=params, chat_id=pace, paced=True)
        pages += 1
        older = False
        for m in data.get("value") or []:
            stamp = _stamp(m)
            if stamp <= floor:  # the channel list has no filter (and a server may ignore one): older is read
                older = True
                continue
            read.newest = stamp if read.newest is None else max(read.newest, stamp)
            read.messages.append(m)
        if older:
            break
        path, params = data.get("@odata.nextLink"), None
    return read


async def _read_all(aio: Any, first: dict[str, Watched], floors: dict[str, pd.Timestamp]) -> list[_Read]:
    from ..errors import GraphError

    gate = asyncio.Semaphore(CONCURRENT)

    async def one(conversation: str) -> _Read:
        async with gate:
            try:
                return await _read(aio, first[conversation], floors[conversation])
            except GraphError as exc:  # throttled past the retries, refused, gone: the next pass reads it again
                return _Read(conversation, error=str(exc))

    return list(await asyncio.gather(*(one(c) for c in first)))


# -- recognising and filing --------------------------------------------------------------------------------------

_BREAKS = re.compile(r"<\s*(br\s*/?|/p|/div|/li)\s*>", re.IGNORECASE)
_QUOTE = re.compile(r"<attachment\b[^>]*>\s*</attachment>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")
MAX_TEXT = 20_000  # characters of a reply kept (Teams: ~28 KB a message)


def reply_text(m: dict[str, Any]) -> str:
    """A message's text as a contact stores it: HTML made plain (line breaks kept, the quote's marker dropped,
    entities resolved), control and bidi characters removed (:func:`crmkit.text_rules.inert`)."""
    body = m.get("body") or {}
    text = str(body.get("content") or "")
    if body.get("contentType") == "html":
        text = _TAGS.sub("", _BREAKS.sub("\n", _QUOTE.sub("", text)))
        text = html.unescape(text)
    lines = [" ".join(line.split()) for line in inert(text.replace("\r\n", "\n")).split("\n")]
    return "\n".join(lines).strip("\n")[:MAX_TEXT]


def _quoted(m: dict[str, Any]) -> str | None:
    """The message id a chat reply quotes (its messageReference attachment), or None."""
    for a in m.get("attachments") or []:
        if a.get("contentType") != "messageReference":
            continue
        try:
            content = json.loads(a.get("content") or "{}")
        except ValueError:
            content = {}
        quoted = (content.get("messageId") if isinstance(content, dict) else None) or a.get("id")
        if quoted:
            return str(quoted)
    return None


def _author(m: dict[str, Any]) -> tuple[str | None, str | None]:
    user = ((m.get("from") or {}).get("user")) or {}
    return (str(user["id"]) if user.get("id") else None), (str(user["displayName"]) if user.get("displayName")
                                                            else None)


def _replies(read: _Read, watched_here: list[Watched], me: str | None = None) -> list[tuple[dict[str, Any], Watched]]:
    """The messages read that are replies (by someone but the sender, ``me`` too) to one of crmkit's messages."""
    by_id = {w.message_id: w for w in watched_here}
    found = []
    for m in read.messages:
        if m.get("messageType", "message") != "message" or m.get("deletedDateTime"):
            continue
        author, _ = _author(m)
        if author is None:  # an app or the system, not a person replying
            continue
        if watched_here[0].kind == "chat":
            target = by_id.get(_quoted(m) or "")
        else:
            target = by_id.get(str(m.get("replyToId") or watched_here[0].message_id))
        if target is None or author in target.senders or author == me:
            continue
        found.append((m, target))
    return found


def _local(stamp: str | None) -> datetime:
    """Graph's UTC stamp as the store's local naive time (contacts' ``happened_at``)."""
    if not stamp:
        return datetime.now().replace(microsecond=0)
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone().replace(tzinfo=None)


def _subject(session: Session, author: str | None) -> str:
    from ..i18n import t

    lang = session.setting("ui.default_language") or "de"  # stored once, in the CRM's language
    return inert(t("teams_replies.subject", lang, name=author or "?"))[:200]


def _file(session: Session, read: _Read, watched_here: list[Watched], by: str,
          me: str | None = None) -> list[FiledReply]:
    """File a conversation's new replies and move its watermark, in one transaction."""
    found = _replies(read, watched_here, me)
    subjects = {author: _subject(session, author) for author in {_author(m)[1] for m, _ in found}}

    def run(tx: Tx) -> list[FiledReply]:
        filed: list[FiledReply] = []
        now = datetime.now().replace(microsecond=0)
        for m, w in found:
            author_id, author_name = _author(m)
            created = _local(m.get("createdDateTime"))
            got = tx.rows(
                "INSERT INTO teams_replies (conversation_id, reply_id, outbox_id, reply_to, author_id, author_name, "
                "created_at, filed_at, filed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                "RETURNING reply_id",
                [read.conversation, str(m["id"]), w.outbox_id, w.message_id, author_id, author_name, created, now, by])
            if not got:  # filed before (another pass, another worker)
                continue
            wanted = list(w.address_ids)
            alive = {int(r[0]) for r in tx.rows(
                f"SELECT id FROM addresses WHERE id IN ({', '.join('?' * len(wanted))})", wanted)} if wanted else set()
            text = reply_text(m)
            source = f"teams-reply:{read.conversation}:{m['id']}"
            chat = None if w.kind == "channel" else read.conversation
            link = m.get("webUrl") or message_link(chat, str(m["id"]))
            ids, addresses = [], []
            for a in wanted:
                if a not in alive:  # the address was deleted since the send: nothing to file it on
                    continue
                ids.append(contacts.insert(
                    tx, address_id=a, type_code=TEAMS_CONTACT_TYPE_CODE, subject=subjects[author_name], notes=text,
                    user_name=w.user_name, source=source, happened_at=created, recipients=None,
                    message_id=str(m["id"]), link=link))
                addresses.append(a)
            privacy.log_transfers(tx, [
                privacy.TransferRecord(
                    user_name=w.user_name, channel=w.channel, trigger=w.trigger, address_id=a, fields=[],
                    outcome="sent", direction="in", recipient_id=author_id, recipient_name=author_name,
                    ms_account=w.account, message_id=str(m["id"]), message_key=f"reply:{read.conversation}:{m['id']}",
                    detail=f"reply to {w.message_id}")
                for a in addresses], on_conflict="ignore")
            filed.append(FiledReply(read.conversation, str(m["id"]), w.message_id, author_id, author_name, created,
                                    text, tuple(ids), tuple(addresses)))
        if read.newest is not None:
            mark = read.newest.to_pydatetime()
            tx.execute(
                "INSERT INTO teams_reply_watermarks (conversation_id, watermark, polled_at) VALUES (?, ?, ?) "
                "ON CONFLICT (conversation_id) DO UPDATE SET watermark = greatest(teams_reply_watermarks.watermark, "
                "excluded.watermark), polled_at = excluded.polled_at", [read.conversation, mark, utcnow()])
        return filed

    return write_new(session.store, run)  # contacts are numbered max(id) + 1: PostgreSQL's race is retried


def reply_pass(session: Session, graph: Callable[[], GraphClient], *, channels: Sequence[str],
               user: str | None) -> ReplyPass:
    """One pass over one sender's watched conversations (see the module docstring); files what is new.

    Args:
        session: the CRM session (its store; its user files nothing in their own name: contacts and log rows
            carry the sending CRM user's).
        graph: the sender's Graph client, paced at Teams' limits; called only when there is something to read.
        channels: ``["teams_manual"]`` (a user's own sends, with ``user``) or ``["teams_campaign"]``.
        user: the CRM user whose sends are watched (None: every user's of those channels).

    Rights and settings are the caller's (:func:`check_ready`).
    """
    result = ReplyPass()
    by_conversation = watched(session, channels=channels, user=user)
    if not by_conversation:
        return result
    client = graph()
    marks = _watermarks(session, list(by_conversation))
    gateway = GraphChatGateway(client)
    floors: dict[str, pd.Timestamp] = {}
    first: dict[str, Watched] = {}
    for conversation, items in by_conversation.items():
        first[conversation] = items[0]
        if conversation in marks:
            floors[conversation] = marks[conversation] - pd.Timedelta(REREAD)
        else:
            starts = [w.first_attempt_at for w in items if w.first_attempt_at is not None]
            since = min(starts) if starts else utcnow() - timedelta(days=WATCH_DAYS)
            floors[conversation] = gateway.window_start(since)
    before = client.stats.get("requests", 0)
    me: str | None = None
    if any(w.kind == "channel" for w in first.values()):  # who posted them: their own replies are none
        me = str(client.me().get("id") or "") or None
    reads = client.submit(_read_all(client.aio, first, floors)).result()
    result.requests = client.stats.get("requests", 0) - before
    result.conversations = len(reads)
    for read in reads:
        if read.error is not None:
            result.failed[read.conversation] = read.error
            continue
        result.filed.extend(_file(session, read, by_conversation[read.conversation], session.user.name, me))
    return result


# -- what a pass costs --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PollCost:
    """Graph requests of reply passes over ``chats`` conversations every ``interval_s`` seconds."""

    chats: int
    interval_s: float
    per_pass: float  # requests of one pass
    pass_s: float  # the shortest a pass can take at the tenant's pace
    per_minute: float  # requests per minute (passes back to back when a pass outlasts the interval)


def poll_cost(chats: int, interval_s: float, *, pages_per_chat: float = 1.0,
              tenant_rps: float = TEAMS_TENANT_RATE, headroom: float = 0.95) -> PollCost:
    """What polling ``chats`` conversations every ``interval_s`` seconds costs in Graph requests.

    A pass asks each conversation once (``pages_per_chat`` > 1 when many messages came in since the last pass);
    Teams takes 20 GETs of chat messages per second per app and tenant (1 per chat), which the pacing keeps
    under, so a pass over N chats takes at least N / 19 seconds. ``poll_cost(1000, 60)``: 1,000 requests a pass,
    >= 52.6 s a pass, 1,000 requests a minute.
    """
    if chats < 0 or interval_s <= 0 or pages_per_chat < 1 or tenant_rps <= 0:
        raise ValueError("chats >= 0, interval_s > 0, pages_per_chat >= 1, tenant_rps > 0")
    per_pass = chats * pages_per_chat
    pass_s = per_pass / (tenant_rps * headroom)
    return PollCost(chats, interval_s, per_pass, pass_s, per_pass * 60 / max(interval_s, pass_s))
