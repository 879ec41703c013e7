"""Graph's teams and channels subset (joined teams, channels, members, channel messages and replies) and the
admin hooks that post replies as a directory user.

Routes (delegated tokens; the least-privileged scope first, as Graph documents it):

- ``GET /me/joinedTeams`` (Team.ReadBasic.All): the caller's teams; only id, displayName, description,
  isArchived and tenantId carry values, the other team properties are null (user-list-joinedteams).
- ``GET /teams/{team}/channels`` (Channel.ReadBasic.All), ``$filter`` on membershipType/displayName ``eq``,
  ``$select``; private channels only for their members. ``GET /teams/{team}/channels/{channel}`` likewise.
- ``GET /teams/{team}/channels/{channel}/members`` (ChannelMember.Read.All): aadUserConversationMembers.
- ``POST /teams/{team}/channels/{channel}/messages`` and ``POST .../messages/{message}/replies``
  (ChannelMessage.Send): the chat post's body rules (``graph._validate_message``: contentType, ~28 KB, cards,
  attachment markers, mention ids in the body, a ``reference`` file from the sender's OneDrive, here shared
  with every channel member), and, as Graph does, every ``<at id="N">`` needs a ``mentions``
  entry with that id whose ``mentioned.user`` has id, displayName and userIdentityType (400 otherwise).
  Throttled per app per tenant (50/s), per app per channel and per user per channel (1/s): 429 + Retry-After.
- ``GET .../messages`` (ChannelMessage.Read.All): top-level messages newest first, ``$top`` 1..50 (default
  20), ``@odata.nextLink``, ``$expand=replies`` (each message's replies, up to 1000);
  ``GET .../messages/{message}``; ``GET .../messages/{message}/replies`` (newest first, same paging);
  ``GET .../messages/{message}/replies/{reply}``.

Every message carries ``channelIdentity {teamId, channelId}``, ``chatId`` null and a non-null ``webUrl``
(the sandbox's Teams view). Refusals: an unknown team or channel 404 NotFound; a team the caller is not in,
or a private channel they are not in, 403 Forbidden; app-only posts 401 as for chats.

Admin hooks (``/_sandbox/...``, see :data:`admin_routes`): a reply in a chat as a given user carrying Teams'
``messageReference`` attachment (chatmessage-replywithquote's documented shape), a post or reply in a channel
as a given user, and the seeded teams with their channels and members.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import SANDBOX_TENANT_ID, graph, graph_drive
from . import channels as ch
from .core import Sandbox, browser_origin, iso_z, sandbox_of
from .directory import SandboxUser
from .graph import (
    APP_ONLY_POST_MESSAGE,
    AT_RE,
    Ctx,
    GraphErrorResponse,
    Handler,
    Result,
    _next_link,
    _page_key,
    _top,
    _validate_message,
    require,
    require_delegated,
)

_SEG = r"([^/]+)"
JOINED_TEAMS_SCOPES = ("Team.ReadBasic.All", "TeamSettings.Read.All", "TeamSettings.ReadWrite.All", "User.Read.All",
                       "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
CHANNEL_READ_SCOPES = ("Channel.ReadBasic.All", "ChannelSettings.Read.All", "ChannelSettings.ReadWrite.All",
                       "Directory.Read.All", "Directory.ReadWrite.All", "Group.Read.All", "Group.ReadWrite.All")
MEMBER_READ_SCOPES = ("ChannelMember.Read.All", "ChannelMember.ReadWrite.All", "Group.Read.All", "Group.ReadWrite.All")
MESSAGE_SEND_SCOPES = ("ChannelMessage.Send", "Group.ReadWrite.All")
MESSAGE_READ_SCOPES = ("ChannelMessage.Read.All", "Group.Read.All", "Group.ReadWrite.All")


# -- JSON of teams, channels, members and messages ------------------------------------------------
def _team_json(t: ch.Team) -> dict[str, Any]:
    # joinedTeams fills id, displayName, description, isArchived and tenantId; the rest comes back null
    return {"id": t.id, "createdDateTime": None, "displayName": t.displayName, "description": t.description,
            "internalId": None, "classification": None, "specialization": None, "visibility": None, "webUrl": None,
            "isArchived": False, "tenantId": SANDBOX_TENANT_ID, "isMembershipLimitedToOwners": None,
            "memberSettings": None, "guestSettings": None, "messagingSettings": None, "funSettings": None,
            "discoverySettings": None, "summary": None}


def view_url(browser: str, c: ch.Channel, message_id: str | None = None, parent_id: str | None = None) -> str:
    """The sandbox Teams view of a channel (or one of its messages): what ``webUrl`` links to."""
    q = {"team": c.team_id, "channel": c.id}
    if message_id:
        q["message"] = message_id
    if parent_id:
        q["parentMessageId"] = parent_id
    return f"{browser}/teams?{urlencode(q, quote_via=quote)}"


def _channel_json(ctx: Ctx, c: ch.Channel) -> dict[str, Any]:
    return {"id": c.id, "createdDateTime": iso_z(ch.SEEDED_AT), "displayName": c.displayName,
            "description": c.description, "isFavoriteByDefault": None, "email": "", "tenantId": SANDBOX_TENANT_ID,
            "webUrl": view_url(ctx.browser, c), "membershipType": c.membershipType, "isArchived": False}


def _member_json(c: ch.Channel, user: SandboxUser, roles: list[str]) -> dict[str, Any]:
    import base64

    # composed like Graph's member ids (opaque to clients): "0##0##{tenant}##{channel}##{user}"
    mid = base64.b64encode(f"0##0##{SANDBOX_TENANT_ID}##{c.id}##{user.id}".encode()).decode()
    return {"@odata.type": "#microsoft.graph.aadUserConversationMember", "id": mid, "roles": roles,
            "displayName": user.displayName, "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z",
            "userId": user.id, "email": user.mail, "tenantId": SANDBOX_TENANT_ID}


def identity(user: SandboxUser) -> dict[str, Any]:
    return {"application": None, "device": None, "conversation": None,
            "user": {"@odata.type": "#microsoft.graph.teamworkUserIdentity", "id": user.id,
                     "displayName": user.displayName, "userIdentityType": "aadUser", "tenantId": SANDBOX_TENANT_ID}}


def message_json(user: SandboxUser, ms: int, msg: dict[str, Any], *, chat_id: str | None = None,
                 channel: ch.Channel | None = None, reply_to: str | None = None, web_url: str | None = None,
                 summary: str | None = None) -> dict[str, Any]:
    """A chatMessage as Graph answers it (the keys of graph.post_message's), for a chat or a channel."""
    stamp = iso_z(ms / 1000)
    return {
        "id": str(ms), "replyToId": reply_to, "etag": str(ms), "messageType": "message",
        "createdDateTime": stamp, "lastModifiedDateTime": stamp, "lastEditedDateTime": None,
        "deletedDateTime": None, "subject": msg.get("subject"), "summary": summary, "chatId": chat_id,
        "importance": msg.get("importance", "normal"), "locale": "en-us", "webUrl": web_url,
        "channelIdentity": {"teamId": channel.team_id, "channelId": channel.id} if channel else None,
        "policyViolation": None, "eventDetail": None, "from": identity(user),
        "body": {"contentType": msg["content_type"], "content": msg["content"]},
        "attachments": msg.get("attachments", []), "mentions": msg.get("mentions", []), "reactions": [],
        "messageHistory": [],
    }


# -- lookups and refusals ---------------------------------------------------------------------------
def _team_for(ctx: Ctx, scopes: tuple[str, ...]) -> tuple[ch.Team, SandboxUser]:
    user = require_delegated(ctx, f"teams/{ctx.params['team']}")
    require(ctx, scopes)
    t = ch.team(ctx.params["team"])
    if t is None:
        raise GraphErrorResponse(404, "NotFound", f"No team found with Group Id {ctx.params['team']}.")
    if not ch.is_team_member(ctx.sb.state, t, user.id):
        raise GraphErrorResponse(403, "Forbidden", "The caller is not a member of this team.")
    return t, user


def _channel_for(ctx: Ctx, scopes: tuple[str, ...]) -> tuple[ch.Team, ch.Channel, SandboxUser]:
    t, user = _team_for(ctx, scopes)
    c = ch.channel(t.id, ctx.params["channel"])
    if c is None:
        raise GraphErrorResponse(404, "NotFound", f"Channel '{ctx.params['channel']}' not found in this team.")
    if not ch.is_channel_member(ctx.sb.state, t, c, user.id):
        raise GraphErrorResponse(403, "Forbidden", "The caller is not a member of this private channel.")
    return t, c, user


def _channel_ctx_url(ctx: Ctx, c: ch.Channel) -> str:
    return f"{ctx.base}/$metadata#teams('{c.team_id}')/channels('{quote(c.id, safe='')}')"


# -- handlers -----------------------------------------------------------------------------------------
async def joined_teams(ctx: Ctx) -> Result:
    user = require_delegated(ctx, "me/joinedTeams")
    require(ctx, JOINED_TEAMS_SCOPES)
    value = [_team_json(t) for t in ch.joined_teams(ctx.sb.state, user.id)]
    return Result(200, {"@odata.context": f"{ctx.base}/$metadata#teams", "@odata.count": len(value),
                        "value": value})


_CHANNEL_FILTER = re.compile(r"^\s*(membershipType|displayName)\s+eq\s+'((?:[^']|'')*)'\s*$")
_CHANNEL_PROPS = ("id", "createdDateTime", "displayName", "description", "isFavoriteByDefault", "email", "tenantId",
                  "webUrl", "membershipType", "isArchived")


def _channel_select(ctx: Ctx) -> list[str] | None:
    raw = ctx.query.get("$select")
    if not raw:
        return None
    lower = {p.lower(): p for p in _CHANNEL_PROPS}
    out = []
    for name in (s.strip() for s in raw.split(",") if s.strip()):
        if name.lower() not in lower:
            raise GraphErrorResponse(400, "BadRequest",
                                     f"Could not find a property named '{name}' on type 'microsoft.graph.channel'.")
        out.append(lower[name.lower()])
    return out


async def list_channels(ctx: Ctx) -> Result:
    t, user = _team_for(ctx, CHANNEL_READ_SCOPES)
    chans = ch.visible_channels(ctx.sb.state, t, user.id)
    if flt := ctx.query.get("$filter"):
        m = _CHANNEL_FILTER.match(flt)
        if not m:
            raise GraphErrorResponse(400, "BadRequest", f"Unsupported $filter '{flt}' on channels; the sandbox "
                                     "filters membershipType or displayName with eq.")
        want = m.group(2).replace("''", "'")
        chans = [c for c in chans if getattr(c, m.group(1)) == want]
    props = _channel_select(ctx)
    value = [_channel_json(ctx, c) for c in chans]
    if props:
        value = [{k: v[k] for k in props} for v in value]
    return Result(200, {"@odata.context": f"{ctx.base}/$metadata#teams('{t.id}')/channels", "@odata.count": len(value),
                        "value": value})


async def get_channel(ctx: Ctx) -> Result:
    _t, c, _user = _channel_for(ctx, CHANNEL_READ_SCOPES)
    props = _channel_select(ctx)
    data = _channel_json(ctx, c)
    if props:
        data = {k: data[k] for k in props}
    return Result(200, {"@odata.context": f"{ctx.base}/$metadata#teams('{c.team_id}')/channels/$entity", **data})


async def list_channel_members(ctx: Ctx) -> Result:
    t, c, _user = _channel_for(ctx, MEMBER_READ_SCOPES)
    value = [_member_json(c, u, roles) for u, roles in ch.channel_members(ctx.sb.state, t, c)]
    return Result(200, {"@odata.context": f"{_channel_ctx_url(ctx, c)}/members", "@odata.count": len(value),
                        "value": value})


def check_mentions(data: Any) -> None:
    """Graph's rule beyond the chat post's checks: every ``<at id="N">`` in the body has a ``mentions`` entry
    of that id, and each entry's ``mentioned.user`` names id, displayName and userIdentityType."""
    if not isinstance(data, dict):
        return
    content = ((data.get("body") or {}).get("content")) or ""
    mentions = [m for m in (data.get("mentions") or []) if isinstance(m, dict)]
    ids = [m.get("id") for m in mentions]
    if len(set(ids)) != len(ids):
        raise GraphErrorResponse(400, "BadRequest", "Mention ids must be unique within a message.")
    for n in (int(x) for x in AT_RE.findall(content)):
        if n not in ids:
            raise GraphErrorResponse(400, "BadRequest", f"The message body has <at id=\"{n}\"> but 'mentions' has "
                                     f"no entry with id {n}.")
    for m in mentions:
        user = (m.get("mentioned") or {}).get("user") if isinstance(m.get("mentioned"), dict) else None
        if not isinstance(user, dict) or not all(isinstance(user.get(k), str) and user.get(k)
                                                 for k in ("id", "displayName", "userIdentityType")):
            raise GraphErrorResponse(400, "BadRequest", f"Mention id {m.get('id')}: 'mentioned.user' needs 'id', "
                                     "'displayName' and 'userIdentityType'.")


async def _post(ctx: Ctx, reply: bool) -> Result:
    c_ = ctx.caller
    assert c_ is not None
    if c_.app_only:
        raise GraphErrorResponse(401, "Unauthorized", APP_ONLY_POST_MESSAGE)
    user = require_delegated(ctx, "teams")
    require(ctx, MESSAGE_SEND_SCOPES)
    # Throttling first, as for chat posts: a throttled request costs no lookups.
    key = f"{ctx.params['team']}/{ctx.params['channel']}"
    wait = ctx.sb.throttle.check_channel_post(c_.app_id, SANDBOX_TENANT_ID, key, user.id)
    if wait is not None:
        raise GraphErrorResponse(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(wait)})
    t = ch.team(ctx.params["team"])
    c = ch.channel(ctx.params["team"], ctx.params["channel"]) if t else None
    if t is None or c is None:
        raise GraphErrorResponse(404, "NotFound", "Team or channel not found.")
    data = ctx.json()
    msg = _validate_message(ctx, data)
    check_mentions(data)
    summary = data.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise GraphErrorResponse(400, "BadRequest", "summary must be a string.")
    members = ch.channel_members(ctx.sb.state, t, c)
    if not any(u.id == user.id for u, _ in members):
        raise GraphErrorResponse(403, "Forbidden", "The caller is not a member of this channel and cannot post to it.")
    # a file (reference attachment) must be open to every channel member, as graph_drive asks of a chat's
    graph_drive.check_shared(ctx, msg.get("files", []), [u.id for u, _ in members])
    parent = None
    if reply:
        parent = ch.message(ctx.sb.state, c, ctx.params["message"])
        if parent is None:
            raise GraphErrorResponse(404, "NotFound", f"Message '{ctx.params['message']}' not found in this channel.")
    message = store_channel_message(ctx.sb, ctx.browser, c, user, msg, parent_id=parent["id"] if parent else None,
                                    summary=summary)
    url = f"{_channel_ctx_url(ctx, c)}/messages" + (f"('{parent['id']}')/replies" if parent else "") + "/$entity"
    return Result(201, {"@odata.context": url, **message})


