"""Fault matrix: every Graph call crmkit makes x every fault kind, on its FIRST request (to the faulted path).

Part 0 checks "every": the Graph calls are found by introspection (each public coroutine of ``AsyncGraph``
but the generic ``request``/``json``, each public coroutine function of crmkit/graph/'s modules taking an
``AsyncGraph`` (the OneDrive calls), and each function elsewhere in crmkit that sends through ``.aio.json``
or ``.aio.request`` itself); each must be exercised by a part-1 case, and each case checks that its run
really went through the calls it names.

Part 1 drives crmkit's Graph client (sandbox-minted token, default retry policy, 3 s HTTP timeout) and
checks the documented rule: 429 is always retried (``Retry-After`` honoured); 503/504, a dropped
connection and a timeout after commit are retried only where resending is safe (reads, the 1:1 chat
Graph deduplicates, a ``$batch`` of reads), since a POST may have taken effect; 500/502 are not retried.
What is not retried raises a ``GraphError`` with Graph's status, code and request-id (a chat or channel
post through the delivery gateway raises it as the cause of ``Ambiguous``: the outbox reads the
conversation back, part 2). Uploads are resend-safe too: a session is made with an idempotent POST (an
unused one expires), a fragment is a PUT with its ``Content-Range``, and where the client gives up on a
fragment (500/502) the upload reads the session's ``nextExpectedRanges`` and goes on; inviting the same
people again leaves one permission each, so the invite POST is resent like a PUT.

Part 2 sends a record through ``crm.teams.send`` with the same faults on each call of the send path
(recipient look-up, ``/me``, chat creation, the group-chat look-up, the post, the reconciliation
read) and checks that the message is in the sandbox exactly once, in one chat; a send to a team's channel
likewise (the joined teams, the channel, the post, the read-back of the channel), and a file send (a small
workbook in one PUT: the upload, the invite, the post; upload sessions' fragments under faults are in
tests/teams/test_file_send.py, whose 6,000-record workbook is too slow for here).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pytest
from support.sandbox import SandboxAdmin, SandboxProc, colleagues, fresh_tenant, minted_graph, sign_in

import crmkit
from crmkit.errors import GraphError
from crmkit.graph import AsyncGraph, GraphClient, RateLimiter, _drive
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams import activation, channels, recipients, replies
from crmkit.teams.delivery import Ambiguous
from crmkit.teams.gateway import GraphChatGateway

pytestmark = pytest.mark.sandbox

HANG_S = 6  # a "timeout after commit" hangs this long; the clients give up after 3 s
CLIENT_TIMEOUT = 3

FAULTS: dict[str, dict[str, Any]] = {
    "429": {"rate": 1.0, "statuses": [429], "retry_after_s": 1},
    "500": {"rate": 1.0, "statuses": [500]},
    "502": {"rate": 1.0, "statuses": [502]},
    "503": {"rate": 1.0, "statuses": [503], "retry_after_s": 1},
    "504": {"rate": 1.0, "statuses": [504]},
    "drop": {"drop_rate": 1.0},
    "timeout_after_commit": {"timeout_after_commit_rate": 1.0, "hang_s": HANG_S},
}
CODES = {"429": "TooManyRequests", "500": "generalException", "502": "BadGateway",
         "503": "serviceNotAvailable", "504": "GatewayTimeout"}
RETRIED_STATUSES = {"429", "503", "504"}  # crmkit.graph.RETRY_STATUSES


@dataclass
class Tenant:
    admin: SandboxAdmin
    crm: crmkit.CRM
    people: list[str]
    env: dict[str, str]


@pytest.fixture(scope="module")
def tenant(sandbox_proc: SandboxProc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    """A reset tenant with raised limits and a CRM signed in to Teams, shared by the module's cases."""
    base = tmp_path_factory.mktemp("fault-matrix")
    mp = pytest.MonkeyPatch()
    try:
        with fresh_tenant(sandbox_proc, mp, base) as admin:
            admin.put("limits", {"chat_post_per_app_per_s": 400, "chat_post_per_chat_per_s": 100,
                              "channel_post_per_channel_per_s": 100})
            env = {"CRMKIT_SANDBOX_URL": sandbox_proc.url, "CRMKIT_HOME": str(base / "home"),
                   "CRMKIT_GRAPH_TIMEOUT": str(CLIENT_TIMEOUT), "CRMKIT_TEAMS_TENANT_RPS": "300",
                   "CRMKIT_TEAMS_CHAT_RPS": "80"}
            for k, v in env.items():
                mp.setenv(k, v)
            crm = crmkit.open(base / "crm.duckdb")
            activation.enable(crm)
            crm.add_address(company="Fehler & Co. KG", city="Hamburg", country="DE")
            sign_in(crm, SANDBOX_DEFAULT_UPN)
            try:
                yield Tenant(admin, crm, colleagues(admin, 3), env)
            finally:
                crm.teams.close()
                admin.reset()
    finally:
        mp.undo()


