"""Microsoft Graph v1.0 subset: users, chats, chat messages and JSON batching.

Handlers work on a small transport-neutral context so that ``$batch`` can run its items
through exactly the same code as top-level requests.

URL rules, as real Graph applies them to any client:

- Repeated slashes collapse (``/v1.0//me`` is ``/v1.0/me``; msgraph-sdk's default wiring sends
  them), also in ``$batch`` item URLs; nextLinks are written with the clean path.
- Path segments are percent-decoded before matching, so ids such as ``anna%40contoso...``,
  ``...%23EXT%23...`` or ``19%3A...%40unq.gbl.spaces`` resolve; query names are decoded too
  (``%24top`` is ``$top``, as kiota-based SDKs send it).
- Query options keep their ``$``: the docs make the prefix optional on beta but on v1.0 only for
  a subset of APIs.  The users APIs (``/users``, ``/users/{id}``, ``/me``) are not in it: Graph
  answers ``/v1.0/users?select=...`` with 400 Request_BadRequest "Unrecognized query argument
  specified: 'select'." (microsoft-graph-docs issue 3879), and so does the sandbox, for every
  OData option name without its ``$``.  Elsewhere an unprefixed name is an unknown parameter and
  ignored.  Always send the ``$``.
- A version the sandbox does not serve (``/beta``, ``/v2.0``, ``/v1``; or none, ``/me`` on the
  Graph host) gets 400 BadRequest "Invalid version."; an unknown segment under v1.0 gets 400
  BadRequest "Resource not found for the segment '...'"; a missing entity 404
  (``Request_ResourceNotFound`` and friends); all in Graph's body ``{"error": {"code",
  "message", "innerError": {"date", "request-id", "client-request-id"}}}``.
- Absolute links (nextLink) use the origin the client used: its Host header as sent (with the
  port), or ``X-Forwarded-Host``/``-Proto`` when trusted - from a loopback peer and naming a
  sandbox host (``*.crmkit.localhost``) or a loopback address only (``core.public_origin``), so a
  caller cannot point the links at a foreign host.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import GRAPH_RESOURCE, SANDBOX_TENANT_ID
from .core import Sandbox, browser_origin, graph_error_body, iso_z, public_origin, sandbox_of
from .directory import BASIC_USER_PROPERTIES, DEFAULT_USER_PROPERTIES, USER_PROPERTIES, SandboxUser

MAX_MESSAGE_BYTES = 28 * 1024
MAX_BATCH = 20
MAX_FILE_ATTACHMENTS = 10  # Teams' limit for a private chat's files per message
ATTACHMENT_RE = re.compile(r"<attachment\s+id=[\"']([^\"']+)[\"']\s*>\s*</attachment>", re.I)
AT_RE = re.compile(r"<at\s+id=[\"']?(\d+)[\"']?\s*>", re.I)
CARD_TYPE = "application/vnd.microsoft.card.adaptive"
APP_ONLY_POST_MESSAGE = (
    "Message POST is allowed in application-only context only for import purposes. Refer to "
    "https://docs.microsoft.com/microsoftteams/platform/graph-api/import-messages/import-external-messages-to-teams "
    "for more details."
)


# -- context and results -----------------------------------------------------------------
@dataclass
class Caller:
    claims: dict[str, Any]
    user: SandboxUser | None
    app_id: str
    scopes: frozenset[str]
    roles: frozenset[str]

    @property
    def app_only(self) -> bool:
        return self.user is None


@dataclass
class Ctx:
    sb: Sandbox
    scope: dict[str, Any]  # ASGI scope of the (outer) HTTP request, for request ids and ports
    method: str
    path: str  # after /v1.0, decoded
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    origin: str  # public origin for absolute links
    browser: str
    params: dict[str, str] = field(default_factory=dict)
    caller: Caller | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise GraphErrorResponse(400, "BadRequest", f"Unable to read JSON request payload: {exc}") from exc

    @property
    def base(self) -> str:
        return f"{self.origin}/v1.0"


@dataclass
class Result:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class GraphErrorResponse(Exception):
    """A Graph error the sandbox answers with (status, ``error.code``, message, headers), raised by its handlers.

    The server's answer, not crmkit's client-side ``crmkit.errors.GraphError`` it turns into; hence the name.
    """

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}

    def result(self, ctx: Ctx) -> Result:
        return Result(self.status, graph_error_body(ctx.scope, self.code, self.message), dict(self.headers))


def _www_authenticate() -> dict[str, str]:
    return {"WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.crmkit.localhost/common/'
            'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'}


def authenticate(ctx: Ctx) -> Caller:
    auth = ctx.headers.get("authorization", "")
    if not auth:
        raise GraphErrorResponse(401, "InvalidAuthenticationToken", "Access token is empty.", _www_authenticate())
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GraphErrorResponse(401, "InvalidAuthenticationToken", "Access token is empty.", _www_authenticate())
    try:
        claims = ctx.sb.key.verify(token.strip())
    except jwt.ExpiredSignatureError as exc:
        raise GraphErrorResponse(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.",
                                 _www_authenticate()) from exc
    except jwt.InvalidAudienceError as exc:
        raise GraphErrorResponse(401, "InvalidAuthenticationToken",
                                 "Access token validation failure. Invalid audience.",
                                 _www_authenticate()) from exc
    except jwt.InvalidTokenError as exc:
        raise GraphErrorResponse(401, "InvalidAuthenticationToken", "Access token validation failure.",
                                 _www_authenticate()) from exc
    if claims.get("tid") != SANDBOX_TENANT_ID:
        raise GraphErrorResponse(401, "InvalidAuthenticationToken", "Access token validation failure. Invalid tenant.",
                                 _www_authenticate())
    user = None
    if claims.get("idtyp") != "app":
        user = ctx.sb.state.user(claims.get("oid", ""))
        if user is None or not user.accountEnabled:
            raise GraphErrorResponse(401, "InvalidAuthenticationToken",
                                     "Access token validation failure. User not found "
                                     "or disabled.", _www_authenticate())
    return Caller(claims, user, claims.get("appid", ""), frozenset(claims.get("scp", "").split()),
                  frozenset(claims.get("roles", [])))


def require(ctx: Ctx, delegated: tuple[str, ...], application: tuple[str, ...] = (),
            code: str = "Forbidden") -> Caller:
    c = ctx.caller
    assert c is not None
    have = c.roles if c.app_only else c.scopes
    wanted = application if c.app_only else delegated
    if not set(wanted) & set(have):
        if code == "Authorization_RequestDenied":
            raise GraphErrorResponse(403, code, "Insufficient privileges to complete the operation.")
        kind = "application permissions" if c.app_only else "scope permissions"
        raise GraphErrorResponse(403, code, f"Missing {kind} on the request. API requires one of "
                                 f"'{', '.join(wanted) or '(none: not supported in this context)'}'. "
                                 f"{'Roles' if c.app_only else 'Scopes'} on the request '{' '.join(sorted(have))}'")
    return c


def require_delegated(ctx: Ctx, what: str) -> SandboxUser:
    assert ctx.caller is not None
    if ctx.caller.app_only:
        raise GraphErrorResponse(400, "BadRequest",
                                 f"/{what} request is only valid with delegated authentication flow.")
    assert ctx.caller.user is not None
    return ctx.caller.user


# -- paging ------------------------------------------------------------------------------
def _top(ctx: Ctx, default: int, maximum: int) -> int:
    raw = ctx.query.get("$top")
    if raw is None:
        return default
    try:
        top = int(raw)
    except ValueError:
        top = -1
    if not 1 <= top <= maximum:
        raise GraphErrorResponse(400, "Request_UnsupportedQuery" if maximum == 999 else "BadRequest",
                                 f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum} inclusive.")
    return top


def _offset(ctx: Ctx) -> int:
    tok = ctx.query.get("$skiptoken")
    if not tok:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
        return int(data["o"])
    except (ValueError, KeyError, TypeError) as exc:
        raise GraphErrorResponse(400, "Request_BadRequest",
                                 "The specified page token value has expired and can no longer "
                                 "be included in your request.") from exc


def _next_link(ctx: Ctx, offset: int = 0, *, token: dict[str, Any] | None = None) -> str:
    """The whole next-page URL: this request's query with a new ``$skiptoken`` (an offset, or ``token``)."""
    data = token if token is not None else {"o": offset}
    token_text = base64.urlsafe_b64encode(json.dumps({**data, "n": uuid.uuid4().hex[:8]}).encode()).decode()
    q = {k: v for k, v in ctx.query.items() if k != "$skiptoken"}
    q["$skiptoken"] = token_text.rstrip("=")
    path = "/".join(quote(seg, safe=":@") for seg in ctx.path.split("/"))
    query = urlencode(q, quote_via=quote, safe="$'(),:")
    return f"{ctx.base}{path}?{query}"