def store_channel_message(sb: Sandbox, browser: str, c: ch.Channel, user: SandboxUser, msg: dict[str, Any], *,
                          parent_id: str | None = None, summary: str | None = None) -> dict[str, Any]:
    ms = sb.state.next_message_ms()
    web = view_url(browser, c, str(ms), parent_id)
    message = message_json(user, ms, msg, channel=c, reply_to=parent_id, web_url=web, summary=summary)
    ch.add_message(sb.state, c, message, ms, user.id)
    return message


async def post_channel_message(ctx: Ctx) -> Result:
    return await _post(ctx, reply=False)


async def post_reply(ctx: Ctx) -> Result:
    return await _post(ctx, reply=True)


async def _list(ctx: Ctx, c: ch.Channel, reply_to: str | None, context: str) -> Result:
    top = _top(ctx, 20, 50)
    below, number = _page_key(ctx)
    page = ch.message_page(ctx.sb.state, c, top + 1, reply_to=reply_to, below=below)
    more = len(page) > top
    page = page[:top]
    body: dict[str, Any] = {"@odata.context": context, "@odata.count": len(page)}
    if more:
        last = page[-1]
        body["@odata.nextLink"] = _next_link(ctx, token={"k": [int(last["id"]), last["id"]], "p": number + 1})
    body["value"] = page
    return Result(200, body)