@pytest.fixture
def t(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> Iterator[Tenant]:
    for k, v in tenant.env.items():  # the root conftest clears CRMKIT_* for every test
        monkeypatch.setenv(k, v)
    tenant.admin.put("faults", {})
    yield tenant
    tenant.admin.put("faults", {})


def inject(admin: SandboxAdmin, fault: str, path: str, method: str | None, count: int = 1) -> None:
    admin.put("faults", {**FAULTS[fault], "paths": [path], "methods": [method] if method else [], "count": count})


def faults_left(admin: SandboxAdmin) -> int:
    return int(admin.get("faults")["count"])


# -- part 1: the Graph client ------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: Callable[[dict[str, Any]], str]  # the fault's path prefix, from the setup's context
    setup: Callable[[Any, Tenant], dict[str, Any]]
    run: Callable[[Any, dict[str, Any]], Any]
    check: Callable[[Any, dict[str, Any], Tenant], None]
    resend_safe: bool  # retried after a 503/504 or a transport failure (reads, the 1:1 chat, a $batch of reads)
    exercises: tuple[str, ...]  # the Graph calls run goes through (names as in graph_calls(); checked by a spy)
    requests: int = 1  # requests the call makes without faults
    recovers: dict[str, int] | None = None  # faults the call itself gets past though the client does not
    #                                         retry them (an upload reading its session): extra requests
    stored: Callable[[dict[str, Any], Tenant], int] | None = None  # a post's copies stored in the sandbox
    before_fault: int = 0  # requests ahead of the faulted one (share_file: the upload, then the faulted invite)


def _chat(g: Any, t: Tenant) -> dict[str, Any]:
    return {"chat": g.get_or_create_chat(SANDBOX_DEFAULT_UPN, t.people[0])["id"]}


def _posted(g: Any, t: Tenant) -> dict[str, Any]:
    ctx = _chat(g, t)
    ctx["payload"] = {"body": {"contentType": "html", "content": f"read me back {uuid.uuid4()}"}, "subject": "Probe"}
    ctx["id"] = g.post_message(ctx["chat"], ctx["payload"])["id"]
    return ctx


def _group(g: Any, t: Tenant) -> dict[str, Any]:
    me = g.me()["id"]
    members = [me, *(g.get_user(upn)["id"] for upn in t.people[:2])]
    topic = f"Fault matrix {uuid.uuid4().hex[:8]}"
    return {"members": members, "topic": topic, "chat": g.create_group_chat(members, topic=topic)["id"]}


def _stored(t: Tenant, chat_id: str, content: str) -> int:
    return sum(m["body"]["content"] == content for m in t.admin.get("messages", chat_id=chat_id)["value"])


def _posted_then_more(g: Any, t: Tenant) -> dict[str, Any]:
    """A message with 60 newer ones after it: the read-back pages through the filtered window."""
    ctx = _posted(g, t)
    with minted_graph(t.admin, limiter=RateLimiter(400, 100)) as fast:  # the tenant's raised limits
        assert all(o.ok for o in fast.send_many([(ctx["chat"], {"body": {"content": f"later {i}"}})
                                                 for i in range(60)]))
    ctx["pages_before"] = t.admin.counters().get("chat messages listed: page 2", 0)
    return ctx


def _check_second_page(result: Any, ctx: dict[str, Any], t: Tenant) -> None:
    assert result == ctx["id"], f"{result} != {ctx['id']}"
    assert t.admin.counters().get("chat messages listed: page 2", 0) == ctx["pages_before"] + 1  # via nextLink


def _find(g: Any, ctx: dict[str, Any]) -> str | None:
    since = datetime.utcnow() - timedelta(minutes=1)
    return g.submit(GraphChatGateway(g).find_marker(ctx["chat"], "no-marker", ctx["payload"], since)).result(60)


def _check_post(result: Any, ctx: dict[str, Any], t: Tenant) -> None:
    assert _stored(t, ctx["chat"], ctx["content"]) == 1
    assert result["body"]["content"] == ctx["content"]


def _mail_of_a_colleague(g: Any, t: Tenant) -> dict[str, Any]:
    user = g.get_user(t.people[1], select=["userPrincipalName", "mail"])
    assert user.get("mail"), user
    return {"upn": t.people[1], "mail": user["mail"]}


def _send_one_of_many(g: Any, c: dict[str, Any]) -> Any:
    [outcome] = g.send_many([(c["chat"], {"body": {"contentType": "html", "content": c["content"]}})])
    if outcome.error is not None:
        raise outcome.error
    return outcome.message


def _stored_in_chat(c: dict[str, Any], t: Tenant) -> int:
    return _stored(t, c["chat"], c["content"])


# channels (issue 17.1): the sender's Vertrieb team and its General channel
CHANNELS = "crmkit.teams.channels"
GATEWAY_POST = "crmkit.teams.gateway:GraphChatGateway.post_message"


def _general(g: Any, t: Tenant) -> dict[str, Any]:
    team = next(x for x in t.admin.get("teams")["value"] if x["displayName"] == "Vertrieb")
    general = next(c["id"] for c in team["channels"] if c["displayName"] == "General")
    return {"team": team["id"], "channel": general, "key": recipients.channel_key(team["id"], general),
            "content": f"fault matrix channel {uuid.uuid4()}"}


def _stored_in_channel(c: dict[str, Any], t: Tenant) -> int:
    with t.admin.graph() as h:  # read as the sender, past the (spent) fault
        r = h.get(f"teams/{c['team']}/channels/{c['channel']}/messages", params={"$top": 50})
        r.raise_for_status()
        return sum((m.get("body") or {}).get("content") == c["content"] for m in r.json()["value"])


def _post_through_gateway(g: Any, c: dict[str, Any]) -> Any:
    """The gateway's post: what it cannot call a success or a refusal is Ambiguous, its cause Graph's error."""
    payload = {"body": {"contentType": "html", "content": c["content"]}, "subject": "Probe"}
    try:
        return g.submit(GraphChatGateway(g).post_message(c["key"], payload)).result(60)
    except Ambiguous as exc:
        assert isinstance(exc.__cause__, GraphError), exc
        raise exc.__cause__ from None


def _check_channel_post(r: Any, c: dict[str, Any], t: Tenant) -> None:
    assert _stored_in_channel(c, t) == 1
    assert r["body"]["content"] == c["content"], r


def _resolve_general(g: Any, c: dict[str, Any]) -> Any:
    return channels.resolve_channel(g, recipients.Recipient(c["key"], "channel", "General"), [])


def _check_resolved(r: Any, c: dict[str, Any], t: Tenant) -> None:
    assert r is not None and (r["id"], r["displayName"]) == (c["key"], "Vertrieb / General"), r
    assert r["member_count"] >= 2 and len(r["members"]) == r["member_count"], r


def _watched_chat(g: Any, t: Tenant) -> dict[str, Any]:
    ctx = _chat(g, t)
    posted = g.post_message(ctx["chat"], {"body": {"contentType": "html", "content": f"reply to {uuid.uuid4()}"}})
    ctx["id"] = posted["id"]
    ctx["watched"] = replies.Watched(
        outbox_id="fault-matrix", conversation=ctx["chat"], message_id=ctx["id"], kind="chat", address_ids=(1,),
        senders=frozenset(), user_name="", channel="", trigger="", account=None, first_attempt_at=None)
    # just before the post: the shared chat's older messages (other cases') are not read, one page
    ctx["floor"] = pd.Timestamp(posted["createdDateTime"]).tz_convert(None) - pd.Timedelta(milliseconds=1)
    return ctx


def _read_replies(g: Any, c: dict[str, Any]) -> Any:
    return g.submit(replies._read(g.aio, c["watched"], c["floor"])).result(60)


# OneDrive (issue 17.3): small files in one PUT; a session's fragments of 320 KiB under /up/
SMALL = b"crmkit fault matrix\n" * 50
SESSION_DATA = bytes(range(256)) * (2 * _drive.FRAGMENT_UNIT // 256 + 8)  # two fragments and a bit: three PUTs
DRIVE = "crmkit.graph._drive"


def _drive_path() -> str:
    return f"crmkit/Fehlermatrix {uuid.uuid4().hex[:8]}.xlsx"


def _on_drive(g: Any, t: Tenant) -> dict[str, Any]:
    path = _drive_path()
    item = g.submit(_drive.upload_file(g.aio, path, SMALL)).result(60)
    return {"path": path, "id": item["id"], "ids": [g.get_user(upn)["id"] for upn in t.people[:2]]}


def _session(g: Any, t: Tenant) -> dict[str, Any]:
    """An upload session Graph made (as if another process did), nothing sent yet."""
    path = _drive_path()
    made = g.submit(g.aio.json("POST", f"/me/drive/root:/{quote(path, safe='/')}:/createUploadSession",
                               json={"item": {"@microsoft.graph.conflictBehavior": "rename"}})).result(60)
    digest = hashlib.sha256(SESSION_DATA).hexdigest()
    return {"path": path, "session": _drive.UploadSession(made["uploadUrl"], path, len(SESSION_DATA), digest)}


def _check_item(size: int) -> Callable[[Any, dict[str, Any], Tenant], None]:
    def check(r: Any, c: dict[str, Any], t: Tenant) -> None:
        # the file at the path asked for: a resend did not leave a renamed second copy ("… 1.xlsx")
        assert r["size"] == size and r["name"] == c["path"].rsplit("/", 1)[-1], r
        with t.admin.graph() as h:
            at = h.get(f"me/drive/root:/{quote(c['path'], safe='/')}")
            at.raise_for_status()
            assert at.json()["id"] == r["id"]
    return check


def _upload(simple_max: int, data: bytes) -> Callable[[Any, dict[str, Any]], Any]:
    def run(g: Any, c: dict[str, Any]) -> Any:
        return g.submit(_drive.upload_file(g.aio, c["path"], data, simple_max=simple_max,
                                           fragment_size=_drive.FRAGMENT_UNIT)).result(60)
    return run


def _check_cancelled(r: Any, c: dict[str, Any], t: Tenant) -> None:
    with t.admin.http() as h:  # the session's URL is its own authorisation
        assert h.get(c["session"].upload_url).status_code == 404


def _permissions(t: Tenant, item_id: str) -> list[str]:
    with t.admin.graph() as h:
        r = h.get(f"me/drive/items/{item_id}/permissions")
        r.raise_for_status()
        return [p["id"] for p in r.json()["value"] if "owner" not in p["roles"]]


def _check_invited(r: Any, c: dict[str, Any], t: Tenant) -> None:
    assert len(r) == 2, r
    assert sorted(_permissions(t, c["id"])) == sorted(p["id"] for p in r)  # one each, also after a resend


def _check_shared(r: Any, c: dict[str, Any], t: Tenant) -> None:
    assert r.size == len(SMALL) and len(r.permissions) == 2 and uuid.UUID(r.attachment_id), r
    assert len(_permissions(t, r.item_id)) == 2


# -- part 0: every Graph call is in the matrix ----------------------------------------------------------

FIND_MARKER = "crmkit.teams.gateway:GraphChatGateway.find_marker"
GENERIC = {"request", "json", "aclose"}  # the transport every call goes through, and closing it
SYNC_ONLY = {"submit", "call", "close"}  # GraphClient's own: they run a coroutine of AsyncGraph, or close


def graph_calls() -> set[str]:
    """Every Graph call crmkit makes, by introspection: ``AsyncGraph``'s public coroutine methods (and as
    ``GraphClient.name`` a public method of the sync client that mirrors none of them), as ``module:name``
    each public coroutine function of a crmkit/graph/ module with an ``AsyncGraph`` parameter (OneDrive), and
    as ``module:Qualname`` each function outside crmkit/graph/ and the sandbox that sends a request through
    ``….aio.json``/``….aio.request`` itself."""
    calls = {name for name, _fn in inspect.getmembers(AsyncGraph, inspect.iscoroutinefunction)
             if not name.startswith("_") and name not in GENERIC}
    calls |= {f"GraphClient.{name}" for name, _fn in inspect.getmembers(GraphClient, inspect.isfunction)
              if not name.startswith("_") and name not in SYNC_ONLY and name not in calls}
    root = Path(crmkit.__file__).parent
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "sandbox":
            continue
        module = ".".join(("crmkit", *rel.with_suffix("").parts)).removesuffix(".__init__")
        if rel.parts[0] == "graph":
            for fn in ast.parse(path.read_text(encoding="utf-8")).body:
                if (isinstance(fn, ast.AsyncFunctionDef) and not fn.name.startswith("_")
                        and any(a.annotation is not None and ast.unparse(a.annotation) == "AsyncGraph"
                                for a in fn.args.args)):
                    calls.add(f"{module}:{fn.name}")
            continue

        def visit(node: ast.AST, qual: tuple[str, ...], module: str = module) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    visit(child, (*qual, child.name))
                    continue
                if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                        and child.func.attr in ("json", "request") and ast.unparse(child.func.value).endswith("aio")):
                    calls.add(f"{module}:{'.'.join(qual)}")
                visit(child, qual)

        visit(ast.parse(path.read_text(encoding="utf-8")), ())
    return calls


def test_every_graph_call_is_in_the_fault_matrix() -> None:
    found = graph_calls()
    assert FIND_MARKER in found and {"me", "post_message", "batch"} <= found  # the introspection sees them
    exercised = {name for call in CALLS.values() for name in call.exercises}
    assert found - exercised == set(), f"Graph calls without a fault-matrix case: {sorted(found - exercised)}"
    assert exercised - found == set(), f"cases name calls that do not exist: {sorted(exercised - found)}"


def spy(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...]) -> list[str]:
    """Record which of ``names`` (as in graph_calls()) are entered; they stay working."""
    seen: list[str] = []
    for name in names:
        owner: Any = AsyncGraph
        attr = name
        if ":" in name:
            module, qual = name.split(":")
            owner = importlib.import_module(module)
            *outer, attr = qual.split(".")
            for part in outer:
                owner = getattr(owner, part)
        original = getattr(owner, attr)

        @functools.wraps(original)
        async def entered(*a: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            seen.append(_name)
            return await _original(*a, **kw)

        @functools.wraps(original)
        def entered_sync(*a: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
            seen.append(_name)
            return _original(*a, **kw)

        monkeypatch.setattr(owner, attr, entered if inspect.iscoroutinefunction(original) else entered_sync)
    return seen


CALLS: dict[str, Call] = {
    "search_users": Call(
        "GET", lambda c: "/v1.0/users", lambda g, t: {}, lambda g, c: g.search_users("", top=5),
        lambda r, c, t: (len(r.users) == 5) or pytest.fail(f"{r}"), True, ("search_users",)),
    "get_user": Call(
        "GET", lambda c: "/v1.0/users/", lambda g, t: {"upn": t.people[1]}, lambda g, c: g.get_user(c["upn"]),
        lambda r, c, t: (r["userPrincipalName"] == c["upn"]) or pytest.fail(f"{r}"), True, ("get_user",)),
    "me": Call(
        "GET", lambda c: "/v1.0/me", lambda g, t: {}, lambda g, c: g.me(),
        lambda r, c, t: (r["userPrincipalName"] == SANDBOX_DEFAULT_UPN) or pytest.fail(f"{r}"), True, ("me",)),
    "create_1on1_chat": Call(
        "POST", lambda c: "/v1.0/chats", lambda g, t: {"other": t.people[2]},
        lambda g, c: g.get_or_create_chat(SANDBOX_DEFAULT_UPN, c["other"]),
        lambda r, c, t: None, True, ("get_or_create_chat",)),
    "create_group_chat": Call(
        "POST", lambda c: "/v1.0/chats", lambda g, t: {"members": [SANDBOX_DEFAULT_UPN, *t.people[:2]]},
        lambda g, c: g.create_group_chat(c["members"], topic="Fault matrix"),
        lambda r, c, t: (r["chatType"] == "group") or pytest.fail(f"{r}"), False, ("create_group_chat",)),
    "find_group_chat": Call(
        "GET", lambda c: "/v1.0/me/chats", _group, lambda g, c: g.find_group_chat(c["members"], topic=c["topic"]),
        lambda r, c, t: (r is not None and r["id"] == c["chat"]) or pytest.fail(f"{r}"), True, ("find_group_chat",)),
    "post_message": Call(
        "POST", lambda c: f"/v1.0/chats/{c['chat']}/messages",
        lambda g, t: {**_chat(g, t), "content": f"fault matrix {uuid.uuid4()}"},
        lambda g, c: g.send_message(c["chat"], c["content"]), _check_post, False, ("send_message", "post_message"),
        stored=_stored_in_chat),
    "list_chat_messages": Call(
        "GET", lambda c: f"/v1.0/chats/{c['chat']}/messages", _posted, _find,
        lambda r, c, t: (r == c["id"]) or pytest.fail(f"{r} != {c['id']}"), True, (FIND_MARKER,)),
    "list_chat_messages_two_pages": Call(  # $orderby/$filter kept through nextLink and the retry
        "GET", lambda c: f"/v1.0/chats/{c['chat']}/messages", _posted_then_more, _find, _check_second_page, True,
        (FIND_MARKER,), requests=2),
    "batch": Call(
        "POST", lambda c: "/v1.0/$batch", lambda g, t: {"upn": t.people[0]},
        lambda g, c: g.batch([{"method": "GET", "url": "/me"}, {"method": "GET", "url": f"/users/{c['upn']}"}]),
        lambda r, c, t: ([x["status"] for x in r] == [200, 200]) or pytest.fail(f"{r}"), True,  # reads only
        ("batch",)),
    "find_user_by_mail": Call(
        "GET", lambda c: "/v1.0/users", _mail_of_a_colleague, lambda g, c: g.find_user_by_mail(c["mail"]),
        lambda r, c, t: (r is not None and r["userPrincipalName"] == c["upn"]) or pytest.fail(f"{r}"), True,
        ("find_user_by_mail",)),
    "iter_users": Call(  # three pages through nextLink; the fault hits the first
        "GET", lambda c: "/v1.0/users", lambda g, t: {}, lambda g, c: g.iter_users("", top=5, limit=12),
        lambda r, c, t: (len({u["id"] for u in r}) == 12) or pytest.fail(f"{r}"), True,
        ("iter_users", "search_users"), requests=3),
    "get_or_create_group_chat": Call(  # the look-up finds the chat made in setup: no second one
        "GET", lambda c: "/v1.0/me/chats", _group,
        lambda g, c: g.get_or_create_group_chat(c["members"], topic=c["topic"]),
        lambda r, c, t: (r["id"] == c["chat"]) or pytest.fail(f"{r}"), True,
        ("get_or_create_group_chat", "find_group_chat")),
    "send_many": Call(  # one message: its outcome's error is what the caller sees
        "POST", lambda c: f"/v1.0/chats/{c['chat']}/messages",
        lambda g, t: {**_chat(g, t), "content": f"fault matrix many {uuid.uuid4()}"}, _send_one_of_many,
        _check_post, False, ("send_many", "post_message"), stored=_stored_in_chat),
    "channel_post": Call(  # not resend-safe: a lost answer is the outbox's read-back (part 2)
        "POST", lambda c: f"/v1.0/teams/{c['team']}/channels/", _general, _post_through_gateway,
        _check_channel_post, False, (GATEWAY_POST,), stored=_stored_in_channel),
    "resolve_channel": Call(  # joined teams, the channel, its members: three reads
        "GET", lambda c: "/v1.0/me/joinedTeams", _general, _resolve_general, _check_resolved, True,
        (f"{CHANNELS}:resolve_channel", f"{CHANNELS}:_pages"), requests=3),
    "read_replies": Call(
        "GET", lambda c: f"/v1.0/chats/{c['chat']}/messages", _watched_chat, _read_replies,
        lambda r, c, t: (r.error is None and c["id"] in [m["id"] for m in r.messages]) or pytest.fail(f"{r}"),
        True, ("crmkit.teams.replies:_read",)),
    "upload_small": Call(
        "PUT", lambda c: "/v1.0/me/drive/root:/", lambda g, t: {"path": _drive_path()},
        _upload(_drive.SIMPLE_UPLOAD_MAX, SMALL), _check_item(len(SMALL)), True, (f"{DRIVE}:upload_file",)),
    "upload_session_create": Call(  # idempotent POST: an unused session expires
        "POST", lambda c: "/v1.0/me/drive/root:/", lambda g, t: {"path": _drive_path()},
        _upload(0, SESSION_DATA), _check_item(len(SESSION_DATA)), True, (f"{DRIVE}:upload_file",), requests=4),
    "upload_fragment": Call(  # the first fragment; where the client does not retry, the session's status is read
        "PUT", lambda c: "/up/", lambda g, t: {"path": _drive_path()},
        _upload(0, SESSION_DATA), _check_item(len(SESSION_DATA)), True, (f"{DRIVE}:upload_file",), requests=4,
        recovers={"500": 2, "502": 2}),
    "resume_upload": Call(  # the status read first, then three fragments
        "GET", lambda c: "/up/", _session,
        lambda g, c: g.submit(_drive.resume_upload(g.aio, c["session"], SESSION_DATA,
                                                   fragment_size=_drive.FRAGMENT_UNIT)).result(60),
        _check_item(len(SESSION_DATA)), True, (f"{DRIVE}:resume_upload",), requests=4),
    "cancel_upload": Call(  # DELETE: a resend after a lost answer finds the session gone (404), fine
        "DELETE", lambda c: "/up/", _session,
        lambda g, c: g.submit(_drive.cancel_upload(g.aio, c["session"])).result(60), _check_cancelled, True,
        (f"{DRIVE}:cancel_upload",)),
    "find_file": Call(
        "GET", lambda c: "/v1.0/me/drive/root:/", _on_drive,
        lambda g, c: g.submit(_drive.find_file(g.aio, c["path"])).result(60),
        lambda r, c, t: (r is not None and r["id"] == c["id"]) or pytest.fail(f"{r}"), True,
        (f"{DRIVE}:find_file",)),
    "invite_readers": Call(  # POST, resent: Graph keeps one permission per person
        "POST", lambda c: "/v1.0/me/drive/items/", _on_drive,
        lambda g, c: g.submit(_drive.invite_readers(g.aio, c["id"], c["ids"])).result(60), _check_invited, True,
        (f"{DRIVE}:invite_readers",)),
    "share_file": Call(  # the upload (faulted as upload_small), then the invite: faulted here
        "POST", lambda c: "/v1.0/me/drive/items/",
        lambda g, t: {"path": _drive_path(), "ids": [g.get_user(upn)["id"] for upn in t.people[:2]]},
        lambda g, c: g.submit(_drive.share_file(g.aio, c["path"], SMALL, c["ids"])).result(60), _check_shared,
        True, (f"{DRIVE}:share_file", f"{DRIVE}:upload_file", f"{DRIVE}:invite_readers"), requests=2,
        before_fault=1),
}


def client_retries(call: Call, fault: str) -> bool:
    """The documented outcome: is the call retried (and succeeds), or does it raise GraphError?"""
    if fault == "429":
        return True  # refused before any work: safe to resend whatever the method
    if fault in CODES:
        return fault in RETRIED_STATUSES and call.resend_safe
    return call.resend_safe  # dropped connection, timeout after commit: only where resending is safe


CLIENT_CASES = [(name, fault) for name, call in CALLS.items() for fault in FAULTS
                if fault != "timeout_after_commit" or call.method == "POST"]


@pytest.mark.parametrize(("name", "fault"), CLIENT_CASES, ids=[f"{n}-{f}" for n, f in CLIENT_CASES])
def test_graph_client_under_a_fault_on_the_first_request(t: Tenant, name: str, fault: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    call = CALLS[name]
    seen = spy(monkeypatch, call.exercises)
    g = minted_graph(t.admin, timeout=CLIENT_TIMEOUT)
    try:
        ctx = call.setup(g, t)
        expected_chat = None
        if name == "create_1on1_chat":  # what Graph answers for this pair without faults
            expected_chat = g.get_or_create_chat(SANDBOX_DEFAULT_UPN, ctx["other"])["id"]
        inject(t.admin, fault, call.path(ctx), call.method)
        before = g.stats.get("requests", 0)
        seen.clear()  # the setup's calls do not count
        recovered = (call.recovers or {}).get(fault)
        if client_retries(call, fault) or recovered is not None:
            result = call.run(g, ctx)
            call.check(result, ctx, t)
            if expected_chat is not None:
                assert result["id"] == expected_chat  # the retry found the same chat, no second one
            # the faulted request and one retry (or what the call did itself to get past it)
            assert g.stats["requests"] - before == call.requests + (recovered or 1)
        else:
            with pytest.raises(GraphError) as info:
                call.run(g, ctx)
            err = info.value
            assert g.stats["requests"] - before == call.before_fault + 1  # not retried
            if fault in CODES:
                assert (err.status, err.code) == (int(fault), CODES[fault]), err
                assert err.request_id and uuid.UUID(err.request_id), err
                assert err.request_id in str(err)
            else:
                assert err.status is None and "could not be reached" in str(err), err
            if call.stored is not None:  # stored only when the server committed before the fault
                assert call.stored(ctx, t) == (fault == "timeout_after_commit")
        assert faults_left(t.admin) == 0  # the fault really hit the call
        assert set(seen) == set(call.exercises), seen  # the case runs through the calls it names
    finally:
        g.close()


# -- part 2: crm.teams.send, exactly once ----------------------------------------------------------------

# (path prefix, method, faults to inject) per call of the send path; list_messages faults the post and then
# the reconciliation read (the delivery client retries only 429 on a post, so the second request is the read).
SEND_TARGETS: dict[str, tuple[str, str | None, int]] = {
    "get_user": ("/v1.0/users/", "GET", 1),
    "me": ("/v1.0/me", "GET", 1),
    "create_chat": ("/v1.0/chats", "POST", 1),
    "group_find_chat": ("/v1.0/me/chats", "GET", 1),  # group sends: is there a chat with these members?
    "group_create_chat": ("/v1.0/chats", "POST", 1),
    "post_message": ("/v1.0/chats/", "POST", 1),
    "list_chat_messages": ("/v1.0/chats/", None, 2),
}
SEND_CASES = [(target, fault) for target, (_p, method, _n) in SEND_TARGETS.items() for fault in FAULTS
              if (fault != "timeout_after_commit" or method == "POST")
              and (target != "list_chat_messages" or fault in {"500", "502", "503", "504", "drop"})]


@pytest.mark.parametrize(("target", "fault"), SEND_CASES, ids=[f"{n}-{f}" for n, f in SEND_CASES])
def test_send_delivers_exactly_once_under_a_fault(t: Tenant, target: str, fault: str) -> None:
    subject = f"Fault {target} {fault} {uuid.uuid4().hex[:8]}"
    path, method, count = SEND_TARGETS[target]
    before = t.admin.counters()
    inject(t.admin, fault, path, method, count)
    group = target.startswith("group_")
    to, chat = (t.people[:2], "group") if group else (t.people[:1], "one_on_one")
    result = t.crm.teams.send([1], to=to, subject=subject, chat=chat)
    assert faults_left(t.admin) == 0  # the send made the faulted call(s)
    delivered = [m for m in t.admin.get("messages")["value"] if m.get("subject") == f"cobra CRM - {subject}"]
    assert len(delivered) == 1, delivered
    if group:  # a chat created under a lost answer is found again, not created twice
        chats = [c for c in t.admin.get("chats")["value"] if c["topic"] == f"cobra CRM - {subject}"]
        assert len(chats) == 1, chats
    assert result["status"].tolist() == ["sent"] * len(to), result  # a row per recipient, one message
    assert result["message_id"].tolist() == [delivered[0]["id"]] * len(to)
    if target == "list_chat_messages":  # the reconciliation read was faulted too
        after = t.admin.counters()
        assert any(k.startswith("GET /v1.0/chats/") and ("injected" in k or "dropped" in k)
                   and after[k] > before.get(k, 0) for k in after), after
    log = t.crm.store.df("SELECT outcome FROM transfer_log WHERE message_id = ?", [delivered[0]["id"]])
    assert log["outcome"].tolist() == ["sent"] * len(to)


# A send to a team's channel (issue 17.1): planning reads the joined teams, the channel and its members; the post
# goes to the channel; a lost answer is read back from the channel's messages (post and read faulted: count 2).
CHANNEL_SEND_TARGETS: dict[str, tuple[str, str | None, int]] = {
    "joined_teams": ("/v1.0/me/joinedTeams", "GET", 1),
    "channel": ("{channel}", "GET", 1),  # the channel read first, before its members
    "channel_post": ("{channel}/messages", "POST", 1),
    "channel_read_back": ("{channel}/messages", None, 2),
}
# Not 429, 502, 504 here (time): the client treats 502 as 500 and 504 as 503, and a 429 is refused before any work
# and always retried; part 1 checks each of them for every call.
PART2_FAULTS = [f for f in FAULTS if f not in {"429", "502", "504"}]
CHANNEL_SEND_CASES = [(target, fault) for target, (_p, method, _n) in CHANNEL_SEND_TARGETS.items()
                      for fault in PART2_FAULTS if (fault != "timeout_after_commit" or method == "POST")
                      and (target != "channel_read_back" or fault in {"500", "502", "503", "504", "drop"})]


@pytest.mark.parametrize(("target", "fault"), CHANNEL_SEND_CASES, ids=[f"{n}-{f}" for n, f in CHANNEL_SEND_CASES])
def test_channel_send_delivers_exactly_once_under_a_fault(t: Tenant, target: str, fault: str) -> None:
    subject = f"Fault channel {target} {fault} {uuid.uuid4().hex[:8]}"
    c = _general(None, t)
    path, method, count = CHANNEL_SEND_TARGETS[target]
    inject(t.admin, fault, path.format(channel=f"/v1.0/teams/{c['team']}/channels/{c['channel']}"), method, count)
    result = t.crm.teams.send([1], to=c["key"], subject=subject)
    assert faults_left(t.admin) == 0  # the send made the faulted call(s)
    with t.admin.graph() as h:
        r = h.get(f"teams/{c['team']}/channels/{c['channel']}/messages", params={"$top": 50})
        r.raise_for_status()
        delivered = [m for m in r.json()["value"] if m.get("subject") == f"cobra CRM - {subject}"]
    assert len(delivered) == 1, delivered
    assert result["status"].tolist() == ["sent"], result
    assert result["message_id"].tolist() == [delivered[0]["id"]]
    log = t.crm.store.df("SELECT outcome FROM transfer_log WHERE message_id = ?", [delivered[0]["id"]])
    assert log["outcome"].tolist() == ["sent"]


# A file send (issue 17.3, ``as_file=True, file_threshold=1``: two records, one small workbook in one PUT): the
# upload, the invite and the post faulted; one message with one file attached, one upload, the log names the file.
FILE_SEND_TARGETS: dict[str, tuple[str, str | None, int]] = {
    "file_upload": ("/v1.0/me/drive/root:/", "PUT", 1),
    "file_invite": ("/v1.0/me/drive/items/", "POST", 1),
    "file_post": ("/v1.0/chats/", "POST", 1),
}
FILE_SEND_CASES = [(target, fault) for target, (_p, method, _n) in FILE_SEND_TARGETS.items() for fault in PART2_FAULTS
                   if fault != "timeout_after_commit" or method == "POST"]


def _uploads_done(admin: SandboxAdmin) -> int:
    return sum(n for k, n in admin.counters().items() if " 201" in k and ("/up/{session}" in k or ":/content" in k))


@pytest.mark.parametrize(("target", "fault"), FILE_SEND_CASES, ids=[f"{n}-{f}" for n, f in FILE_SEND_CASES])
def test_file_send_delivers_exactly_once_under_a_fault(t: Tenant, target: str, fault: str) -> None:
    if t.crm.store.one("SELECT count(*) FROM addresses") < 2:  # two records: above the threshold of one
        t.crm.add_address(company="Zweite & Partner GmbH", city="Bremen", country="DE")
    subject = f"Fault file {target} {fault} {uuid.uuid4().hex[:8]}"
    path, method, count = FILE_SEND_TARGETS[target]
    uploads = _uploads_done(t.admin)
    inject(t.admin, fault, path, method, count)
    result = t.crm.teams.send([1, 2], to=t.people[:1], subject=subject, as_file=True, file_threshold=1)
    if result["status"].eq("sending").any():  # an unconfirmed post: resume reconciles it
        result = t.crm.teams.resume()
    assert faults_left(t.admin) == 0  # the send made the faulted call
    delivered = [m for m in t.admin.get("messages")["value"] if m.get("subject") == f"cobra CRM - {subject}"]
    assert len(delivered) == 1, delivered
    (attachment,) = delivered[0]["attachments"]
    assert attachment["contentType"] == "reference" and attachment["name"].endswith(".xlsx")
    assert _uploads_done(t.admin) == uploads + 1  # one upload, not one per try
    log = t.crm.store.df("SELECT outcome, file_id FROM transfer_log WHERE message_id = ?", [delivered[0]["id"]])
    assert log["outcome"].tolist() == ["sent", "sent"] and log["file_id"].notna().all(), log
