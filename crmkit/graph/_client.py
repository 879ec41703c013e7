"""The asynchronous Microsoft Graph client: the calls crmkit needs, one retry loop, typed errors."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from ..errors import CrmkitError, GraphError
from ._clock import ServerClock
from ._errors import GraphNotFound, error_from_parts, error_from_response
from ._limits import RateLimiter
from ._retry import RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_GRAPH_URL",
    "AsyncGraph",
    "SendOutcome",
    "TokenProvider",
    "UserPage",
]

DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
BATCH_LIMIT = 20
USER_FIELDS = ("id", "displayName", "mail", "userPrincipalName", "givenName", "surname")

# ``provider(force_refresh)`` returns an access token; force_refresh=True after a 401.
TokenProvider = Callable[[bool], str]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _may_resend(idempotent: bool, status: int) -> bool:
    """A 429 is a refusal before any work; a 5xx may come after a POST took effect."""
    return idempotent or status == 429


# Transport failures where the request surely never reached the server: safe to resend any method.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass
class UserPage:
    """One page of a directory search; pass ``next_link`` back to get the next page."""

    users: list[dict[str, Any]]
    next_link: str | None = None
    count: int | None = None


@dataclass
class SendOutcome:
    """What happened to one message of :meth:`AsyncGraph.send_many`."""

    index: int
    chat_id: str
    message: dict[str, Any] | None = None
    error: CrmkitError | None = None
    attempts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _Stats:
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n


def _odata_key(value: str) -> str:
    # users('…') in a bind URL or path: double single quotes (OData), then percent-encode '#', '?'.
    return quote(value.replace("'", "''"), safe="@'")


def search_expression(text: str) -> str:
    """A Graph ``$search`` value that finds ``text`` in name, mail or UPN.

    Double quotes delimit clauses and cannot be escaped reliably, so they are dropped from the
    user's text. Graph tokenises displayName (word starts match); mail and UPN match by prefix.
    """
    cleaned = " ".join(text.replace('"', " ").replace("\\", " ").split())
    return " OR ".join(f'"{prop}:{cleaned}"' for prop in ("displayName", "mail", "userPrincipalName"))


class AsyncGraph:
    """Microsoft Graph v1.0 over one ``httpx.AsyncClient``. Use it on one event loop.

    Args:
        http: the client; inject one with a ``MockTransport`` or the sandbox routing transport.
        token_provider: ``provider(force_refresh) -> access token``; it runs in a worker thread
            because MSAL is synchronous. The token is reused for ``token_ttl`` seconds or until 401.
        base_url: ``https://graph.microsoft.com/v1.0`` or the sandbox's Graph URL.
        retry: the retry policy (429/503/504, ``Retry-After``, backoff).
        limiter: paces chat-message posts to Teams' limits; None disables pacing.
    """

    def __init__(
        self, http: httpx.AsyncClient, token_provider: TokenProvider, *, base_url: str = DEFAULT_GRAPH_URL,
        retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep, token_ttl: float = 300.0,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.limiter = limiter if limiter is not None else RateLimiter()
        self._provider = token_provider
        self._sleep = sleep
        self._token: str | None = None
        self._token_at = 0.0
        self._token_lock: asyncio.Lock | None = None
        self._token_ttl = token_ttl
        self._stats = _Stats()
        self.clock = ServerClock()  # Graph's clock, from every response's Date header

    def __repr__(self) -> str:
        return f"<AsyncGraph {self.base_url}>"

    @property
    def stats(self) -> dict[str, int]:
        """Counters: requests, retries, statuses seen (``status_429`` …), token refreshes."""
        return dict(self._stats.counts)

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- plumbing ----------------------------------------------------------------------------------

    async def _access_token(self, force: bool, stale: str | None = None) -> str:
        if self._token_lock is None:
            self._token_lock = asyncio.Lock()
        async with self._token_lock:  # many concurrent sends share one fetch
            expired = self._token is None or time.monotonic() - self._token_at > self._token_ttl
            # After a 401 only the first of the concurrent callers refreshes; the rest reuse its result.
            if expired or (force and self._token == stale):
                loop = asyncio.get_running_loop()
                token = await loop.run_in_executor(None, self._provider, force)
                if not token:
                    raise GraphError("The token provider returned no access token.")
                self._token, self._token_at = token, time.monotonic()
                self._stats.add("token_fetches")
            assert self._token is not None
            return self._token

    def url(self, path: str) -> str:
        if path.startswith(("https://", "http://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
        headers: Mapping[str, str] | None = None, chat_id: str | None = None, paced: bool = False,
        idempotent: bool | None = None, accept: frozenset[int] = frozenset(), content: bytes | None = None,
        auth: bool = True, label: str | None = None,
    ) -> httpx.Response:
        """Send one Graph request with retries; return the successful response.

        Args:
            chat_id, paced: pace through the limiter (``paced``), per chat when ``chat_id`` is given.
            idempotent: whether a request that may have reached Graph can be resent after a
                transport failure or a 5xx (default: GET/PUT/DELETE yes, POST no: a 503 or 504 may
                come after Graph posted the message, and a resend would post it twice). A 429 is
                resent whatever the method: Graph refused the request without processing it.
            accept: error statuses to return instead of raising (e.g. 424 for a ``$batch``).
            content: a raw body (a file's bytes) instead of ``json``.
            auth: send the bearer token (False for an upload session's URL, which is its own authorisation).
            label: what error texts name instead of the URL's path (a capability URL must not be shown).

        Raises:
            GraphError: the final error (``GraphThrottled`` for 429, with Graph's code and request-id).
        """
        url = self.url(path)
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        base_headers = {"client-request-id": str(uuid.uuid4()), **(headers or {})}
        attempt = 0
        refreshed = False
        force = False
        token: str | None = None
        while True:
            token = await self._access_token(force, stale=token) if auth else None
            force = False
            request = self.http.build_request(
                method, url, params=params, json=json, content=content,
                headers={**base_headers, "Authorization": f"Bearer {token}"} if auth else base_headers,
            )
            self._stats.add("requests")
            try:
                if paced and self.limiter is not None:
                    async with self.limiter.slot(chat_id):
                        sent = time.time()
                        response = await self.http.send(request)
                else:
                    sent = time.time()
                    response = await self.http.send(request)
                self.clock.observe(response.headers.get("date"), sent, time.time())
            except httpx.TransportError as exc:
                attempt += 1
                self._stats.add("transport_errors")
                if attempt <= self.retry.max_retries and (idempotent or isinstance(exc, _UNSENT)):
                    self._stats.add("retries")
                    await self._sleep(self.retry.backoff(attempt))
                    continue
                raise GraphError(
                    f"Microsoft Graph could not be reached for {label or f'{method} {urlsplit(url).path}'} "
                    f"({type(exc).__name__}: {exc}). Check the network or the Graph URL setting."
                ) from exc
            status = response.status_code
            self._stats.add(f"status_{status}")
            if status < 400 or status in accept:
                return response
            if auth and not refreshed and _is_auth_failure(response):
                # One refresh: an expired token gives 401 (Teams sometimes 403 "No authorization information").
                refreshed = force = True
                self._stats.add("token_refreshes")
                continue
            attempt += 1
            delay = (self.retry.delay(attempt, status, response.headers.get("retry-after"))
                     if _may_resend(idempotent, status) else None)
            if delay is None:
                raise error_from_response(response)
            if status == 429 and paced and self.limiter is not None:
                self.limiter.defer(chat_id, delay)
            self._stats.add("retries")
            await self._sleep(delay)

    async def json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = await self.request(method, path, **kw)
        if response.status_code == 204 or not response.content:
            return {}
        data = response.json()
        return data if isinstance(data, dict) else {"value": data}

    # -- users -------------------------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        """The signed-in user (needs User.Read)."""
        return await self.json("GET", "/me")

    async def get_user(self, id_or_upn: str, *, select: Sequence[str] | None = None) -> dict[str, Any]:
        """A user by object id or UPN.

        Raises:
            GraphNotFound: no such user (404), or a key Graph cannot read as one (400, e.g. "Resource
                not found for the segment" or "Invalid object identifier"): either way nobody by that name.
        """
        params = {"$select": ",".join(select)} if select else None
        try:
            return await self.json("GET", f"/users/{_odata_key(id_or_upn)}", params=params)
        except GraphError as exc:
            if exc.status == 400:
                raise GraphNotFound(str(exc), status=400, code=exc.code, request_id=exc.request_id) from exc
            raise

    async def find_user_by_mail(self, mail: str, *, select: Sequence[str] | None = None) -> dict[str, Any] | None:
        """The user whose ``mail`` is ``mail`` (case-insensitive), or None; for a mail that is not the UPN."""
        params: dict[str, Any] = {"$filter": f"mail eq '{mail.replace(chr(39), chr(39) * 2)}'", "$top": 2}
        if select:
            params["$select"] = ",".join(select)
        data = await self.json("GET", "/users", params=params)
        users = list(data.get("value") or [])
        return users[0] if len(users) == 1 else None  # two people with one mail name nobody for sure

    async def search_users(
        self, text: str = "", *, top: int = 25, next_link: str | None = None,
        select: Sequence[str] = USER_FIELDS,
    ) -> UserPage:
        """One page of a people-picker search (``$search`` with ``ConsistencyLevel: eventual``).

        Pass the returned ``next_link`` to continue; the consistency header is re-sent on every
        page because Graph does not carry it into ``@odata.nextLink``.
        """
        headers = {"ConsistencyLevel": "eventual"}
        if next_link:
            data = await self.json("GET", next_link, headers=headers)
        else:
            params: dict[str, Any] = {
                "$select": ",".join(select), "$top": max(1, min(int(top), 999)), "$count": "true",
            }
            if text.strip():
                params["$search"] = search_expression(text)
            params["$orderby"] = "displayName"
            data = await self.json("GET", "/users", params=params, headers=headers)
        return UserPage(
            users=list(data.get("value") or []), next_link=data.get("@odata.nextLink"),
            count=data.get("@odata.count"),
        )

    async def iter_users(self, text: str = "", *, top: int = 100, limit: int | None = None) -> list[dict[str, Any]]:
        """All matches across pages (at most ``limit``)."""
        out: list[dict[str, Any]] = []
        page = await self.search_users(text, top=top)
        while True:
            out.extend(page.users)
            if page.next_link is None or (limit is not None and len(out) >= limit):
                return out[:limit] if limit is not None else out
            page = await self.search_users(next_link=page.next_link)

    # -- chats -------------------------------------------------------------------------------------

    def _member(self, id_or_upn: str, role: str = "owner") -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.aadUserConversationMember",
            "roles": [role],
            "user@odata.bind": f"{self.base_url}/users('{_odata_key(id_or_upn)}')",
        }

    async def get_or_create_chat(self, me: str, other: str) -> dict[str, Any]:
        """The 1:1 chat between ``me`` and ``other`` (ids or UPNs); Graph returns an existing one."""
        body = {"chatType": "oneOnOne", "members": [self._member(me), self._member(other)]}
        # Idempotent by Graph's contract for 1:1 chats, so a transport failure may be retried.
        return await self.json("POST", "/chats", json=body, paced=True, idempotent=True)

    async def create_group_chat(
        self, members: Sequence[str], *, topic: str | None = None, guests: Iterable[str] = (),
    ) -> dict[str, Any]:
        """A new group chat; ``members`` must include the signed-in user. Not deduplicated by Graph."""
        guest_set = set(guests)
        body: dict[str, Any] = {
            "chatType": "group",
            "members": [self._member(m, "guest" if m in guest_set else "owner") for m in members],
        }
        if topic:
            body["topic"] = topic
        return await self.json("POST", "/chats", json=body, paced=True)

    async def find_group_chat(self, members: Sequence[str], *, topic: str | None = None) -> dict[str, Any] | None:
        """The signed-in user's group chat with exactly ``members`` (object ids) and ``topic``, if any.

        Graph does not deduplicate group chats; without this every send to the same people would
        open another chat. Like the Teams client, a chat only counts with the same topic.
        """
        wanted = set(members)
        path: str | None = "/me/chats"
        params: dict[str, Any] | None = {"$filter": "chatType eq 'group'", "$expand": "members", "$top": 50}
        while path is not None:
            data = await self.json("GET", path, params=params, paced=True)
            for chat in data.get("value") or []:
                people = {m.get("userId") for m in chat.get("members") or []}
                if people == wanted and (chat.get("topic") or None) == (topic or None):
                    return chat
            path, params = data.get("@odata.nextLink"), None
        return None

    async def get_or_create_group_chat(
        self, members: Sequence[str], *, topic: str | None = None, guests: Iterable[str] = (),
    ) -> dict[str, Any]:
        """The group chat with exactly these members and topic: the existing one, or a new one."""
        found = await self.find_group_chat(members, topic=topic)
        return found if found is not None else await self.create_group_chat(members, topic=topic, guests=guests)

    async def send_message(
        self, chat_id: str, content: str, *, content_type: str = "html", subject: str | None = None,
        importance: str | None = None, attachments: Sequence[Mapping[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Post a message to a chat, paced to Teams' limits; returns the created chatMessage."""
        body: dict[str, Any] = {"body": {"contentType": content_type, "content": content}}
        if subject:
            body["subject"] = subject
        if importance:
            body["importance"] = importance
        if attachments:
            body["attachments"] = list(attachments)
        if extra:
            body.update(extra)
        return await self.post_message(chat_id, body)

    async def post_message(self, chat_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Post a ready chatMessage body (``{"body": {...}, ...}``) to a chat."""
        return await self.json(
            "POST", f"/chats/{quote(chat_id, safe=':@')}/messages", json=dict(body), chat_id=chat_id, paced=True
        )

    async def send_many(
        self, messages: Sequence[tuple[str, Mapping[str, Any]]], *,
        on_result: Callable[[SendOutcome], None] | None = None,
    ) -> list[SendOutcome]:
        """Post many ``(chat_id, chatMessage body)`` pairs as fast as Teams allows.

        Each chat's messages go out in order, one at a time; the chats run side by side and share
        the tenant budget through the limiter, so the sends interleave across chats. A failure is
        reported in its :class:`SendOutcome`; the other messages continue.
        """
        queues: dict[str, deque[tuple[int, Mapping[str, Any]]]] = {}
        for index, (chat_id, body) in enumerate(messages):
            queues.setdefault(chat_id, deque()).append((index, body))
        outcomes: list[SendOutcome | None] = [None] * len(messages)

        async def run_chat(chat_id: str, queue: deque[tuple[int, Mapping[str, Any]]]) -> None:
            while queue:
                index, body = queue.popleft()
                started = time.monotonic()
                before = self._stats.counts["requests"]
                outcome = SendOutcome(index=index, chat_id=chat_id)
                try:
                    outcome.message = await self.post_message(chat_id, body)
                except CrmkitError as exc:  # GraphError, or AuthError from the token provider
                    outcome.error = exc
                outcome.attempts = self._stats.counts["requests"] - before  # approximate under concurrency
                outcome.seconds = time.monotonic() - started
                outcomes[index] = outcome
                if on_result is not None:
                    on_result(outcome)

        await asyncio.gather(*(run_chat(c, q) for c, q in queues.items()))
        return [o for o in outcomes if o is not None]

    # -- batching ----------------------------------------------------------------------------------

    async def batch(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Run up to 20 requests in one ``$batch``; return their responses in the given order.

        Items Graph throttles (429, and 503/504 for idempotent methods) are retried alone, honouring
        each item's own ``Retry-After``; items that failed only because a dependency did (424) go with it.
        Each response is ``{"id", "status", "headers", "body"}``; item errors are not raised.
        """
        if not requests:
            return []
        if len(requests) > BATCH_LIMIT:
            raise ValueError(f"Graph takes at most {BATCH_LIMIT} requests per $batch, got {len(requests)}.")
        items: list[dict[str, Any]] = []
        for n, req in enumerate(requests, start=1):
            item = dict(req)
            item.setdefault("id", str(n))
            item["id"] = str(item["id"])
            item["url"] = self._relative(str(item["url"]))
            if "body" in item:
                item.setdefault("headers", {}).setdefault("Content-Type", "application/json")
            items.append(item)
        ids = [i["id"] for i in items]
        if len(set(ids)) != len(ids):
            raise ValueError("$batch request ids must be unique.")
        results: dict[str, dict[str, Any]] = {}
        by_id = {i["id"]: i for i in items}
        pending = items
        attempt = 0
        while pending:
            responses = await self._batch_once(pending)
            retry_ids: set[str] = set()
            wait = 0.0
            for resp in responses:
                status = int(resp.get("status", 0))
                results[str(resp.get("id"))] = resp
                method = str(by_id.get(str(resp.get("id")), {}).get("method", "GET")).upper()
                if status in self.retry.statuses and _may_resend(method in IDEMPOTENT_METHODS, status):
                    retry_ids.add(str(resp.get("id")))
                    hdrs = {str(k).lower(): str(v) for k, v in (resp.get("headers") or {}).items()}
                    ra = parse_retry_after(hdrs.get("retry-after"))
                    wait = max(wait, ra if ra is not None else 0.0)
            # Dependents that failed with 424 because a retried item failed go along.
            changed = True
            while changed:
                changed = False
                for item in pending:
                    if item["id"] in retry_ids:
                        continue
                    if int(results.get(item["id"], {}).get("status", 0)) == 424 and (
                        set(item.get("dependsOn") or []) & retry_ids
                    ):
                        retry_ids.add(item["id"])
                        changed = True
            attempt += 1
            if not retry_ids or attempt > self.retry.max_retries:
                break
            if wait > self.retry.max_retry_after:
                break
            pending = []
            for item in items:
                if item["id"] in retry_ids:
                    again = dict(item)
                    if again.get("dependsOn"):
                        again["dependsOn"] = [d for d in again["dependsOn"] if d in retry_ids]
                        if not again["dependsOn"]:
                            del again["dependsOn"]
                    pending.append(again)
            self._stats.add("batch_item_retries", len(pending))
            await self._sleep(wait if wait > 0 else self.retry.backoff(attempt))
        return [results[i] for i in ids]

    async def _batch_once(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Dev Proxy answers a faulted batch with 424 and the per-item errors in the body.
        safe = all(str(i.get("method", "GET")).upper() in IDEMPOTENT_METHODS for i in items)
        response = await self.request("POST", "/$batch", json={"requests": items}, accept=frozenset({424}),
                                      idempotent=safe)
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code == 424 and not (isinstance(data, dict) and "responses" in data):
            raise error_from_response(response)
        if not isinstance(data, dict):
            raise error_from_response(response, what="Microsoft Graph $batch (unreadable reply)")
        responses = data.get("responses")
        if not isinstance(responses, list):
            raise error_from_parts(200, {}, data, what="Microsoft Graph $batch (no responses)")
        return responses

    def _relative(self, url: str) -> str:
        if url.startswith(("https://", "http://")):
            parts = urlsplit(url)
            path = parts.path
            base_path = urlsplit(self.base_url).path.rstrip("/")
            if base_path and path.startswith(base_path):
                path = path[len(base_path):]
            return path + (f"?{parts.query}" if parts.query else "")
        return url if url.startswith("/") else f"/{url}"


def _is_auth_failure(response: httpx.Response) -> bool:
    if response.status_code == 401:
        return True
    if response.status_code == 403:
        # Teams has answered an expired token with 403 "No authorization information present".
        try:
            body = response.json()
        except ValueError:
            return False
        message = str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""
        return "no authorization information" in message.lower()
    return False