MAX_EXPANDED_REPLIES = 1000  # channel-list-messages: $expand=replies brings up to 1000 replies per message


async def list_channel_messages(ctx: Ctx) -> Result:
    _t, c, _user = _channel_for(ctx, MESSAGE_READ_SCOPES)
    expand = ctx.query.get("$expand")
    if expand is not None and expand.strip().lower() != "replies":
        raise GraphErrorResponse(400, "BadRequest", f"Query option '$expand={expand}' is not supported; only "
                                 "'$expand=replies'.")
    result = await _list(ctx, c, None, f"{_channel_ctx_url(ctx, c)}/messages")
    if expand is not None:  # each message with its replies, newest first, as .../replies lists them
        for m in result.body["value"]:
            replies = ch.message_page(ctx.sb.state, c, MAX_EXPANDED_REPLIES + 1, reply_to=m["id"])
            m["replies@odata.context"] = f"{_channel_ctx_url(ctx, c)}/messages('{m['id']}')/replies"
            m["replies"] = replies[:MAX_EXPANDED_REPLIES]
            if len(replies) > MAX_EXPANDED_REPLIES:
                m["replies@odata.nextLink"] = (f"{ctx.base}/teams/{c.team_id}/channels/{quote(c.id, safe=':@')}"
                                               f"/messages/{m['id']}/replies")
    return result


