"""The sandbox tenant as tests use it: a real subprocess, one handle on it (:class:`SandboxAdmin`), and a
form-posting browser. The fixtures built from them live in tests/conftest.py."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msal

from crmkit.http import MsalHttpAdapter, make_http_client
from crmkit.sandbox import (
    GRAPH_BASE,
    SANDBOX_AUTHORITY,
    SANDBOX_CLIENT_ID,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_PASSWORD,
)
from crmkit.sandbox.process import SandboxProcess

from . import forms

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


class SandboxProc(SandboxProcess):
    """The sandbox for a test session, logging to ``log``; ``extra`` adds CLI flags.

    ``https``: also an https listener on a free port (``https_url``, ``ca_file``; ``https_lines`` are the lines
    printed up to the CA file's). Without it the sandbox serves plain http only, which is all crmkit uses.
    ``full_banner``: read the rest of the banner too (up to its sign-in hint) into ``banner``.
    """

    def __init__(self, state: Path, log: Path, extra: list[str] | None = None, *, https: bool = False,
                 full_banner: bool = False) -> None:
        self.log = log
        self._log_file = log.open("w")
        super().__init__(state, log=self._log_file, extra=list(extra or ()), https_port=0 if https else None)
        self.https_lines = self.banner[1:]
        # The rest of the banner follows at once; its last line is the sign-in hint.
        while full_banner and not any(line.lstrip().startswith("Sign in as") for line in self.banner):
            self.banner.append(self.lines.get(timeout=10))

    def stop(self, timeout: float = 10.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self._log_file.close()


class SandboxAdmin:
    """The test-side handle on one sandbox: its admin API (reset, config, faults, limits, counters, delivered
    messages), minted tokens, crmkit's routed HTTP and Graph clients, MSAL apps on it, and its device-code and
    sign-in pages driven as a browser. Clients it hands out are closed with it."""

    def __init__(self, url: str) -> None:
        self.url = url
        # crmkit's routed client: it passes loopback URLs (the admin API) through and is cheap to build.
        self.admin = make_http_client(url, timeout=60)
        self.admin.base_url = httpx.URL(url)
        self._clients: list[Any] = []  # httpx clients and GraphClients

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self.admin.close()

    # -- the admin API ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.admin.post("/_sandbox/reset").raise_for_status()

    def put(self, what: str, data: dict[str, Any]) -> dict[str, Any]:
        r = self.admin.put(f"/_sandbox/{what}", json=data)
        r.raise_for_status()
        return r.json()

    def get(self, what: str, **params: Any) -> Any:
        r = self.admin.get(f"/_sandbox/{what}", params=params)
        r.raise_for_status()
        return r.json()

    def counters(self) -> dict[str, int]:
        return self.get("counters")

    def device_calls(self) -> int:
        """Requests to the device-code endpoint so far."""
        return sum(n for k, n in self.counters().items() if "devicecode" in k)

    def token_grants(self) -> int:
        """Requests to the token endpoint so far."""
        return sum(n for k, n in self.counters().items() if "oauth2/v2.0/token" in k)

    def token(self, upn: str = SANDBOX_DEFAULT_UPN, scopes: list[str] | None = None, **kw: Any) -> str:
        """An access token minted by the admin API (no sign-in); ``kw``: lifetime_s …"""
        return minted_token(self, upn, **kw) if scopes is None else minted_token(self, upn, scopes=scopes, **kw)

    # -- clients ---------------------------------------------------------------------------------
    def http(self, **kw: Any) -> httpx.Client:
        """crmkit's routed httpx client for this sandbox (``kw``: timeout, headers)."""
        c = make_http_client(self.url, **kw)
        self._clients.append(c)
        return c

    def graph(self, token: str | None = None, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> httpx.Client:
        """A routed httpx client on the Graph host with a bearer token (minted for ``upn`` unless given;
        "" sends none)."""
        c = self.http(**kw)
        c.base_url = httpx.URL(GRAPH_BASE + "/")
        tok = token if token is not None else self.token(upn)
        if tok:
            c.headers["Authorization"] = f"Bearer {tok}"
        return c

    def graph_client(self, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> Any:
        """crmkit's :class:`~crmkit.graph.GraphClient` holding a minted token for ``upn`` (see :func:`minted_graph`)."""
        client = minted_graph(self, upn, **kw)
        self._clients.append(client)
        return client

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

    # -- the device-code and sign-in pages, driven like a browser (through the routed client) --------------
    def open_device_login(self, verification_uri: str) -> tuple[httpx.Client, httpx.Response]:
        browser = self.http(timeout=30)
        browser.follow_redirects = True
        page = browser.get(verification_uri)
        page.raise_for_status()
        return browser, page

    def enter_code(self, verification_uri: str, user_code: str) -> tuple[httpx.Client, httpx.Response]:
        browser, page = self.open_device_login(verification_uri)
        return browser, forms.enter_code(browser, page, user_code)

    def device_sign_in(self, flow: dict[str, Any], upn: str = SANDBOX_DEFAULT_UPN,
                       password: str = SANDBOX_PASSWORD, button: str = "signin") -> httpx.Response:
        browser, page = self.enter_code(flow["verification_uri"], flow["user_code"])
        assert page.status_code == 200, page.text
        return forms.sign_in(browser, page, upn, password, button)


class Browser:
    """A plain httpx client that fills and submits the sandbox's pages as a browser would (:mod:`support.forms`)."""

    def __init__(self, verify: Any = True) -> None:
        # verify: the sandbox's CA file for its https pages (as a browser that trusts that CA)
        self.client = httpx.Client(timeout=30, follow_redirects=False, verify=verify)

    def get(self, url: str) -> httpx.Response:
        return self.client.get(url)

    def submit(self, page: httpx.Response, fill: dict[str, str] | None = None,
               button: str | None = None) -> httpx.Response:
        return forms.submit(self.client, page, fill, button)

    def sign_in(self, page: httpx.Response, upn: str | None, password: str = SANDBOX_PASSWORD,
                button: str = "signin") -> httpx.Response:
        """A sign-in or consent page: the account and password typed, ``button`` pressed (:func:`forms.sign_in`)."""
        return forms.sign_in(self.client, page, upn, password, button)

    alert = staticmethod(forms.alert)

    def device_login(self, verification_uri: str, user_code: str, upn: str, password: str = SANDBOX_PASSWORD,
                     *, button: str = "signin") -> httpx.Response:
        page = forms.enter_code(self.client, self.get(verification_uri), user_code)
        assert page.status_code == 200, page.text[:400]
        return self.sign_in(page, upn, password, button)

    def close(self) -> None:
        self.client.close()


def minted_token(admin: SandboxAdmin, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> str:
    """An access token for ``upn`` minted by the sandbox admin API (no sign-in); ``kw``: scopes, lifetime_s …"""
    r = admin.admin.post("/_sandbox/token", json={"upn": upn, **kw})
    r.raise_for_status()
    return r.json()["access_token"]


def minted_graph(admin: SandboxAdmin, upn: str = SANDBOX_DEFAULT_UPN, *, timeout: float | None = None,
                 **kw: Any) -> Any:
    """A :class:`crmkit.graph.GraphClient` for the sandbox holding a minted token for ``upn``.

    ``timeout``: the HTTP client's timeout in seconds (crmkit's default if None); ``kw`` go to GraphClient
    (retry, limiter …). The caller closes it.
    """
    from crmkit.graph import GraphClient
    from crmkit.http import make_async_http_client

    token = minted_token(admin, upn)
    http = make_async_http_client(admin.url) if timeout is None else make_async_http_client(admin.url, timeout=timeout)
    return GraphClient(lambda force: token, base_url=GRAPH_BASE, http=http, **kw)


def sign_in(crm: Any, upn: str, password: str = SANDBOX_PASSWORD) -> Any:
    """Link ``upn`` as the Teams account of the session's user, through the real device-code flow."""
    pending = crm.teams.m365.accounts.start_sign_in(timeout=60)
    browser = Browser()
    try:
        page = browser.device_login(pending.verification_uri, pending.user_code, upn, password)
        assert page.status_code == 200, page.text[:400]
    finally:
        browser.close()
    return pending.wait()


def forget_msal() -> None:
    """Empty crmkit's process-wide msal apps and in-memory token caches (what is persisted stays)."""
    from crmkit.auth import _cache, _msal

    _cache.forget_caches()
    _msal._apps.clear()


def sign_in_then_forget(crm: Any, upn: str = SANDBOX_DEFAULT_UPN, password: str = SANDBOX_PASSWORD) -> Any:
    """:func:`sign_in`, then close ``crm``'s Teams session and its store and :func:`forget_msal`: the sign-in is
    left only in the persisted token cache under ``CRMKIT_HOME``, where the process that runs next (a kernel,
    the README's Python) finds it, and the file is free for it."""
    try:
        return sign_in(crm, upn, password)
    finally:
        crm.teams.close()
        crm.store.close()
        forget_msal()


def one_on_one_chat(g: httpx.Client, other: str, me: str = SANDBOX_DEFAULT_UPN) -> str:
    """``POST /chats`` (oneOnOne, both owners) through a raw Graph client (:meth:`SandboxAdmin.graph`); the chat id."""
    members = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
                "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u}')"}
               for u in (me, other)]
    return g.post("chats", json={"chatType": "oneOnOne", "members": members}).json()["id"]


def colleagues(admin: SandboxAdmin, n: int) -> list[str]:
    """``n`` ordinary, enabled members of the sandbox directory (not the default sender, not special users)."""
    special = ("anna.schmidt@", "admin@", "mfa.only@", "disabled.user@")
    people = [u["userPrincipalName"] for u in admin.get("users")["value"]
              if u.get("accountEnabled", True) and u.get("userType", "Member") == "Member"
              and not u["userPrincipalName"].startswith(special)]
    assert len(people) >= n, people
    return people[:n]


@contextmanager
def fresh_tenant(proc: SandboxProc, monkeypatch: Any, tmp_path: Path) -> Iterator[SandboxAdmin]:
    """A reset sandbox for one test: CRMKIT_SANDBOX_URL points at it, CRMKIT_HOME is private, and
    crmkit's process-wide MSAL apps and token caches start empty (and are emptied again after)."""
    admin = SandboxAdmin(proc.url)
    admin.reset()
    monkeypatch.setenv("CRMKIT_SANDBOX_URL", proc.url)
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))
    forget_msal()
    try:
        yield admin
    finally:
        admin.close()
        forget_msal()


@contextmanager
def fast_tenant(proc: SandboxProc, monkeypatch: Any, tmp_path: Path) -> Iterator[SandboxAdmin]:
    """:func:`fresh_tenant` with Teams' limits raised on both sides, for tests about exactly-once and
    bookkeeping rather than pacing."""
    with fresh_tenant(proc, monkeypatch, tmp_path) as admin:
        admin.put("limits", {"chat_post_per_app_per_s": 400, "chat_post_per_chat_per_s": 100})
        monkeypatch.setenv("CRMKIT_TEAMS_TENANT_RPS", "300")
        monkeypatch.setenv("CRMKIT_TEAMS_CHAT_RPS", "80")
        yield admin