# -- users -------------------------------------------------------------------------------
_PROPS_LOWER = {p.lower(): p for p in USER_PROPERTIES}


def _select(ctx: Ctx) -> list[str] | None:
    raw = ctx.query.get("$select")
    if not raw:
        return None
    out = []
    for name in (s.strip() for s in raw.split(",") if s.strip()):
        prop = _PROPS_LOWER.get(name.lower())
        if prop is None:
            raise GraphErrorResponse(400, "Request_BadRequest",
                                     f"Could not find a property named '{name}' on type 'microsoft.graph.user'.")
        out.append(prop)
    return out


def _project(user: SandboxUser, props: list[str] | None, basic_only: bool) -> dict[str, Any]:
    data = user.graph(props or list(DEFAULT_USER_PROPERTIES))
    if basic_only:  # User.ReadBasic.All: other properties come back empty
        data = {k: (v if k in BASIC_USER_PROPERTIES else ([] if isinstance(v, list) else None))
                for k, v in data.items()}
    return data


def _typed(props: list[str] | None) -> dict[str, str]:
    """``@odata.type`` of a user from /users or /users/{id}: the documented examples carry it on the
    default property set; a ``$select`` returns the selected properties alone (the $search example)."""
    return {} if props else {"@odata.type": "#microsoft.graph.user"}


def _context_url(ctx: Ctx, entity: str, props: list[str] | None) -> str:
    sel = f"({','.join(props)})" if props else ""
    return f"{ctx.base}/$metadata#{entity}{sel}"


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\s\-_.,;:()@/'\"]+", text.lower()) if t]


def _search_clause(user: SandboxUser, clause: str) -> bool:
    prop, sep, text = clause.partition(":")
    if not sep:
        raise GraphErrorResponse(400, "Request_UnsupportedQuery",
                                 f"Syntax error: invalid $search clause '\"{clause}\"'; "
                                 "use \"property:value\".")
    real = _PROPS_LOWER.get(prop.strip().lower())
    if real is None or real in ("businessPhones", "accountEnabled"):
        raise GraphErrorResponse(400, "Request_UnsupportedQuery", f"Property '{prop}' is not supported for $search.")
    value = getattr(user, real) or ""
    text = text.strip().lower()
    if real == "displayName":  # tokenised prefix search, as Entra does for displayName
        have = _tokens(value)
        return all(any(h.startswith(w) for h in have) for w in _tokens(text)) if text else True
    return str(value).lower().startswith(text)


def _search(users: list[SandboxUser], expr: str) -> list[SandboxUser]:
    expr = expr.strip()
    if not (expr.startswith('"') and expr.endswith('"')):
        raise GraphErrorResponse(400, "Request_UnsupportedQuery", "Syntax error: $search clauses must be enclosed in "
                                 "double quotes, e.g. $search=\"displayName:wa\".")
    parts = re.split(r'"\s+(AND|OR)\s+"', expr[1:-1])
    # parts: clause, op, clause, op, ...; AND binds tighter than OR.
    groups: list[list[str]] = [[parts[0]]]
    for op, clause in zip(parts[1::2], parts[2::2], strict=True):
        if op == "AND":
            groups[-1].append(clause)
        else:
            groups.append([clause])
    return [u for u in users if any(all(_search_clause(u, c) for c in g) for g in groups)]


_FILTER_SPLIT = re.compile(r"\s+(and|or)\s+(?=(?:[^']*'[^']*')*[^']*$)", re.I)
_STARTSWITH = re.compile(r"^startswith\(\s*(\w+)\s*,\s*'((?:[^']|'')*)'\s*\)$", re.I)
_EQ = re.compile(r"^(\w+)\s+(eq|ne)\s+(?:'((?:[^']|'')*)'|(true|false|null))$", re.I)
_IN = re.compile(r"^(\w+)\s+in\s+\(((?:\s*'(?:[^']|'')*'\s*,?)+)\)$", re.I)