def _parent(ctx: Ctx, c: ch.Channel) -> dict[str, Any]:
    m = ch.message(ctx.sb.state, c, ctx.params["message"])
    if m is None:
        raise GraphErrorResponse(404, "NotFound", f"Message '{ctx.params['message']}' not found in this channel.")
    return m


async def get_channel_message(ctx: Ctx) -> Result:
    _t, c, _user = _channel_for(ctx, MESSAGE_READ_SCOPES)
    m = _parent(ctx, c)
    return Result(200, {"@odata.context": f"{_channel_ctx_url(ctx, c)}/messages/$entity", **m})


async def list_replies(ctx: Ctx) -> Result:
    _t, c, _user = _channel_for(ctx, MESSAGE_READ_SCOPES)
    m = _parent(ctx, c)
    return await _list(ctx, c, m["id"], f"{_channel_ctx_url(ctx, c)}/messages('{m['id']}')/replies")


async def get_reply(ctx: Ctx) -> Result:
    _t, c, _user = _channel_for(ctx, MESSAGE_READ_SCOPES)
    m = _parent(ctx, c)
    r = ch.message(ctx.sb.state, c, ctx.params["reply"], reply_to=m["id"])
    if r is None:
        raise GraphErrorResponse(404, "NotFound", f"Reply '{ctx.params['reply']}' not found.")
    return Result(200, {"@odata.context": f"{_channel_ctx_url(ctx, c)}/messages('{m['id']}')/replies/$entity", **r})


