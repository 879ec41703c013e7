"""The sandbox tenant as tests use it: a real subprocess, its admin API, and a form-posting browser."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from crmkit.sandbox import GRAPH_BASE, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from crmkit.sandbox.process import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


class SandboxProc(SandboxProcess):
    """The sandbox for a test session, logging to ``log``; ``extra`` adds CLI flags.

    ``https``: also an https listener on a free port (``https_url``, ``ca_file``; ``https_lines`` are the lines
    printed up to the CA file's). Without it the sandbox serves plain http only, which is all crmkit uses.
    """

    def __init__(self, state: Path, log: Path, extra: list[str] | None = None, *, https: bool = False) -> None:
        self.log = log
        self._log_file = log.open("w")
        super().__init__(state, log=self._log_file, extra=list(extra or ()), https_port=0 if https else None)
        self.https_lines = self.banner[1:]

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self._log_file.close()


class SandboxAdmin:
    """The sandbox's admin API (reset, faults, limits, counters, delivered messages)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = httpx.Client(base_url=url, timeout=60)

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

    def close(self) -> None:
        self.admin.close()


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.alerts: list[str] = []
        self._alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))
        elif tag == "p" and a.get("role") == "alert":
            self._alert = True

    def handle_data(self, data: str) -> None:
        if self._alert:
            self.alerts.append(data)
            self._alert = False


class Browser:
    """Fills and submits the sandbox's pages exactly as a browser would (same action, fields, button)."""

    def __init__(self, verify: Any = True) -> None:
        # verify: the sandbox's CA file for its https pages (as a browser that trusts that CA)
        self.client = httpx.Client(timeout=30, follow_redirects=False, verify=verify)

    def get(self, url: str) -> httpx.Response:
        return self.client.get(url)

    def submit(self, page: httpx.Response, fill: dict[str, str] | None = None,
               button: str | None = None) -> httpx.Response:
        parsed = _Forms()
        parsed.feed(page.text)
        assert len(parsed.forms) == 1, page.text[:400]
        form = parsed.forms[0]
        data = dict(form["fields"])
        for k, v in (fill or {}).items():
            assert k in data, f"no input {k!r} on the page: {sorted(data)}"
            data[k] = v
        if button is not None:
            name, value = next((n, v) for n, v in form["buttons"] if v == button)
            data[name] = value
        return self.client.post(urljoin(str(page.url), form["action"]), data=data)

    @staticmethod
    def alert(page: httpx.Response) -> str:
        parsed = _Forms()
        parsed.feed(page.text)
        return " ".join(parsed.alerts)

    def device_login(self, verification_uri: str, user_code: str, upn: str, password: str = SANDBOX_PASSWORD,
                     *, button: str = "signin") -> httpx.Response:
        page = self.submit(self.get(verification_uri), {"otc": user_code})
        assert page.status_code == 200, page.text[:400]
        return self.submit(page, {"login": upn, "passwd": password}, button=button)

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


def colleagues(admin: SandboxAdmin, n: int) -> list[str]:
    """``n`` ordinary, enabled members of the sandbox directory (not the default sender, not special users)."""
    special = ("anna.schmidt@", "admin@", "mfa.only@", "disabled.user@")
    people = [u["userPrincipalName"] for u in admin.get("users")["value"]
              if u.get("accountEnabled", True) and u.get("userType", "Member") == "Member"
              and not u["userPrincipalName"].startswith(special)]
    assert len(people) >= n, people
    return people[:n]


@contextmanager
def fresh_tenant(proc: SandboxProc, monkeypatch: Any, tmp_path: Path, admin_class: type[SandboxAdmin] = SandboxAdmin
                 ) -> Iterator[Any]:
    """A reset sandbox for one test: CRMKIT_SANDBOX_URL points at it, CRMKIT_HOME is private, and
    crmkit's process-wide MSAL apps and token caches start empty (and are emptied again after)."""
    admin = admin_class(proc.url)
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