def _filter_clause(clause: str) -> Callable[[SandboxUser], bool]:
    clause = clause.strip()
    if m := _STARTSWITH.match(clause):
        prop, val = m.group(1), m.group(2).replace("''", "'").lower()
        real = _PROPS_LOWER.get(prop.lower())
        if real is None or real in ("businessPhones", "accountEnabled"):
            raise GraphErrorResponse(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause "
                                     f"specified for property '{prop}' of resource 'User'.")
        return lambda u: str(getattr(u, real) or "").lower().startswith(val)
    if m := _EQ.match(clause):
        prop, op = m.group(1), m.group(2).lower()
        real = _PROPS_LOWER.get(prop.lower())
        if real is None or real == "businessPhones":
            raise GraphErrorResponse(400, "Request_UnsupportedQuery", f"Unsupported or invalid query filter clause "
                                     f"specified for property '{prop}' of resource 'User'.")
        lit = m.group(4)
        want: Any = (m.group(3) or "").replace("''", "'").lower() if lit is None else (
            None if lit.lower() == "null" else lit.lower() == "true")

        def eq(u: SandboxUser) -> bool:
            v = getattr(u, real)
            same = (v.lower() == want) if isinstance(v, str) and isinstance(want, str) else v == want
            return same if op == "eq" else not same
        return eq
    if m := _IN.match(clause):
        real = _PROPS_LOWER.get(m.group(1).lower())
        if real is None or real == "businessPhones":
            raise GraphErrorResponse(400, "Request_UnsupportedQuery", "Unsupported query.")
        values = {v.replace("''", "'").lower() for v in re.findall(r"'((?:[^']|'')*)'", m.group(2))}
        return lambda u: str(getattr(u, real) or "").lower() in values
    raise GraphErrorResponse(400, "Request_UnsupportedQuery",
                             f"Invalid filter clause: '{clause}'. The sandbox supports "
                             "startswith(), eq, ne and in, joined by and/or.")


def _filter(users: list[SandboxUser], expr: str) -> list[SandboxUser]:
    parts = _FILTER_SPLIT.split(expr.strip())
    groups: list[list[Callable[[SandboxUser], bool]]] = [[_filter_clause(parts[0])]]
    for op, clause in zip(parts[1::2], parts[2::2], strict=True):
        if op.lower() == "and":
            groups[-1].append(_filter_clause(clause))
        else:
            groups.append([_filter_clause(clause)])
    return [u for u in users if any(all(f(u) for f in g) for g in groups)]


def _eventual(ctx: Ctx) -> bool:
    return ctx.headers.get("consistencylevel", "").strip().lower() == "eventual"


# OData system query options; on the directory their names must carry the $ (see the docstring)
_ODATA_OPTIONS = ("select", "expand", "filter", "orderby", "top", "skip", "skiptoken", "count", "search", "format")


def _dollar_required(ctx: Ctx) -> None:
    for name in ctx.query:
        if name.lower() in _ODATA_OPTIONS:
            raise GraphErrorResponse(400, "Request_BadRequest", f"Unrecognized query argument specified: '{name}'.")


async def list_users(ctx: Ctx) -> Result:
    _dollar_required(ctx)
    c = require(ctx, ("User.ReadBasic.All", "User.Read.All", "Directory.Read.All"),
                ("User.Read.All", "Directory.Read.All"), code="Authorization_RequestDenied")
    if c.user is not None and c.user.userType == "Guest":
        raise GraphErrorResponse(403, "Authorization_RequestDenied",
                                 "Insufficient privileges to complete the operation.")
    basic = not c.app_only and not ({"User.Read.All", "Directory.Read.All"} & c.scopes)
    q = ctx.query
    eventual = _eventual(ctx)
    if "$search" in q and not eventual:
        raise GraphErrorResponse(400, "Request_UnsupportedQuery", "Request with $search query parameter only works "
                                 "through MSGraph with a special request header: 'ConsistencyLevel: eventual'")
    if q.get("$count", "").lower() == "true" and not eventual:
        raise GraphErrorResponse(400, "Request_BadRequest", "$count is not currently supported.")
    if "$skip" in q:
        raise GraphErrorResponse(400, "Request_BadRequest", "'$skip' is not supported by the service.")
    props = _select(ctx)
    top = _top(ctx, 100, 999)
    users = sorted(ctx.sb.state.users(), key=lambda u: u.id)
    if "$search" in q:
        users = _search(users, q["$search"])
    if "$filter" in q:
        users = _filter(users, q["$filter"])
    if "$orderby" in q:
        if ("$search" in q or "$filter" in q) and not eventual:
            raise GraphErrorResponse(400, "Request_UnsupportedQuery", "Sorting not supported for current query.")
        field_name, _, direction = q["$orderby"].strip().partition(" ")
        real = _PROPS_LOWER.get(field_name.lower())
        if real not in ("displayName", "userPrincipalName", "mail", "givenName", "surname"):
            raise GraphErrorResponse(400, "Request_UnsupportedQuery", f"Order by '{field_name}' is not supported.")
        users.sort(key=lambda u: (str(getattr(u, real) or "").lower(), u.id), reverse=direction.lower() == "desc")
    offset = _offset(ctx)
    page = users[offset:offset + top]
    body: dict[str, Any] = {"@odata.context": _context_url(ctx, "users", props)}
    if q.get("$count", "").lower() == "true" and offset == 0:
        body["@odata.count"] = len(users)
    if offset + top < len(users):
        body["@odata.nextLink"] = _next_link(ctx, offset + top)
    body["value"] = [{**_typed(props), **_project(u, props, basic)} for u in page]
    return Result(200, body)


async def get_me(ctx: Ctx) -> Result:
    _dollar_required(ctx)
    user = require_delegated(ctx, "me")
    require(ctx, ("User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"),
            code="Authorization_RequestDenied")
    props = _select(ctx)
    return Result(200, {"@odata.context": _context_url(ctx, "users", props) + "/$entity", **user.graph(
        props or list(DEFAULT_USER_PROPERTIES))})