_T, _C, _M = f"/teams/{_SEG}", f"/channels/{_SEG}", f"/messages/{_SEG}"
# (method, pattern, path parameter names, handler): graph.py registers them with its _route
ROUTES: list[tuple[str, str, list[str], Handler]] = [
    ("GET", "/me/joinedTeams", [], joined_teams),
    ("GET", f"{_T}/channels", ["team"], list_channels),
    ("GET", f"{_T}{_C}", ["team", "channel"], get_channel),
    ("GET", f"{_T}{_C}/members", ["team", "channel"], list_channel_members),
    ("POST", f"{_T}{_C}/messages", ["team", "channel"], post_channel_message),
    ("GET", f"{_T}{_C}/messages", ["team", "channel"], list_channel_messages),
    ("GET", f"{_T}{_C}{_M}", ["team", "channel", "message"], get_channel_message),
    ("GET", f"{_T}{_C}{_M}/replies", ["team", "channel", "message"], list_replies),
    ("POST", f"{_T}{_C}{_M}/replies", ["team", "channel", "message"], post_reply),
    ("GET", f"{_T}{_C}{_M}/replies/{_SEG}", ["team", "channel", "message", "reply"], get_reply),
]
for _method, _pattern, _names, _handler in ROUTES:
    graph._route(_method, _pattern, _names, _handler)


