"""Fault injection in the manner of Microsoft's Dev Proxy, plus request ids and counters.

The middleware sits outside the Starlette app so it can do what a flaky network does:
add latency, answer with random 429/5xx, drop the connection without a response, or let a
request commit and then never answer ("timeout after commit").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("crmkit.sandbox")

_FAULT_ERRORS: dict[int, tuple[str, str]] = {
    429: ("TooManyRequests", "Too many requests."),
    500: ("generalException", "General exception while processing."),
    502: ("BadGateway", "Bad gateway."),
    503: ("serviceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The gateway did not receive a timely response from the upstream service."),
    507: ("quotaLimitReached", "Insufficient storage."),
}


@dataclass
class FaultConfig:
    rate: float = 0.0  # probability of a random error status
    statuses: list[int] = field(default_factory=lambda: [429, 500, 502, 503, 504])
    latency_ms: float = 0.0
    drop_rate: float = 0.0  # probability of closing the connection without a response
    timeout_after_commit_rate: float = 0.0  # probability of committing, then never answering
    retry_after_s: int = 1  # Retry-After on injected 429/503
    hang_s: float = 120.0  # how long a "timeout after commit" hangs before dropping
    paths: list[str] = field(default_factory=lambda: ["/v1.0/"])  # path prefixes faults apply to
    methods: list[str] = field(default_factory=list)  # empty: every method
    seed: int | None = None
    count: int | None = None  # faults apply to the first `count` matching requests only; None: to all

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 (reproducible faults, not crypto)
        self._lock = threading.Lock()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        cfg = cls(**data)
        for name in ("rate", "drop_rate", "timeout_after_commit_rate"):
            if not 0.0 <= float(getattr(cfg, name)) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        bad = [s for s in cfg.statuses if s not in _FAULT_ERRORS]
        if bad:
            raise ValueError(f"unsupported fault statuses {bad}; choose from {sorted(_FAULT_ERRORS)}")
        if any(p.startswith("/_sandbox") for p in cfg.paths):
            raise ValueError("faults never apply to the admin API")
        if cfg.count is not None and (isinstance(cfg.count, bool) or not isinstance(cfg.count, int) or cfg.count < 0):
            raise ValueError("count must be a non-negative whole number (or null for every request)")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @property
    def active(self) -> bool:
        return bool(self.rate or self.latency_ms or self.drop_rate or self.timeout_after_commit_rate)

    def applies(self, method: str, path: str) -> bool:
        if path.startswith("/_sandbox"):
            return False
        if self.methods and method.upper() not in {m.upper() for m in self.methods}:
            return False
        return any(path.startswith(p) for p in self.paths)

    def take(self) -> bool:
        """Whether this matching request is subject to the faults: counts ``count`` down to 0."""
        if self.count is None:
            return True
        with self._lock:
            if self.count <= 0:
                return False
            self.count -= 1
            return True

    def roll(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    def pick_status(self) -> int:
        return self._rng.choice(self.statuses)


def fault_error_body(status: int, request_id: str, client_request_id: str, now: dt.datetime) -> dict[str, Any]:
    code, message = _FAULT_ERRORS[status]
    return {"error": {"code": code, "message": message, "innerError": {
        "date": now.strftime("%Y-%m-%dT%H:%M:%S"), "request-id": request_id,
        "client-request-id": client_request_id}}}


# Paths that carry a capability (an upload session's token, a download token): counted by their template
# also when a fault answers before the app has matched its route, so no counter name holds a token.
_CAPABILITY_PATHS = (("/up/", "/up/{session}"), ("/dl/", "/dl/{item}"))


def _template(path: str) -> str:
    return next((t for prefix, t in _CAPABILITY_PATHS if path.startswith(prefix)), path)


def _transport_of(send: Any) -> Any:
    # uvicorn passes a bound method of its per-request cycle object, which holds the socket's
    # asyncio transport.  That is the only way to close a connection without a response.
    return getattr(getattr(send, "__self__", None), "transport", None)


async def _wait_disconnect(receive: Any, timeout: float) -> None:
    async def until() -> None:
        while True:
            msg = await receive()
            if msg.get("type") == "http.disconnect":
                return

    try:
        await asyncio.wait_for(until(), timeout)
    except TimeoutError:
        pass


async def drop_connection(send: Any, receive: Any) -> None:
    transport = _transport_of(send)
    if transport is not None:
        transport.abort()
        await _wait_disconnect(receive, 5.0)
    else:  # not under uvicorn: the best we can do is never answer
        await _wait_disconnect(receive, 30.0)


def _dated(send: Any, clock: Any) -> Any:
    """``send`` adding the ``Date`` header from the tenant's clock to every response.

    uvicorn's own Date is off (server.py): it is refreshed once a second by the server's main loop,
    so it can lag real time by a second or more, and it cannot follow a skewed tenant clock.
    """

    async def dated(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
            message = {**message, "headers": [*headers, (b"date", clock.http_date().encode())]}
        await send(message)

    return dated


class SandboxMiddleware:
    """Outermost ASGI layer: request ids, counters, faults."""

    def __init__(self, app: Any, sandbox: Any) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = str(uuid.uuid4())
        crid = headers.get("client-request-id") or str(uuid.uuid4())
        clock = self.sandbox.clock
        scope.setdefault("state", {}).update(request_id=rid, client_request_id=crid, clock=clock)
        counters = self.sandbox.counters
        faults: FaultConfig = self.sandbox.faults
        respond = _dated(send, clock)  # `send` itself stays for drop_connection (_transport_of)

        def count(result: str | int) -> None:
            template = scope.get("route_template") or getattr(scope.get("route"), "path", None) or _template(path)
            counters.add(f"{method} {template} {result}")

        faulted = faults.active and faults.applies(method, path) and faults.take()
        if faulted:
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000)
            if faults.roll(faults.drop_rate):
                count("dropped")
                await drop_connection(send, receive)
                return
            if faults.roll(faults.rate):
                status = faults.pick_status()
                count(f"{status} injected")
                hdrs = [(b"content-type", b"application/json"), (b"request-id", rid.encode()),
                        (b"client-request-id", crid.encode()), (b"cache-control", b"no-store")]
                if status in (429, 503):
                    hdrs.append((b"retry-after", str(faults.retry_after_s).encode()))
                body = json.dumps(fault_error_body(status, rid, crid, clock.now())).encode()
                await respond({"type": "http.response.start", "status": status, "headers": hdrs})
                await respond({"type": "http.response.body", "body": body})
                return
        swallow = faulted and method in ("POST", "PUT", "PATCH", "DELETE") and faults.roll(
            faults.timeout_after_commit_rate
        )
        held: list[dict[str, Any]] = []
        status_seen: list[int] = []

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_seen.append(message["status"])
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"request-id", rid.encode()),
                                      (b"client-request-id", crid.encode())]
            if swallow:
                held.append(message)
            else:
                await respond(message)

        await self.app(scope, receive, send_wrapper)
        status = status_seen[0] if status_seen else 0
        if swallow and 200 <= status < 300:
            # The work is committed; the client must see no response at all.
            count(f"{status} timeout_after_commit")
            await _wait_disconnect(receive, faults.hang_s)
            await drop_connection(send, receive)
            return
        for message in held:
            await respond(message)
        count(status)