async def get_user(ctx: Ctx) -> Result:
    _dollar_required(ctx)
    c = ctx.caller
    assert c is not None
    key = ctx.params["user"]
    user = ctx.sb.state.user(key)
    self_lookup = user is not None and c.user is not None and user.id == c.user.id
    if self_lookup:
        require(ctx, ("User.Read", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"),
                code="Authorization_RequestDenied")
    else:
        require(ctx, ("User.ReadBasic.All", "User.Read.All", "Directory.Read.All"),
                ("User.Read.All", "Directory.Read.All"), code="Authorization_RequestDenied")
    if user is None:
        raise GraphErrorResponse(404, "Request_ResourceNotFound",
                                 f"Resource '{key}' does not exist or one of its queried "
                                 "reference-property objects are not present.")
    basic = not self_lookup and not c.app_only and not ({"User.Read.All", "Directory.Read.All"} & c.scopes)
    props = _select(ctx)
    return Result(200, {"@odata.context": _context_url(ctx, "users", props) + "/$entity", **_typed(props),
                        **_project(user, props, basic)})


# -- chats -------------------------------------------------------------------------------
_BIND_RE = re.compile(r"users\(\s*'([^']+)'\s*\)\s*$|users/([^/]+)$")


def _chat_json(ctx: Ctx, chat: dict[str, Any], *, with_context: bool = True,
               members: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_context:
        out["@odata.context"] = f"{ctx.base}/$metadata#chats/$entity"
    out.update({
        "id": chat["id"],
        "topic": chat["topic"],
        "createdDateTime": iso_z(chat["created"]),
        "lastUpdatedDateTime": iso_z(chat["updated"]),
        "chatType": chat["chat_type"],
        "webUrl": f"{ctx.browser}/teams?chat={quote(chat['id'], safe='')}",
        "tenantId": SANDBOX_TENANT_ID,
        "onlineMeetingInfo": None,
        "viewpoint": {"isHidden": False, "lastMessageReadDateTime": iso_z(chat["updated"])},
        "isHiddenForAllMembers": False,
    })
    if members:
        out["members"] = _members_json(ctx, chat)
    return out


def _members_json(ctx: Ctx, chat: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in ctx.sb.state.chat_members(chat["id"]):
        u = ctx.sb.state.user(m["user_id"])
        # composed as Graph's documented member ids are: "0##0##{member's tenant}##{chat}##{user}"
        mid = base64.b64encode(f"0##0##{SANDBOX_TENANT_ID}##{chat['id']}##{m['user_id']}".encode()).decode()
        out.append({
            "@odata.type": "#microsoft.graph.aadUserConversationMember",
            "id": mid,
            "roles": m["roles"],
            "displayName": u.displayName if u else None,
            "visibleHistoryStartDateTime": "0001-01-01T00:00:00Z",
            "userId": m["user_id"],
            "email": u.mail if u else None,
            "tenantId": SANDBOX_TENANT_ID,
        })
    return out


async def create_chat(ctx: Ctx) -> Result:
    c = require(ctx, ("Chat.Create", "Chat.ReadWrite"), ("Chat.Create",))
    data = ctx.json()
    if not isinstance(data, dict):
        raise GraphErrorResponse(400, "BadRequest", "The request body must be a chat object.")
    chat_type = data.get("chatType")
    if chat_type not in ("oneOnOne", "group"):
        raise GraphErrorResponse(400, "BadRequest",
                                 f"Invalid value '{chat_type}' for property 'chatType'; use 'oneOnOne' "
                                 "or 'group'.")
    members_in = data.get("members")
    if not isinstance(members_in, list) or not members_in:
        raise GraphErrorResponse(400, "BadRequest", "The chat must have a 'members' list that includes the caller.")
    members: dict[str, list[str]] = {}
    for m in members_in:
        if not isinstance(m, dict) or m.get("@odata.type") != "#microsoft.graph.aadUserConversationMember":
            raise GraphErrorResponse(400, "BadRequest",
                                     "Each member must be a #microsoft.graph.aadUserConversationMember.")
        roles = m.get("roles")
        if not isinstance(roles, list) or not roles or not set(roles) <= {"owner", "guest"}:
            raise GraphErrorResponse(400, "BadRequest", "Each member needs roles 'owner' or 'guest'.")
        bind = m.get("user@odata.bind") or ""
        bm = _BIND_RE.search(bind)
        if not bm:
            raise GraphErrorResponse(400, "BadRequest", f"Invalid 'user@odata.bind' value '{bind}'.")
        key = unquote(bm.group(1) or bm.group(2))
        user = ctx.sb.state.user(key)
        if user is None:
            raise GraphErrorResponse(404, "NotFound", f"Could not find the member user '{key}' in the tenant.")
        members[user.id] = roles
    if c.user is not None and c.user.id not in members:
        raise GraphErrorResponse(400, "BadRequest", "The list of members must include the caller.")
    topic = data.get("topic")
    if chat_type == "oneOnOne":
        if len(members) != 2:
            raise GraphErrorResponse(400, "BadRequest", "A oneOnOne chat must have exactly two distinct members.")
        if topic:
            raise GraphErrorResponse(400, "BadRequest", "A topic can only be set on group chats.")
        a, b = sorted(members)
        chat_id = f"19:{a}_{b}@unq.gbl.spaces"  # one per pair: POST /chats returns the existing one
    else:
        if len(members) < 2:
            raise GraphErrorResponse(400, "BadRequest", "A group chat needs at least two members.")
        chat_id = f"19:{uuid.uuid4().hex}@thread.v2"
    chat = ctx.sb.state.create_chat(chat_id, chat_type, topic, list(members.items()))
    return Result(201, _chat_json(ctx, chat))


async def list_chats(ctx: Ctx) -> Result:
    user = require_delegated(ctx, "me/chats")
    require(ctx, ("Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"))
    q = ctx.query
    expand = q.get("$expand", "")
    if expand and expand.strip().lower() != "members":
        raise GraphErrorResponse(400, "BadRequest", f"Query option '$expand={expand}' is not supported; only "
                                 "'$expand=members'.")
    chats = ctx.sb.state.chats(user.id)
    if flt := q.get("$filter"):
        m = re.fullmatch(r"\s*(chatType|topic)\s+eq\s+'([^']*)'\s*", flt)
        if not m:
            raise GraphErrorResponse(400, "BadRequest", f"Unsupported $filter '{flt}' on chats.")
        col = "chat_type" if m.group(1) == "chatType" else "topic"
        chats = [ch for ch in chats if (ch[col] or "") == m.group(2)]
    top = _top(ctx, 50, 50)
    offset = _offset(ctx)
    page = chats[offset:offset + top]
    body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#chats"}
    body["@odata.count"] = len(page)
    if offset + top < len(chats):
        body["@odata.nextLink"] = _next_link(ctx, offset + top)
    body["value"] = [_chat_json(ctx, ch, with_context=False, members=bool(expand)) for ch in page]
    return Result(200, body)


def _member_chat(ctx: Ctx, read_scopes: tuple[str, ...]) -> dict[str, Any]:
    c = require(ctx, read_scopes, ("Chat.Read.All",))
    chat = ctx.sb.state.chat(ctx.params["chat"])
    if chat is None or (c.user is not None and not ctx.sb.state.is_member(chat["id"], c.user.id)):
        raise GraphErrorResponse(404, "NotFound", "Chat not found or the caller is not a member of it.")
    return chat


async def get_chat(ctx: Ctx) -> Result:
    chat = _member_chat(ctx, ("Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"))
    expand = ctx.query.get("$expand", "").strip().lower() == "members"
    return Result(200, _chat_json(ctx, chat, members=expand))


async def list_members(ctx: Ctx) -> Result:
    chat = _member_chat(ctx, ("ChatMember.Read", "Chat.ReadBasic", "Chat.Read", "Chat.ReadWrite"))
    value = _members_json(ctx, chat)
    return Result(200, {"@odata.context": f"{ctx.base}/$metadata#chats('{quote(chat['id'], safe='')}')/members",
                        "@odata.count": len(value), "value": value})


# -- messages ----------------------------------------------------------------------------
def _validate_message(ctx: Ctx, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise GraphErrorResponse(400, "BadRequest", "The request body must be a chatMessage object.")
    body = data.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("content"), str):
        raise GraphErrorResponse(400, "BadRequest", "Missing body content.")
    content_type = body.get("contentType", "text") or "text"
    if content_type not in ("text", "html"):
        raise GraphErrorResponse(400, "BadRequest", f"Invalid contentType '{content_type}'; use 'text' or 'html'.")
    importance = data.get("importance", "normal") or "normal"
    if importance not in ("normal", "high", "urgent"):
        raise GraphErrorResponse(400, "BadRequest", f"Invalid importance '{importance}'; use normal, high or urgent.")
    if data.get("hostedContents"):
        raise GraphErrorResponse(400, "BadRequest", "hostedContents are not supported by the sandbox tenant.")
    subject = data.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise GraphErrorResponse(400, "BadRequest", "subject must be a string.")
    content = body["content"]
    attachments_in = data.get("attachments") or []
    mentions_in = data.get("mentions") or []
    if not isinstance(attachments_in, list) or not isinstance(mentions_in, list):
        raise GraphErrorResponse(400, "BadRequest", "attachments and mentions must be arrays.")
    size = len(content.encode()) + sum(len(str(a.get("content") or "").encode()) for a in attachments_in
                                       if isinstance(a, dict))
    size += len(json.dumps(mentions_in).encode()) if mentions_in else 0
    if size > MAX_MESSAGE_BYTES:
        raise GraphErrorResponse(413, "RequestEntityTooLarge",
                                 f"Request Entity too large: the message is {size} bytes; "
                                 f"chat messages are limited to about {MAX_MESSAGE_BYTES // 1024} KB.")
    referenced = ATTACHMENT_RE.findall(content)
    attachments = []
    ids = []
    files: list[dict[str, Any]] = []
    for a in attachments_in:
        if not isinstance(a, dict) or not a.get("id"):
            raise GraphErrorResponse(400, "BadRequest", "Each attachment needs an 'id'.")
        aid = str(a["id"])
        ids.append(aid)
        ctype = a.get("contentType")
        if ctype == CARD_TYPE:
            card = a.get("content")
            if not isinstance(card, str):
                raise GraphErrorResponse(400, "BadRequest",
                                         f"Attachment '{aid}': the adaptive card 'content' must be a "
                                         "JSON-encoded string, not an object.")
            try:
                parsed = json.loads(card)
            except ValueError as exc:
                raise GraphErrorResponse(400, "BadRequest",
                                         f"Attachment '{aid}': 'content' is not valid JSON.") from exc
            if not isinstance(parsed, dict) or parsed.get("type") != "AdaptiveCard":
                raise GraphErrorResponse(400, "BadRequest", f"Attachment '{aid}': 'content' is not an AdaptiveCard.")
        elif ctype == "reference":
            if not a.get("contentUrl"):
                raise GraphErrorResponse(400, "BadRequest",
                                         f"Attachment '{aid}': a reference attachment needs contentUrl.")
            files.append(_file_hook("reference_item")(ctx, a))  # a file in the sender's OneDrive
            a = {**a, "name": a.get("name") or files[-1]["name"]}
        else:
            raise GraphErrorResponse(400, "BadRequest", f"Attachment '{aid}': unsupported contentType '{ctype}'.")
        attachments.append({"id": aid, "contentType": ctype, "contentUrl": a.get("contentUrl"),
                            "content": a.get("content"), "name": a.get("name"),
                            "thumbnailUrl": a.get("thumbnailUrl"), "teamsAppId": a.get("teamsAppId")})
    if len(set(ids)) != len(ids):
        raise GraphErrorResponse(400, "BadRequest", "Attachment ids must be unique within a message.")
    if len(files) > MAX_FILE_ATTACHMENTS:
        raise GraphErrorResponse(400, "BadRequest", f"A message can carry at most {MAX_FILE_ATTACHMENTS} files.")
    missing = [i for i in ids if i not in referenced]
    unknown = [i for i in referenced if i not in ids]
    if missing:
        raise GraphErrorResponse(400, "BadRequest",
                                 f"Attachment with id '{missing[0]}' is not referenced in the message "
                                 "body; add <attachment id=\"" + missing[0] + "\"></attachment> to body.content.")
    if unknown:
        raise GraphErrorResponse(400, "BadRequest",
                                 f"The message body references attachment id '{unknown[0]}', which is "
                                 "not in 'attachments'.")
    mentions = []
    at_ids = [int(x) for x in AT_RE.findall(content)]
    for m in mentions_in:
        if not isinstance(m, dict) or not isinstance(m.get("id"), int):
            raise GraphErrorResponse(400, "BadRequest", "Each mention needs an integer 'id'.")
        if content_type != "html":
            raise GraphErrorResponse(400, "BadRequest", "Messages with mentions must use contentType 'html'.")
        if m["id"] not in at_ids:
            raise GraphErrorResponse(400, "BadRequest",
                                     f"Mention id {m['id']} has no matching <at id=\"{m['id']}\"> tag in "
                                     "the body.")
        mu = ((m.get("mentioned") or {}).get("user") or {})
        target = ctx.sb.state.user(str(mu.get("id", "")))
        if target is None:
            raise GraphErrorResponse(400, "BadRequest", f"Mention id {m['id']}: mentioned user not found.")
        mentions.append({"id": m["id"], "mentionText": m.get("mentionText") or target.displayName,
                         "mentioned": {"application": None, "device": None, "conversation": None, "tag": None,
                                       "user": {"@odata.type": "#microsoft.graph.teamworkUserIdentity",
                                                "id": target.id, "displayName": target.displayName,
                                                "userIdentityType": "aadUser", "tenantId": SANDBOX_TENANT_ID}}})
    return {"content_type": content_type, "content": content, "importance": importance, "subject": subject,
            "attachments": attachments, "mentions": mentions, "files": files}


async def post_message(ctx: Ctx) -> Result:
    c = ctx.caller
    assert c is not None
    if c.app_only:
        raise GraphErrorResponse(401, "Unauthorized", APP_ONLY_POST_MESSAGE)
    require(ctx, ("ChatMessage.Send", "Chat.ReadWrite", "Group.ReadWrite.All"))
    user = c.user
    assert user is not None
    chat_id = ctx.params["chat"]
    # Throttling comes first, as at Microsoft: a throttled request costs no lookups.
    wait = ctx.sb.throttle.check_chat_post(c.app_id, SANDBOX_TENANT_ID, chat_id)
    if wait is not None:
        raise GraphErrorResponse(429, "TooManyRequests", "Too many requests.", {"Retry-After": str(wait)})
    chat = ctx.sb.state.chat(chat_id)
    if chat is None:
        raise GraphErrorResponse(404, "NotFound", f"Chat '{chat_id}' not found.")
    msg = _validate_message(ctx, ctx.json())
    if not ctx.sb.state.is_member(chat_id, user.id):
        raise GraphErrorResponse(403, "Forbidden", "The caller is not a member of this chat and cannot post to it.")
    if msg["files"]:
        _file_hook("check_shared")(ctx, msg["files"], [m["user_id"] for m in ctx.sb.state.chat_members(chat_id)])
    ms = ctx.sb.state.next_message_ms()
    stamp = iso_z(ms / 1000)
    message = {
        "id": str(ms), "replyToId": None, "etag": str(ms), "messageType": "message",
        "createdDateTime": stamp, "lastModifiedDateTime": stamp, "lastEditedDateTime": None,
        "deletedDateTime": None, "subject": msg["subject"], "summary": None, "chatId": chat_id,
        "importance": msg["importance"], "locale": "en-us", "webUrl": None, "channelIdentity": None,
        "policyViolation": None, "eventDetail": None,
        "from": {"application": None, "device": None, "conversation": None,
                 "user": {"@odata.type": "#microsoft.graph.teamworkUserIdentity", "id": user.id,
                          "displayName": user.displayName, "userIdentityType": "aadUser",
                          "tenantId": SANDBOX_TENANT_ID}},
        "body": {"contentType": msg["content_type"], "content": msg["content"]},
        "attachments": msg["attachments"], "mentions": msg["mentions"], "reactions": [], "messageHistory": [],
    }
    ctx.sb.state.add_message(chat_id, message, ms, user.id)
    ctx_url = f"{ctx.base}/$metadata#chats('{quote(chat_id, safe='')}')/messages/$entity"
    return Result(201, {"@odata.context": ctx_url, **message})


# GET /chats/{id}/messages, as documented (chat-list-messages): $top ≤ 50; $orderby on
# lastModifiedDateTime (default) or createdDateTime, descending only; $filter a date range on the
# $orderby's property (lastModifiedDateTime: gt, lt; createdDateTime: lt), else ignored.
_MSG_TIME_PROPS = {"lastmodifieddatetime": "lastModifiedDateTime", "createddatetime": "createdDateTime"}
_MSG_FILTER_OPS = {"lastModifiedDateTime": {"gt", "lt"}, "createdDateTime": {"lt"}}
_OPERATION_KINDS = {"gt": "GreaterThan", "lt": "LessThan", "ge": "GreaterThanOrEqual", "le": "LessThanOrEqual",
                    "eq": "Equal", "ne": "NotEqual"}
_RANGE_CLAUSE = re.compile(r"^(\w+)\s+(gt|lt|ge|le|eq|ne)\s+(\S+)$", re.I)
_DATETIME_LITERAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})$", re.I)


def _message_order(ctx: Ctx) -> str | None:
    """The $orderby property (None: not given, lastModifiedDateTime by default); 400 unless descending."""
    raw = ctx.query.get("$orderby")
    if raw is None:
        return None
    parts = raw.split()
    prop = _MSG_TIME_PROPS.get(parts[0].lower()) if parts else None
    if prop is None or len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
        raise GraphErrorResponse(400, "BadRequest", f"$orderby '{raw}' is not supported; order by lastModifiedDateTime "
                                 "or createdDateTime, descending.")
    if len(parts) == 1 or parts[1].lower() != "desc":  # OData's default direction is ascending
        raise GraphErrorResponse(400, "BadRequest", f"$orderby '{raw}': ascending order is not supported; use "
                                 f"'{prop} desc'.")
    return prop


def _message_filter(ctx: Ctx, order: str | None) -> tuple[float | None, float | None]:
    """``(after_ms, before_ms)`` of the $filter, or ``(None, None)`` when there is none or it is ignored.

    A filter must be a date range on the two properties (400 otherwise); it applies only when every
    clause names the property $orderby gives, and is ignored when none does.
    """
    raw = ctx.query.get("$filter")
    if raw is None:
        return None, None
    if re.search(r"\s+or\s+", raw, re.I) or not raw.strip():
        raise GraphErrorResponse(400, "BadRequest", "Invalid $filter query.")
    clauses = []
    for part in re.split(r"\s+and\s+", raw.strip(), flags=re.I):
        m = _RANGE_CLAUSE.match(part.strip())
        prop = _MSG_TIME_PROPS.get(m.group(1).lower()) if m else None
        if m is None or prop is None:
            raise GraphErrorResponse(400, "BadRequest", f"Invalid filter clause: '{part.strip()}'.")
        clauses.append((prop, m.group(2).lower(), m.group(3)))
    props = {c[0] for c in clauses}
    if order not in props:
        return None, None  # documented: ignored unless $orderby is on the same property
    if len(props) > 1:
        raise GraphErrorResponse(400, "BadRequest",
                                 "Invalid $filter query: it must filter the $orderby's property only.")
    after = before = None
    for prop, op, literal in clauses:
        if op not in _MSG_FILTER_OPS[prop]:
            raise GraphErrorResponse(400, "BadRequest", f"The entity property '{prop}' and operationKind "
                                     f"'{_OPERATION_KINDS[op]}' is not allowed in $filter query.")
        if not _DATETIME_LITERAL.match(literal):
            raise GraphErrorResponse(400, "BadRequest", f"Invalid $filter query: '{literal}' is not a DateTimeOffset.")
        try:
            ms = dt.datetime.fromisoformat(_iso_for_python(literal)).timestamp() * 1000
        except ValueError as exc:
            raise GraphErrorResponse(400, "BadRequest",
                                     f"Invalid $filter query: '{literal}' is not a DateTimeOffset.") from exc
        if op == "gt":
            after = ms if after is None else max(after, ms)
        else:
            before = ms if before is None else min(before, ms)
    return after, before


def _iso_for_python(literal: str) -> str:
    """A DateTimeOffset literal as ``datetime.fromisoformat`` reads it (at most 6 fraction digits)."""
    text = literal.upper().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d{2}:\d{2}(?::\d{2})?)(\.\d+)?([+-]\d{2}:\d{2})$", text)
    if m is None:
        raise ValueError(literal)
    return m.group(1) + (m.group(2) or "")[:7] + m.group(3)


