"""The blocking facade over :class:`AsyncGraph` for notebooks, dashboards and scripts."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import httpx

from ..http import make_async_http_client
from ._client import DEFAULT_GRAPH_URL, AsyncGraph, SendOutcome, TokenProvider, UserPage
from ._limits import RateLimiter
from ._loop import LoopThread, background_loop
from ._retry import RetryPolicy

__all__ = ["GraphClient"]

T = TypeVar("T")


class GraphClient:
    """Microsoft Graph for synchronous code, safe inside a running Jupyter event loop.

    Every call runs on crmkit's private event loop thread (one ``httpx.AsyncClient`` bound to one
    loop, never ``asyncio.run``). Blocking methods mirror :class:`AsyncGraph`; from a coroutine
    use ``await client.call(client.aio.me())`` or :meth:`submit` to keep the caller's loop free.

    Args:
        token_provider: ``provider(force_refresh) -> access token``.
        base_url: Graph base URL (``https://graph.microsoft.com/v1.0`` or the sandbox's).
        http: an ``httpx.AsyncClient`` to use (tests inject a MockTransport); default is built
            by :func:`crmkit.http.make_async_http_client` with ``sandbox_url``.
        sandbox_url: route the sandbox hosts to this loopback URL.
        retry, limiter: see :class:`AsyncGraph`.
        timeout: seconds a blocking call waits at most (None: no limit).
    """

    def __init__(
        self, token_provider: TokenProvider, *, base_url: str = DEFAULT_GRAPH_URL,
        http: httpx.AsyncClient | None = None, sandbox_url: str | None = None,
        retry: RetryPolicy | None = None, limiter: RateLimiter | None = None,
        loop: LoopThread | None = None, timeout: float | None = None,
    ) -> None:
        self._loop = loop or background_loop()
        self.timeout = timeout
        client = http if http is not None else make_async_http_client(sandbox_url)
        self.aio = AsyncGraph(client, token_provider, base_url=base_url, retry=retry, limiter=limiter)

    def __repr__(self) -> str:
        return f"<GraphClient {self.aio.base_url}>"

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, int]:
        return self.aio.stats

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro, self.timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` (built from ``client.aio``) in the background; returns a Future."""
        return self._loop.submit(coro)

    def call(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Await ``coro`` from another event loop (e.g. Jupyter's) without blocking it."""
        return asyncio.wrap_future(self._loop.submit(coro))

    def close(self) -> None:
        try:
            self._run(self.aio.aclose())
        except RuntimeError:
            pass  # loop already gone at interpreter exit

    # -- mirrored calls --------------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return self._run(self.aio.me())

    def get_user(self, id_or_upn: str, *, select: Sequence[str] | None = None) -> dict[str, Any]:
        return self._run(self.aio.get_user(id_or_upn, select=select))

    def find_user_by_mail(self, mail: str, *, select: Sequence[str] | None = None) -> dict[str, Any] | None:
        return self._run(self.aio.find_user_by_mail(mail, select=select))

    def search_users(self, text: str = "", *, top: int = 25, next_link: str | None = None) -> UserPage:
        return self._run(self.aio.search_users(text, top=top, next_link=next_link))

    def iter_users(self, text: str = "", *, top: int = 100, limit: int | None = None) -> list[dict[str, Any]]:
        return self._run(self.aio.iter_users(text, top=top, limit=limit))

    def get_or_create_chat(self, me: str, other: str) -> dict[str, Any]:
        return self._run(self.aio.get_or_create_chat(me, other))

    def create_group_chat(
        self, members: Sequence[str], *, topic: str | None = None, guests: Iterable[str] = ()
    ) -> dict[str, Any]:
        return self._run(self.aio.create_group_chat(members, topic=topic, guests=guests))

    def find_group_chat(self, members: Sequence[str], *, topic: str | None = None) -> dict[str, Any] | None:
        return self._run(self.aio.find_group_chat(members, topic=topic))

    def get_or_create_group_chat(
        self, members: Sequence[str], *, topic: str | None = None, guests: Iterable[str] = ()
    ) -> dict[str, Any]:
        return self._run(self.aio.get_or_create_group_chat(members, topic=topic, guests=guests))

    def send_message(self, chat_id: str, content: str, **kw: Any) -> dict[str, Any]:
        return self._run(self.aio.send_message(chat_id, content, **kw))

    def post_message(self, chat_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._run(self.aio.post_message(chat_id, body))

    def send_many(
        self, messages: Sequence[tuple[str, Mapping[str, Any]]], *,
        on_result: Callable[[SendOutcome], None] | None = None,
    ) -> list[SendOutcome]:
        """See :meth:`AsyncGraph.send_many`; ``on_result`` runs on the loop thread."""
        return self._run(self.aio.send_many(messages, on_result=on_result))

    def batch(self, requests: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return self._run(self.aio.batch(requests))
