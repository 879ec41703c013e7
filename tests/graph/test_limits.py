"""The Teams pacer: even tenant spacing, one request per chat in flight, chats interleaved."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest

from crmkit.graph import AsyncGraph, RateLimiter, RetryPolicy

pytestmark = pytest.mark.core  # virtual clocks and MockTransport: no network


class VirtualTime:
    """Virtual clock for asyncio: when every task is asleep, jump to the earliest wake-up."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._heap, (self.now + max(0.0, seconds), self._seq, fut))
        await fut

    async def run(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):
                await asyncio.sleep(0)
            if self._heap and not task.done():
                when, _, fut = heapq.heappop(self._heap)
                self.now = max(self.now, when)
                fut.set_result(None)
        await task


def test_limiter_spaces_tenant_starts_and_chat_gaps_on_a_virtual_clock() -> None:
    vt = VirtualTime()
    starts: list[tuple[float, str]] = []
    ends: dict[str, list[float]] = {}
    limiter = RateLimiter(20, 1, headroom=0.95, clock=vt.clock, sleep=vt.sleep)

    async def send(chat: str) -> None:
        async with limiter.slot(chat):
            starts.append((vt.now, chat))
            await vt.sleep(0.3)  # the request's latency
        ends.setdefault(chat, []).append(vt.now)

    async def main() -> None:
        await asyncio.gather(*(send(f"c{i % 8}") for i in range(40)))

    asyncio.run(vt.run(main()))
    times = sorted(t for t, _ in starts)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= limiter.tenant_interval - 1e-9  # no late wake-ups here, so no catch-up
    for chat in {c for _, c in starts}:
        chat_starts = [t for t, c in starts if c == chat]
        # every start comes at least one gap after the previous request in the chat completed
        assert all(s >= e + limiter.chat_gap - 1e-9 for s, e in zip(chat_starts[1:], ends[chat], strict=False))
    # interleaving: the first eight starts are eight different chats
    assert len({c for _, c in sorted(starts)[:8]}) == 8
    # with 8 chats and 0.3 s latency the chats, not the tenant, are the bottleneck: 8 / 1.35 s
    assert vt.now == pytest.approx(7 * limiter.tenant_interval + 5 * 0.3 + 4 * limiter.chat_gap, rel=0.01)


def test_late_callers_catch_up_only_within_the_window_cap() -> None:
    """After a stall, starts catch up at min_gap spacing but never exceed the cap per second."""
    vt = VirtualTime()
    limiter = RateLimiter(20, 1, headroom=0.95, clock=vt.clock, sleep=vt.sleep)
    starts: list[float] = []

    async def send(i: int) -> None:
        async with limiter.slot(None):
            starts.append(vt.now)
            if i == 5:
                vt.now += 0.4  # the event loop stalls inside one request, holding no slot

    async def main() -> None:
        await asyncio.gather(*(send(i) for i in range(80)))

    asyncio.run(vt.run(main()))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= limiter.min_gap - 1e-9
    assert min(gaps) < limiter.tenant_interval - 1e-6  # it did catch up after the stall
    for i, t in enumerate(starts):
        assert sum(1 for u in starts[i:] if u < t + 1.0) <= limiter.window_cap == 19


def test_defer_pushes_a_chat_back() -> None:
    now = [10.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limiter.defer("c", 5)
    assert limiter.ready_at("c") == 15.0
    limiter.defer(None, 99)  # unkeyed: nothing to defer
    with pytest.raises(ValueError):
        RateLimiter(0, 1)


class TeamsLikeServer:
    """Sliding one-second windows (tenant cap, per-chat cap) with latency, like the sandbox's throttle."""

    def __init__(self, tenant_cap: int = 20, chat_cap: int = 1, latency: float = 0.05) -> None:
        self.tenant_cap, self.chat_cap, self.latency = tenant_cap, chat_cap, latency
        self.app: deque[float] = deque()
        self.chats: dict[str, deque[float]] = {}
        self.accepted = 0
        self.throttled = 0
        self.rng = random.Random(3)

    @staticmethod
    def _full(q: deque[float], cap: int, now: float) -> bool:
        while q and q[0] <= now - 1.0:
            q.popleft()
        return len(q) >= cap

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        # the request is counted at a random point inside its latency
        before = self.latency * self.rng.random()
        await asyncio.sleep(before)
        chat = request.url.path.split("/")[3]
        now = time.monotonic()
        q = self.chats.setdefault(chat, deque())
        if self._full(self.app, self.tenant_cap, now) or self._full(q, self.chat_cap, now):
            self.throttled += 1
            return httpx.Response(429, headers={"Retry-After": "1"}, json={"error": {"code": "TooManyRequests"}})
        self.app.append(now)
        q.append(now)
        self.accepted += 1
        await asyncio.sleep(self.latency - before)
        return httpx.Response(201, json={"id": str(self.accepted)})


def test_bulk_send_keeps_near_the_limit_without_429() -> None:
    """60 messages over 20 chats: ≥ 80 % of 20/s, no 429 (the full-size run is `make bench`)."""
    server = TeamsLikeServer()
    client = AsyncGraph(
        httpx.AsyncClient(transport=httpx.MockTransport(server)), lambda force: "t",
        base_url="https://graph.test/v1.0", retry=RetryPolicy(max_retries=5),
    )
    messages = [(f"19:chat{i % 20}@thread.v2", {"body": {"content": f"m{i}"}}) for i in range(60)]

    async def main() -> tuple[float, list]:
        started = time.monotonic()
        outcomes = await client.send_many(messages)
        return time.monotonic() - started, outcomes

    seconds, outcomes = asyncio.run(main())
    assert all(o.ok for o in outcomes) and len(outcomes) == 60
    assert server.throttled == 0
    rate = 60 / seconds
    assert rate >= 0.8 * 20, rate
    assert [o.index for o in outcomes] == list(range(60))


def test_send_many_reports_failures_and_keeps_going() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "bad" in request.url.path:
            return httpx.Response(403, json={"error": {"code": "Forbidden", "message": "not a member"}})
        return httpx.Response(201, json={"id": "ok"})

    client = AsyncGraph(httpx.AsyncClient(transport=httpx.MockTransport(handler)), lambda f: "t",
                        base_url="https://graph.test/v1.0", limiter=RateLimiter(1000, 1000))
    seen: list[int] = []
    outcomes = asyncio.run(client.send_many(
        [("19:good@x", {"body": {"content": "a"}}), ("19:bad@x", {"body": {"content": "b"}})],
        on_result=lambda o: seen.append(o.index),
    ))
    assert [o.ok for o in outcomes] == [True, False]
    assert outcomes[1].error is not None and outcomes[1].error.status == 403
    assert sorted(seen) == [0, 1]