def _page_key(ctx: Ctx) -> tuple[tuple[int, str] | None, int]:
    """The continuation key (created_ms, id) of the last message listed, and this page's number."""
    tok = ctx.query.get("$skiptoken")
    if not tok:
        return None, 1
    try:
        data = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
        return (int(data["k"][0]), str(data["k"][1])), int(data["p"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise GraphErrorResponse(400, "BadRequest", "The specified page token value has expired and can no longer "
                                 "be included in your request.") from exc


async def list_messages(ctx: Ctx) -> Result:
    chat = _member_chat(ctx, ("ChatMessage.Read", "Chat.Read", "Chat.ReadWrite"))
    order = _message_order(ctx)
    after, before = _message_filter(ctx, order)
    top = _top(ctx, 20, 50)
    below, number = _page_key(ctx)
    # The sandbox never edits a message, so lastModifiedDateTime equals createdDateTime: one stamp
    # (created_ms) serves both orders and both filters.
    page = ctx.sb.state.message_page(chat["id"], top + 1, after_ms=after, before_ms=before, below=below)
    more = len(page) > top
    page = page[:top]
    ctx.sb.counters.add(f"chat messages listed: page {number}")  # how deep readers page (tests, soak)
    if after is None and before is None:
        ctx.sb.counters.add("chat messages listed: unfiltered")  # no window: the whole chat, newest first
    body: dict[str, Any] = {
        "@odata.context": f"{ctx.base}/$metadata#chats('{quote(chat['id'], safe='')}')/messages",
        "@odata.count": len(page),
    }
    if more:
        last = page[-1]
        body["@odata.nextLink"] = _next_link(ctx, token={"k": [int(last["id"]), last["id"]], "p": number + 1})
    body["value"] = page
    return Result(200, body)


async def get_message(ctx: Ctx) -> Result:
    chat = _member_chat(ctx, ("ChatMessage.Read", "Chat.Read", "Chat.ReadWrite"))
    m = ctx.sb.state.message(chat["id"], ctx.params["message"])
    if m is None:
        raise GraphErrorResponse(404, "NotFound", "Message not found.")
    ctx_url = f"{ctx.base}/$metadata#chats('{quote(chat['id'], safe='')}')/messages/$entity"
    return Result(200, {"@odata.context": ctx_url, **m})


# -- routing -----------------------------------------------------------------------------
Handler = Callable[[Ctx], Awaitable[Result]]
_SEG = r"([^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], list[str], Handler, str]] = []


def _route(method: str, pattern: str, names: list[str], handler: Handler) -> None:
    template = pattern
    for n in names:
        template = template.replace(_SEG, "{" + n + "}", 1)
    _ROUTES.append((method, re.compile("^" + pattern + "$"), names, handler, "/v1.0" + template))


_route("GET", "/me", [], get_me)
_route("GET", "/users", [], list_users)
_route("GET", f"/users/{_SEG}", ["user"], get_user)
_route("POST", "/chats", [], create_chat)
_route("GET", "/me/chats", [], list_chats)
_route("GET", "/chats", [], list_chats)
_route("GET", f"/chats/{_SEG}", ["chat"], get_chat)
_route("GET", f"/chats/{_SEG}/members", ["chat"], list_members)
_route("POST", f"/chats/{_SEG}/messages", ["chat"], post_message)
_route("GET", f"/chats/{_SEG}/messages", ["chat"], list_messages)
_route("GET", f"/chats/{_SEG}/messages/{_SEG}", ["chat", "message"], get_message)


# Set by graph_drive (the OneDrive subset, loaded by app.py): checks of file attachments. Hooks, not an
# import, so that graph_drive can build on this module without an import cycle.
FILE_HOOKS: dict[str, Callable[..., Any]] = {}


def _file_hook(name: str) -> Callable[..., Any]:
    hook = FILE_HOOKS.get(name)
    if hook is None:
        raise GraphErrorResponse(400, "BadRequest", "File attachments need the drive (sandbox/graph_drive.py).")
    return hook


def register_routes(register: Callable[[Callable[..., None]], None]) -> None:
    """Let another module (graph_drive) add routes: ``register(add)``, ``add(method, regex, names, handler,
    template)``."""

    def add(method: str, pattern: str, names: list[str], handler: Handler, template: str) -> None:
        _ROUTES.append((method, re.compile("^" + pattern + "$"), names, handler, template))
    register(add)


def _match(method: str, path: str) -> tuple[Handler, dict[str, str], str] | GraphErrorResponse:
    path = path.rstrip("/") or "/"
    allowed = False
    for m, rx, names, handler, template in _ROUTES:
        hit = rx.match(path)
        if hit:
            if m == method:
                return handler, dict(zip(names, hit.groups(), strict=True)), template
            allowed = True
    if allowed:
        return GraphErrorResponse(405, "BadRequest", f"The HTTP method '{method}' is not supported for this resource.")
    return GraphErrorResponse(400, "BadRequest", f"Resource not found for the segment '{_unresolved_segment(path)}'.")


def _unresolved_segment(path: str) -> str:
    """The first segment no route continues with, as Graph names it (``/me/nosuch`` -> 'nosuch')."""
    segs = path.strip("/").split("/")
    if not segs[0]:
        return path
    shapes = [template.split("/")[2:] for *_, template in _ROUTES]  # "/v1.0/me/chats" -> ["me", "chats"]
    for i, seg in enumerate(segs):
        if not any(len(sh) > i and all(t.startswith("{") or t == s for t, s in zip(sh, segs[:i + 1], strict=False))
                   for sh in shapes):
            return seg
    return segs[-1] if segs else path


async def dispatch(ctx: Ctx) -> tuple[Result, str]:
    """Run one Graph request (top-level or batch item); returns the result and route template."""
    found = _match(ctx.method, ctx.path)
    if isinstance(found, GraphErrorResponse):
        return found.result(ctx), "/v1.0/{unknown}"
    handler, params, template = found
    ctx.params = params
    try:
        ctx.caller = authenticate(ctx)
        return await handler(ctx), template
    except GraphErrorResponse as e:
        return e.result(ctx), template


# -- $batch ------------------------------------------------------------------------------
async def batch(ctx: Ctx) -> Result:
    data = ctx.json()
    reqs = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(reqs, list) or not reqs:
        raise GraphErrorResponse(400, "BadRequest", "Invalid batch payload: 'requests' must be a non-empty array.")
    if len(reqs) > MAX_BATCH:
        raise GraphErrorResponse(400, "BadRequest", f"The number of batch requests ({len(reqs)}) exceeds the limit of "
                                 f"{MAX_BATCH}.")
    ids = [str(r.get("id")) if isinstance(r, dict) else "" for r in reqs]
    if "" in ids or "None" in ids or len(set(ids)) != len(ids):
        raise GraphErrorResponse(400, "BadRequest", "Every batch request needs an id that is unique within the batch.")
    for r in reqs:
        if not isinstance(r.get("method"), str) or not isinstance(r.get("url"), str):
            raise GraphErrorResponse(400, "BadRequest", f"Batch request '{r.get('id')}' needs 'method' and 'url'.")
        deps = r.get("dependsOn") or []
        if not isinstance(deps, list) or any(str(d) not in ids for d in deps):
            raise GraphErrorResponse(400, "BadRequest", f"Batch request '{r.get('id')}' depends on an unknown id.")
        hdrs = {str(k).lower(): str(v) for k, v in (r.get("headers") or {}).items()}
        if "body" in r and r["body"] is not None and "content-type" not in hdrs:
            raise GraphErrorResponse(400, "BadRequest", f"Batch request '{r.get('id')}' has a body but no Content-Type "
                                     "header.")
    by_id = {str(r["id"]): r for r in reqs}
    results: dict[str, dict[str, Any]] = {}

    async def run(rid: str, stack: tuple[str, ...] = ()) -> dict[str, Any]:
        if rid in results:
            return results[rid]
        if rid in stack:
            raise GraphErrorResponse(400, "BadRequest", "Batch dependencies form a cycle.")
        r = by_id[rid]
        for dep in (str(d) for d in r.get("dependsOn") or []):
            dep_result = await run(dep, (*stack, rid))
            if not 200 <= dep_result["status"] < 300:
                results[rid] = {"id": rid, "status": 424, "headers": {"Content-Type": "application/json"},
                                "body": graph_error_body(ctx.scope, "FailedDependency",
                                                         f"Dependent request '{dep}' failed.")}
                ctx.sb.counters.add(f"BATCH {r['method'].upper()} (dependency) 424")
                return results[rid]
        results[rid] = await _run_item(ctx, r)
        return results[rid]

    for rid in by_id:
        await run(rid)
    return Result(200, {"responses": [results[i] for i in by_id]})


async def _run_item(outer: Ctx, r: dict[str, Any]) -> dict[str, Any]:
    url: str = r["url"]
    if url.lower().startswith(("http://", "https://")):
        return {"id": str(r["id"]), "status": 400, "headers": {"Content-Type": "application/json"},
                "body": graph_error_body(outer.scope, "BadRequest", "Batch request urls must be relative.")}
    path, _, qs = url.partition("?")
    path = clean_path(path)
    if path.startswith("/v1.0/"):
        path = path[5:]
    headers = {k.lower(): str(v) for k, v in (r.get("headers") or {}).items()}
    headers.setdefault("authorization", outer.headers.get("authorization", ""))
    body = r.get("body")
    raw = json.dumps(body).encode() if body is not None and not isinstance(body, str) else (body or "").encode()
    method = r["method"].upper()
    ctx = Ctx(outer.sb, outer.scope, method, unquote(path), dict(parse_qsl(qs, keep_blank_values=True)),
              headers, raw, outer.origin, outer.browser)
    if ctx.path == "/$batch":
        result, template = GraphErrorResponse(400, "BadRequest",
                                              "Nested batches are not supported.").result(ctx), "/$batch"
    else:
        result, template = await dispatch(ctx)
    outer.sb.counters.add(f"BATCH {method} {template} {result.status}")
    hdrs = {"Content-Type": "application/json", **result.headers} if result.body is not None else result.headers
    item: dict[str, Any] = {"id": str(r["id"]), "status": result.status, "headers": hdrs}
    if result.body is not None:
        item["body"] = result.body
    return item


# -- HTTP entry point ----------------------------------------------------------------------
def clean_path(path: str) -> str:
    """Collapse repeated slashes: real Graph serves ``/v1.0//me`` (msgraph-sdk's default wiring sends it)."""
    return "/" + "/".join(seg for seg in path.split("/") if seg)


VERSION_RE = re.compile(r"^(beta|v\d+(\.\d+)?)$", re.I)


def unknown_version(request: Request) -> Response | None:
    """Graph's answer to a path outside the versions the sandbox serves, else None (not Graph's).

    The sandbox serves v1.0 only.  Real Graph answers a version it does not know (or none, as in
    ``/me``) with 400 BadRequest "Invalid version.", in its usual error body.  A path counts as
    Graph's when its first segment looks like a version (``beta``, ``v2.0``) or the Host header
    names the sandbox's Graph host; anything else stays the identity host's 404.
    """
    first = request.url.path.strip("/").split("/")[0]
    host = (request.headers.get("host") or "").split(":")[0].lower()
    graph_host = host == urlsplit(GRAPH_RESOURCE).hostname
    if first == "v1.0" or not (VERSION_RE.match(first) or graph_host):
        return None
    return JSONResponse(graph_error_body(request.scope, "BadRequest", "Invalid version."),
                        status_code=400, headers={"Cache-Control": "no-store"})


async def graph_endpoint(request: Request) -> Response:
    sb = sandbox_of(request)
    path = clean_path(request.path_params["rest"])
    ctx = Ctx(sb, request.scope, request.method, path,
              dict(parse_qsl(request.url.query, keep_blank_values=True)),
              {k.lower(): v for k, v in request.headers.items()}, await request.body(),
              public_origin(request), browser_origin(request))
    if path == "/$batch":
        template = "/v1.0/$batch"
        if request.method != "POST":
            result = GraphErrorResponse(405, "BadRequest", "Use POST for $batch.").result(ctx)
        else:
            try:
                ctx.caller = authenticate(ctx)  # envelope needs a token too
                result = await batch(ctx)
            except GraphErrorResponse as e:
                result = e.result(ctx)
    else:
        result, template = await dispatch(ctx)
    request.scope["route_template"] = template
    if result.body is None:
        return Response(status_code=result.status, headers=result.headers)
    headers = {"Cache-Control": "no-store", **result.headers}
    return JSONResponse(result.body, status_code=result.status, headers=headers,
                        media_type="application/json")


routes = [Route("/v1.0/{rest:path}", graph_endpoint, methods=["GET", "POST", "PATCH", "PUT", "DELETE"])]
