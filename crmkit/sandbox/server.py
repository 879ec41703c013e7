"""Run the sandbox tenant with uvicorn on loopback: in a background thread or as a CLI process."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from ..errors import ConfigError
from . import GRAPH_BASE, SANDBOX_AUTHORITY, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from .app import create_app
from .core import IdentitySettings
from .faults import FaultConfig
from .process import CA_PREFIX, HTTPS_PREFIX, URL_PREFIX
from .throttle import Limits

URL_LINE_PREFIX, HTTPS_LINE_PREFIX, CA_LINE_PREFIX = URL_PREFIX, HTTPS_PREFIX, CA_PREFIX  # what the launcher reads
DEFAULT_PORT, DEFAULT_HTTPS_PORT = 8765, 8766  # plain http for crmkit's transport, https for every other client


def default_state_dir() -> Path:
    env = os.environ.get("CRMKIT_SANDBOX_STATE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "crmkit" / "sandbox"


def _check_loopback(host: str) -> None:
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"the sandbox only listens on loopback; refusing host {host!r}")


class PortInUse(ConfigError):
    """A port the sandbox was told to listen on is taken (by another sandbox, a demo, anything)."""


def _bind(host: str, port: int, *, what: str = "--port") -> socket.socket:
    _check_loopback(host)
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every keep-alive response stalls ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1" if host == "localhost" else host, port))
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise
        hint = "--https-port (0 picks a free one) or turn https off with --no-https" if what == "--https-port" \
            else "--port (0 picks a free one)"
        raise PortInUse(f"port {port} on {host} is in use ({what}); choose another with {hint}") from exc
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def _config(app: Any, **tls: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, **tls, log_level="warning", access_log=False, proxy_headers=False, lifespan="off",
        timeout_graceful_shutdown=2, timeout_keep_alive=30, server_header=False,
        date_header=False,  # the sandbox stamps Date itself, per response, on its own clock (faults.py)
    )


class SandboxServer:
    """The sandbox in a background thread: ``with SandboxServer(state_dir) as s: s.url``."""

    def __init__(
        self,
        state_path: str | os.PathLike[str],
        *,
        port: int = 0,
        limits: Limits | None = None,
        faults: FaultConfig | None = None,
        settings: IdentitySettings | None = None,
        https: bool = False,
    ) -> None:
        self.state_path = Path(state_path)
        self.port = port
        self._kwargs = {"limits": limits, "faults": faults, "settings": settings}
        self._https = https  # also an https listener on a free port (https_url, ca_file), as run(https_port=0)
        self.https_url = ""
        self.ca_file: Path | None = None
        self._server: uvicorn.Server | None = None
        self._https_server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app: Any = None
        self.url = ""

    @property
    def sandbox(self) -> Any:
        return self.app.sandbox

    def start(self, timeout: float = 15.0) -> SandboxServer:
        self.app = create_app(self.state_path, **self._kwargs)
        sock = _bind("127.0.0.1", self.port)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(_config(self.app))
        if self._https:
            from .tls import ensure_tls

            tls = ensure_tls(self.state_path)
            tls_sock = _bind("127.0.0.1", 0)
            self._https_server = uvicorn.Server(_config(self.app, ssl_certfile=str(tls.cert),
                                                        ssl_keyfile=str(tls.key)))
            self.https_url, self.ca_file = f"https://127.0.0.1:{tls_sock.getsockname()[1]}", tls.ca
            pairs = [(self._server, sock), (self._https_server, tls_sock)]
            self._thread = threading.Thread(target=asyncio.run, args=(_serve_all(pairs),),
                                            name="crmkit-sandbox", daemon=True)
        else:
            self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                            name="crmkit-sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self._server.started and (self._https_server is None or self._https_server.started)):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sandbox server failed to start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for server in (self._server, self._https_server):
            if server is not None:
                server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.app is not None:
            self.app.sandbox.close()
        self._server = self._https_server = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def describe(url: str, state_path: Path) -> str:
    return "\n".join([
        f"{URL_LINE_PREFIX}{url}",
        f"crmkit sandbox tenant running; state in {state_path}",
        f"  Identity (authority): {SANDBOX_AUTHORITY}",
        f"  Graph:                {GRAPH_BASE}",
        "                        (both routed to the URL above by crmkit.http.make_http_client)",
        f"  Sign-in page:         {url}/devicelogin",
        f"  Teams view:           {url}/teams",
        f"  Admin API:            {url}/_sandbox/info",
        f"  Sign in as {SANDBOX_DEFAULT_UPN} / {SANDBOX_PASSWORD} (demo tenant; not a secret)",
    ])


def describe_https(url: str, ca: Path) -> str:
    """The https listener's lines: for clients that take a plain authority URL and a CA file (msal, requests …)."""
    return "\n".join([
        f"{HTTPS_LINE_PREFIX}{url}",
        f"{CA_LINE_PREFIX}{ca}",
        f"  HTTPS authority:      {url}/{SANDBOX_TENANT_ID}",
        f"  HTTPS Graph:          {url}/v1.0",
        f"  HTTPS OIDC discovery: {url}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration",
        f"  CA file (trust it):   {ca}",
    ])


async def _serve_all(pairs: list[tuple[uvicorn.Server, socket.socket]]) -> None:
    # Both listeners share one event loop (one app, one DuckDB sandbox); when one stops, so does the other.
    tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in pairs]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for server, _ in pairs:
        server.should_exit = True
    await asyncio.gather(*tasks)


def run(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    state_path: str | os.PathLike[str] | None = None,
    *,
    limits: Limits | None = None,
    faults: FaultConfig | None = None,
    settings: IdentitySettings | None = None,
    reset: bool = False,
    out: TextIO | None = None,
    https_port: int | None = DEFAULT_HTTPS_PORT,
) -> None:
    """Serve the sandbox in the foreground until SIGINT/SIGTERM; prints its URLs first.

    ``https_port``: also serve https there (0 picks a free port), with a certificate from the state
    folder's own CA (:mod:`crmkit.sandbox.tls`); None serves plain http only.

    Raises:
        PortInUse: ``port`` or ``https_port`` is taken (nothing is served then).
    """
    out = out or sys.stdout
    state = Path(state_path) if state_path else default_state_dir()
    sock = _bind(host, port)
    try:
        # bound before the app opens its state, so a taken port changes nothing
        tls_sock = _bind(host, https_port, what="--https-port") if https_port is not None else None
    except PortInUse:
        sock.close()
        raise
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(state, limits=limits, faults=faults, settings=settings)
    if reset:
        app.sandbox.reset()
    pairs = [(uvicorn.Server(_config(app)), sock)]
    lines = [describe(url, state)]
    if tls_sock is not None:
        from .tls import ensure_tls

        tls = ensure_tls(state)
        pairs.append((uvicorn.Server(_config(app, ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key))), tls_sock))
        lines.append(describe_https(f"https://127.0.0.1:{tls_sock.getsockname()[1]}", tls.ca))
    print("\n".join(lines), file=out, flush=True)
    try:
        if len(pairs) == 1:
            pairs[0][0].run(sockets=[sock])
        else:
            asyncio.run(_serve_all(pairs))
    finally:
        app.sandbox.close()
        for _, s in pairs:
            s.close()