# -- admin hooks: data coming back ---------------------------------------------------------------------
def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _hook_body(data: Any) -> tuple[str, dict[str, Any]]:
    """(sender key, validated message) of a hook's body ``{"from", "content", "content_type"}``."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    sender, content = data.get("from"), data.get("content")
    if not isinstance(sender, str) or not sender:
        raise ValueError("'from' must name a directory user (UPN or object id)")
    if not isinstance(content, str):
        raise ValueError("'content' must be a string")
    kind = data.get("content_type", "text")
    if kind not in ("text", "html"):
        raise ValueError("'content_type' must be 'text' or 'html'")
    if len(content.encode()) > 28 * 1024:
        raise ValueError("'content' is above Teams' ~28 KB per message")
    return sender, {"content_type": kind, "content": content}


async def _read(request: Request) -> Any:
    body = await request.body()
    return json.loads(body) if body else {}


def preview_text(m: dict[str, Any], limit: int = 200) -> str:
    """A message's plain text for a quote's ``messagePreview``: tags and attachment markers dropped, entities
    resolved, whitespace folded, cut at ``limit`` characters; the subject when the body has no text."""
    body = m.get("body") or {}
    text = body.get("content") or ""
    if body.get("contentType") == "html":
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split()) or (m.get("subject") or "")
    return text[:limit]


def message_reference(quoted: dict[str, Any]) -> dict[str, Any]:
    """The attachment Teams puts on a reply in a chat (documented in chatmessage-replywithquote): its id is the
    quoted message's id, ``content`` a JSON string of messageId, messagePreview and messageSender."""
    sender = ((quoted.get("from") or {}).get("user")) or {}
    content = {"messageId": quoted["id"], "messagePreview": preview_text(quoted),
               "messageSender": {"application": None, "device": None,
                                 "user": {"userIdentityType": "aadUser", "tenantId": SANDBOX_TENANT_ID,
                                          "id": sender.get("id"), "displayName": sender.get("displayName")}}}
    return {"id": quoted["id"], "contentType": "messageReference", "contentUrl": None,
            "content": json.dumps(content, ensure_ascii=False, separators=(",", ":")), "name": None,
            "thumbnailUrl": None, "teamsAppId": None}


async def chat_reply_hook(request: Request) -> Response:
    """POST ``/_sandbox/chats/{chat_id}/replies`` ``{"from", "reply_to", "content", "content_type"}``: ``from``
    (a chat member) replies to message ``reply_to`` of the chat, as Teams stores a reply: an html body opening
    with the quote's ``<attachment id>`` marker and a ``messageReference`` attachment. 201 with the message."""
    sb = sandbox_of(request)
    chat_id = request.path_params["chat_id"]
    try:
        data = await _read(request)
        sender_key, msg = _hook_body(data)
        reply_to = data.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to:
            raise ValueError("'reply_to' must be the id of a message in the chat")
    except ValueError as exc:
        return _bad(str(exc))
    if sb.state.chat(chat_id) is None:
        return _bad(f"unknown chat {chat_id!r}", 404)
    user = sb.state.user(sender_key)
    if user is None:
        return _bad(f"unknown user {sender_key!r}", 404)
    if not sb.state.is_member(chat_id, user.id):
        return _bad(f"{user.userPrincipalName} is not a member of this chat", 403)
    quoted = sb.state.message(chat_id, reply_to)
    if quoted is None:
        return _bad(f"no message {reply_to!r} in this chat", 404)
    text = msg["content"] if msg["content_type"] == "html" else html.escape(msg["content"]).replace("\n", "<br>")
    body = {"content_type": "html", "content": f"<attachment id=\"{quoted['id']}\"></attachment>\n{text}",
            "attachments": [message_reference(quoted)]}
    ms = sb.state.next_message_ms()
    message = message_json(user, ms, body, chat_id=chat_id)
    sb.state.add_message(chat_id, message, ms, user.id)
    return JSONResponse(message, status_code=201)


