"""Shared runtime of one sandbox instance: state, keys, settings, counters and response helpers."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .clock import SandboxClock
from .faults import FaultConfig
from .state import SandboxState
from .throttle import Limits, Throttle
from .tokens import SigningKey


@dataclass
class IdentitySettings:
    """Tunable identity-platform behaviour (admin API ``/_sandbox/config``)."""

    access_token_lifetime_s: float = 3599
    # The id_token's own lifetime: Entra's is 1 h and an access token may outlive it (hub tests shorten this one)
    id_token_lifetime_s: float = 3600
    refresh_token_lifetime_s: float = 90 * 24 * 3600
    device_code_lifetime_s: float = 900
    device_code_interval_s: int = 5
    # Polls closer together than interval * this factor get slow_down (RFC 8628 3.5).
    slow_down_factor: float = 0.5

    def update(self, data: dict[str, Any]) -> None:
        for k, v in data.items():
            if k not in self.__dataclass_fields__:
                raise ValueError(f"unknown setting {k!r}")
            setattr(self, k, int(v) if k == "device_code_interval_s" else float(v))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Counters:
    """Requests per ``METHOD route status`` (plus fault kinds), for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._c: Counter[str] = Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._c[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._c.items()))

    def reset(self) -> None:
        with self._lock:
            self._c.clear()


class Sandbox:
    def __init__(
        self,
        state_dir: str | Path,
        *,
        limits: Limits | None = None,
        faults: FaultConfig | None = None,
        settings: IdentitySettings | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.state = SandboxState(self.state_dir)
        self.key = SigningKey(self.state_dir)
        # Startup values, restored by the admin reset.
        self._initial = (
            Limits(**(limits or Limits()).as_dict()),
            FaultConfig.from_dict((faults or FaultConfig()).as_dict()),
            IdentitySettings(**(settings or IdentitySettings()).as_dict()),
        )
        self.throttle = Throttle(Limits(**self._initial[0].as_dict()))
        self.faults = FaultConfig.from_dict(self._initial[1].as_dict())
        self.settings = IdentitySettings(**self._initial[2].as_dict())
        self.counters = Counters()
        self.clock = self.state.clock
        # Filled in by the identity module (in-memory: device codes live for minutes).
        self.device_codes: dict[str, Any] = {}
        self.signin_tickets: dict[str, Any] = {}
        self.auth_codes: dict[str, Any] = {}  # authorization codes: one use, minutes of life

    def reset(self) -> None:
        self.state.reset()
        self.throttle.limits = Limits(**self._initial[0].as_dict())
        self.throttle.reset()
        self.faults = FaultConfig.from_dict(self._initial[1].as_dict())
        self.settings = IdentitySettings(**self._initial[2].as_dict())
        self.counters.reset()
        self.device_codes.clear()
        self.signin_tickets.clear()
        self.auth_codes.clear()

    def close(self) -> None:
        self.state.close()


def sandbox_of(request: Request) -> Sandbox:
    return request.app.state.sandbox


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _trusted_forwarded_host(request: Request) -> str | None:
    """``X-Forwarded-Host`` when it may name the public origin, else None.

    Trusted only from a loopback peer (the sandbox binds loopback only, so that is every caller
    today) and only when it names one of the sandbox's own host names (``*.crmkit.localhost``) or
    a loopback address, optionally with a port: crmkit's routing transport and a local reverse
    proxy announce the public https host this way.  Any other value is ignored, so a caller cannot
    make the sandbox write absolute links (nextLink, discovery) that point at a foreign host.
    """
    fwd = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
    peer = request.client.host if request.client else ""
    if not fwd or not _is_loopback_host(peer):
        return None
    host = fwd.rsplit(":", 1)[0] if not fwd.endswith("]") and fwd.count(":") == 1 else fwd
    name = host.lower().rstrip(".")
    if name.endswith(".crmkit.localhost") or name == "crmkit.localhost" or _is_loopback_host(host):
        return fwd
    return None


def public_origin(request: Request) -> str:
    """Origin the client used: a trusted forwarded host (see above), else the Host header as sent."""
    fwd = _trusted_forwarded_host(request)
    if fwd:
        proto = request.headers.get("x-forwarded-proto", "https").split(",")[0].strip().lower()
        return f"{proto if proto in ('http', 'https') else 'https'}://{fwd}"
    return f"{request.url.scheme}://{request.url.netloc}"


def browser_origin(request: Request) -> str:
    """Loopback origin a browser can open (sign-in page, Teams view): on the listener the request came
    in on, so a client of the https listener gets an https page on the same port (not http on it)."""
    server = request.scope.get("server") or ("127.0.0.1", 80)
    scheme = "https" if request.scope.get("scheme") == "https" else "http"
    return f"{scheme}://127.0.0.1:{server[1]}"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_z(t: dt.datetime | float) -> str:
    """ISO 8601 with milliseconds and Z, as Graph writes timestamps."""
    if not isinstance(t, dt.datetime):
        t = dt.datetime.fromtimestamp(t, dt.UTC)
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def request_ids(scope: dict[str, Any]) -> tuple[str, str]:
    st = scope.get("state") or {}
    return st.get("request_id", ""), st.get("client_request_id", "")


def _clock_of(scope: dict[str, Any]) -> SandboxClock:
    clock = (scope.get("state") or {}).get("clock")  # set by the middleware, per sandbox
    return clock if isinstance(clock, SandboxClock) else SandboxClock()


def graph_error_body(scope: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    rid, crid = request_ids(scope)
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _clock_of(scope).now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": rid,
                "client-request-id": crid,
            },
        }
    }


def graph_error(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(graph_error_body(request.scope, code, message), status_code=status, headers=headers)
