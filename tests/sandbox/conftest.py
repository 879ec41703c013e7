"""Sandbox tier: one real sandbox subprocess per session, reset through its admin API per test."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
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
from crmkit.sandbox.process import SandboxProcess as LaunchedSandbox
from tests.support.sandbox import SandboxProc

from . import forms


class SandboxProcess(LaunchedSandbox):
    """The product's launcher, plus the banner it printed and a log file of its own."""

    def __init__(self, state: Path, log: Path, *extra: str) -> None:
        self._log_file = log.open("w")
        super().__init__(state, log=self._log_file, extra=extra)
        # The rest of the banner follows immediately; the http part's last line is the sign-in hint.
        while not any(line.lstrip().startswith("Sign in as") for line in self.banner):
            self.banner.append(self.lines.get(timeout=10))

    def stop(self, timeout: float = 10.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self._log_file.close()


def start_sandbox(state: Path, log: Path, *extra: str) -> SandboxProcess:
    """Start ``python -m crmkit.sandbox --port 0`` and read its URL from the first stdout line."""
    return SandboxProcess(state, log, *extra)


@pytest.fixture(scope="module")
def https_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    """A sandbox of the module's own with its https listener (free ports), for clients that want an https
    authority and a CA file (msal, azure-identity, msgraph-sdk); device codes polled every second."""
    base = tmp_path_factory.mktemp("sandbox-https")
    sp = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"], https=True)
    yield sp
    sp.stop()


@pytest.fixture
def trust_ca(https_sandbox: SandboxProc, monkeypatch: pytest.MonkeyPatch) -> str:
    """requests (msal's and azure-identity's HTTP) trusts exactly the sandbox's CA; returns the CA file.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's verify, so the documented way is
    the variable. httpx is not touched here (a module that wants it sets SSL_CERT_FILE on top)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", https_sandbox.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return https_sandbox.ca_file


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