def _hook_channel(request: Request) -> tuple[ch.Team, ch.Channel] | JSONResponse:
    t = ch.team(request.path_params["team_id"])
    c = ch.channel(t.id, request.path_params["channel_id"]) if t else None
    if t is None or c is None:
        return _bad("unknown team or channel", 404)
    return t, c


async def _channel_hook(request: Request, reply: bool) -> Response:
    sb = sandbox_of(request)
    found = _hook_channel(request)
    if isinstance(found, JSONResponse):
        return found
    t, c = found
    try:
        sender_key, msg = _hook_body(await _read(request))
    except ValueError as exc:
        return _bad(str(exc))
    user = sb.state.user(sender_key)
    if user is None:
        return _bad(f"unknown user {sender_key!r}", 404)
    if not ch.is_channel_member(sb.state, t, c, user.id):
        return _bad(f"{user.userPrincipalName} is not a member of this channel", 403)
    parent_id = None
    if reply:
        parent = ch.message(sb.state, c, request.path_params["message_id"])
        if parent is None:
            return _bad(f"no message {request.path_params['message_id']!r} in this channel", 404)
        parent_id = parent["id"]
    message = store_channel_message(sb, browser_origin(request), c, user, msg, parent_id=parent_id)
    return JSONResponse(message, status_code=201)


async def channel_post_hook(request: Request) -> Response:
    """POST ``/_sandbox/teams/{team_id}/channels/{channel_id}/messages`` ``{"from", "content", "content_type"}``:
    a top-level post by ``from`` (a channel member), unthrottled. 201 with the message."""
    return await _channel_hook(request, reply=False)


async def channel_reply_hook(request: Request) -> Response:
    """POST ``/_sandbox/teams/{team_id}/channels/{channel_id}/messages/{message_id}/replies`` ``{"from",
    "content", "content_type"}``: ``from`` replies in the thread (listed by ``.../replies``). 201 with it."""
    return await _channel_hook(request, reply=True)


async def teams_hook(request: Request) -> Response:
    """GET ``/_sandbox/teams``: the seeded teams, their channels with member UPNs and message counts."""
    sb = sandbox_of(request)
    out = []
    for t in ch.TEAMS:
        chans = [{"id": c.id, "displayName": c.displayName, "membershipType": c.membershipType,
                  "members": [u.userPrincipalName for u, _ in ch.channel_members(sb.state, t, c)],
                  "message_count": ch.count_messages(sb.state, c)} for c in t.channels]
        out.append({"id": t.id, "displayName": t.displayName,
                    "members": [u.userPrincipalName for u, _ in ch.team_members(sb.state, t)],
                    "owners": [u.userPrincipalName for u, roles in ch.team_members(sb.state, t) if "owner" in roles],
                    "channels": chans})
    return JSONResponse({"count": len(out), "value": out})


admin_routes = [
    Route("/_sandbox/teams", teams_hook, methods=["GET"]),
    Route("/_sandbox/chats/{chat_id}/replies", chat_reply_hook, methods=["POST"]),
    Route("/_sandbox/teams/{team_id}/channels/{channel_id}/messages", channel_post_hook, methods=["POST"]),
    Route("/_sandbox/teams/{team_id}/channels/{channel_id}/messages/{message_id}/replies", channel_reply_hook,
          methods=["POST"]),
]
