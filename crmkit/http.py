"""The one HTTP seam of crmkit.

Every request crmkit makes to Microsoft (Graph calls and MSAL's identity traffic) goes through
an httpx client built here (:func:`make_http_client`, :func:`make_async_http_client` for Graph); only
the launchers' readiness probes of their own loopback servers (sandbox/process.py, voila_launch.py) do not.
Against real Microsoft it is a plain client.
Against the sandbox tenant it carries a :class:`SandboxRoutingTransport`, which
sends the sandbox's public https hosts (``login.crmkit.localhost``, ``graph.crmkit.localhost``)
to the sandbox's plain-http listener on 127.0.0.1.  MSAL insists on https authorities and
drops the port when it looks up the user realm, so routing by host name (rather than TLS on
a port) is what lets real MSAL talk to the sandbox without touching process-wide certificate
settings.
"""

from __future__ import annotations

import atexit
import ipaddress
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

__all__ = [
    "DEFAULT_TIMEOUT",
    "SANDBOX_HOST_SUFFIX",
    "AsyncSandboxRoutingTransport",
    "MsalHttpAdapter",
    "SandboxRoutingError",
    "SandboxRoutingTransport",
    "make_async_http_client",
    "make_http_client",
    "shared_http",
]

SANDBOX_HOST_SUFFIX = ".crmkit.localhost"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class SandboxRoutingError(httpx.ConnectError):
    """Raised instead of letting a sandbox-configured client reach a non-loopback host."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_sandbox_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return host.endswith(SANDBOX_HOST_SUFFIX) or host == SANDBOX_HOST_SUFFIX[1:]


def _parse_sandbox_url(sandbox_url: str) -> tuple[str, int]:
    parts = urlsplit(sandbox_url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"sandbox_url must look like http://127.0.0.1:PORT, got {sandbox_url!r}")
    if not _is_loopback(parts.hostname):
        raise ValueError(f"the sandbox only runs on loopback; refusing {sandbox_url!r}")
    return parts.hostname, parts.port


def _loopback_ssl_context() -> ssl.SSLContext:
    # The routed traffic is plain http on 127.0.0.1, so loading a CA bundle (the slow part of
    # building an httpx transport) buys nothing.  This context still verifies: with no trust
    # anchors any https it might meet simply fails, and it never reads CA-bundle variables.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class _Router:
    """Shared rewrite logic for the sync and async transports."""

    def __init__(self, sandbox_url: str) -> None:
        self.host, self.port = _parse_sandbox_url(sandbox_url)

    def rewrite(self, request: httpx.Request) -> httpx.Request:
        host = request.url.host
        if _is_sandbox_host(host):
            public = host if request.url.port is None else f"{host}:{request.url.port}"
            headers = httpx.Headers(request.headers)
            # The Host header keeps the public name; the forwarded headers tell the sandbox
            # which https origin to use when it builds absolute URLs (nextLink, discovery).
            headers["X-Forwarded-Host"] = public
            headers["X-Forwarded-Proto"] = request.url.scheme
            url = request.url.copy_with(scheme="http", host=self.host, port=self.port)
            return httpx.Request(
                request.method, url, headers=headers, stream=request.stream, extensions=request.extensions
            )
        if _is_loopback(host):
            return request
        raise SandboxRoutingError(
            f"crmkit is configured for the sandbox tenant; refusing to send {request.method} to "
            f"non-loopback host {host!r}",
            request=request,
        )


class SandboxRoutingTransport(httpx.BaseTransport):
    """Route ``*.crmkit.localhost`` to the sandbox on 127.0.0.1; refuse every other non-loopback host."""

    def __init__(self, sandbox_url: str, *, inner: httpx.BaseTransport | None = None) -> None:
        self._router = _Router(sandbox_url)
        # A bare HTTPTransport ignores proxy and CA-bundle environment variables, which is
        # what we want for loopback traffic.
        self._inner = inner or httpx.HTTPTransport(verify=_loopback_ssl_context())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(self._router.rewrite(request))

    def close(self) -> None:
        self._inner.close()


class AsyncSandboxRoutingTransport(httpx.AsyncBaseTransport):
    """Async twin of :class:`SandboxRoutingTransport`."""

    def __init__(self, sandbox_url: str, *, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._router = _Router(sandbox_url)
        self._inner = inner or httpx.AsyncHTTPTransport(verify=_loopback_ssl_context())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(self._router.rewrite(request))

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_http_client(
    sandbox_url: str | None = None,
    *,
    timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """Build crmkit's HTTP client.

    With ``sandbox_url`` (``http://127.0.0.1:PORT``) the sandbox hosts are routed to that
    server and any other non-loopback host is refused; without it the client talks to the
    real Microsoft endpoints.
    """
    if sandbox_url is None:
        return httpx.Client(timeout=timeout, headers=headers)
    return httpx.Client(
        transport=SandboxRoutingTransport(sandbox_url), timeout=timeout, headers=headers, trust_env=False
    )


def make_async_http_client(
    sandbox_url: str | None = None,
    *,
    timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """Async variant of :func:`make_http_client` (same routing rules)."""
    if sandbox_url is None:
        return httpx.AsyncClient(timeout=timeout, headers=headers)
    return httpx.AsyncClient(
        transport=AsyncSandboxRoutingTransport(sandbox_url), timeout=timeout, headers=headers, trust_env=False
    )


def _drop_none(d: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if d is None else {k: v for k, v in d.items() if v is not None}


class MsalHttpAdapter:
    """Lets MSAL send its traffic through a crmkit ``httpx.Client``.

    MSAL's contract is requests-shaped: ``get``/``post``/``close``, and requests silently drops
    ``None`` form fields and header values, whereas httpx would send ``claims=`` or raise on a
    ``None`` header.  So ``None`` values are dropped here.  httpx responses already provide what
    MSAL reads (``status_code``, ``text``, ``headers``, ``raise_for_status``).
    """

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    @staticmethod
    def _timeout(kwargs: Mapping[str, Any]) -> Any:
        return kwargs["timeout"] if kwargs.get("timeout") is not None else httpx.USE_CLIENT_DEFAULT

    def get(
        self, url: str, params: Mapping[str, Any] | None = None, headers: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        return self.client.get(
            url, params=_drop_none(params), headers=_drop_none(headers), timeout=self._timeout(kwargs)
        )

    def post(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | str | bytes | None = None,
        headers: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        common: dict[str, Any] = {
            "params": _drop_none(params), "headers": _drop_none(headers), "timeout": self._timeout(kwargs)
        }
        if isinstance(data, str | bytes):
            return self.client.post(url, content=data, **common)
        return self.client.post(url, data=_drop_none(data), **common)

    def close(self) -> None:
        self.client.close()


# One client per sandbox target (None: real Microsoft) per process, shared by MSAL's apps and the
# consent code redemption; here, beside the seam, so both reach it without importing each other.
_shared: dict[str | None, httpx.Client] = {}
_shared_lock = threading.Lock()


@atexit.register
def _close_shared() -> None:
    for client in list(_shared.values()):
        client.close()
    _shared.clear()


def shared_http(sandbox_url: str | None) -> httpx.Client:
    """The process-wide client MSAL uses for this target (so its apps can be reused per process)."""
    with _shared_lock:
        client = _shared.get(sandbox_url)
        if client is None or client.is_closed:
            client = _shared[sandbox_url] = make_http_client(sandbox_url)
        return client
