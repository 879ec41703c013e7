"""Sandbox tier: one real sandbox subprocess per session, reset through its admin API per test."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest

from crmkit.http import MsalHttpAdapter, make_http_client
from crmkit.sandbox import (
    GRAPH_BASE,
    SANDBOX_AUTHORITY,
    SANDBOX_CLIENT_ID,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_PASSWORD,
)

from . import forms

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
URL_PREFIX = "CRMKIT_SANDBOX_URL="


@dataclass
class SandboxProcess:
    proc: subprocess.Popen[str]
    url: str
    log: Any = None
    banner: list[str] = field(default_factory=list)

    def stop(self) -> None:
        try:
            self._stop()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            if self.log is not None:
                self.log.close()

    def _stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_sandbox(state: Path, log: Path, *extra: str, timeout: float = 30.0) -> SandboxProcess:
    """Start ``python -m crmkit.sandbox --port 0`` and read its URL from the first stdout line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    logf = log.open("w")
    proc = subprocess.Popen(
        [PYTHON, "-m", "crmkit.sandbox", "--port", "0", "--state", str(state), *extra],
        stdout=subprocess.PIPE, stderr=logf, text=True, cwd=ROOT, env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    try:
        first = lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        logf.close()
        raise RuntimeError(f"sandbox did not start; log:\n{log.read_text()}") from None
    assert first.startswith(URL_PREFIX), first
    sp = SandboxProcess(proc, first[len(URL_PREFIX):], logf, [first])
    # The rest of the banner follows immediately; its last line is the sign-in hint.
    while not sp.banner[-1].lstrip().startswith("Sign in as"):
        sp.banner.append(lines.get(timeout=10))
    httpx.get(f"{sp.url}/_sandbox/health", timeout=10).raise_for_status()
    return sp


@pytest.fixture(scope="session")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    base = tmp_path_factory.mktemp("sandbox")
    sp = start_sandbox(base / "state", base / "sandbox.log")
    yield sp
    sp.stop()


class Sandbox:
    """Test-side handle: admin API, crmkit's routed httpx client, tokens, MSAL apps, the sign-in page."""

    def __init__(self, url: str) -> None:
        self.url = url
        # crmkit's routed client also passes loopback URLs through, and is cheap to build.
        self.admin = make_http_client(url, timeout=30)
        self.admin.base_url = httpx.URL(url)
        self._clients: list[httpx.Client] = []

    def close(self) -> None:
        self.admin.close()
        for c in self._clients:
            c.close()

    def reset(self) -> None:
        self.admin.post("/_sandbox/reset").raise_for_status()

    def put(self, what: str, data: dict[str, Any]) -> dict[str, Any]:
        r = self.admin.put(f"/_sandbox/{what}", json=data)
        r.raise_for_status()
        return r.json()

    def http(self, **kw: Any) -> httpx.Client:
        c = make_http_client(self.url, **kw)
        self._clients.append(c)
        return c

    def token(self, upn: str = SANDBOX_DEFAULT_UPN, scopes: list[str] | None = None, **kw: Any) -> str:
        body: dict[str, Any] = {"upn": upn, **kw}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.admin.post("/_sandbox/token", json=body)
        r.raise_for_status()
        return r.json()["access_token"]

    def graph(self, token: str | None = None, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> httpx.Client:
        """crmkit-style Graph client (routed https host) with a bearer token."""
        c = self.http(**kw)
        c.base_url = httpx.URL(GRAPH_BASE + "/")
        tok = token if token is not None else self.token(upn)
        if tok:
            c.headers["Authorization"] = f"Bearer {tok}"
        return c

    def msal_app(self, client_id: str = SANDBOX_CLIENT_ID, cache: msal.TokenCache | None = None,
                 authority: str = SANDBOX_AUTHORITY) -> msal.PublicClientApplication:
        return msal.PublicClientApplication(
            client_id, authority=authority, instance_discovery=False,
            http_client=MsalHttpAdapter(self.http()), token_cache=cache or msal.SerializableTokenCache(),
        )

    def ropc(self, app: msal.PublicClientApplication, username: str, password: str = SANDBOX_PASSWORD,
             scopes: list[str] | None = None) -> dict[str, Any]:
        # MSAL deprecates ROPC for public clients; the warning is expected here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This API has been deprecated for public client flows",
                                    category=DeprecationWarning)
            return app.acquire_token_by_username_password(username, password, scopes=scopes or ["User.Read"])

    # -- the sign-in page, driven like a browser ------------------------------------------------
    def open_device_login(self, verification_uri: str) -> tuple[httpx.Client, httpx.Response]:
        browser = self.http(timeout=30)
        browser.follow_redirects = True
        page = browser.get(verification_uri)
        page.raise_for_status()
        return browser, page

    def enter_code(self, verification_uri: str, user_code: str) -> tuple[httpx.Client, httpx.Response]:
        browser, page = self.open_device_login(verification_uri)
        return browser, forms.submit(browser, page, {"otc": user_code})

    def device_sign_in(self, flow: dict[str, Any], upn: str = SANDBOX_DEFAULT_UPN,
                       password: str = SANDBOX_PASSWORD, button: str = "signin") -> httpx.Response:
        browser, page = self.enter_code(flow["verification_uri"], flow["user_code"])
        assert page.status_code == 200, page.text
        return forms.submit(browser, page, {"login": upn, "passwd": password}, button=button)


@pytest.fixture
def sandbox(sandbox_process: SandboxProcess) -> Iterator[Sandbox]:
    sb = Sandbox(sandbox_process.url)
    sb.reset()
    yield sb
    sb.close()
