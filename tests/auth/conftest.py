"""Sandbox tier for crmkit.auth: one real sandbox subprocess per session, reset per test.

The browser side of the device-code flow is driven with plain HTTP form posts, exactly as a
browser submits the sandbox's sign-in page (same action, hidden fields, pressed button).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

import crmkit
from crmkit.auth import Microsoft365, _cache, _msal
from crmkit.sandbox import SANDBOX_PASSWORD

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
URL_PREFIX = "CRMKIT_SANDBOX_URL="


class SandboxProc:
    def __init__(self, state: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "crmkit.sandbox", "--port", "0", "--state", str(state), "--device-code-interval", "1"],
            stdout=subprocess.PIPE, stderr=self._log_file, text=True, cwd=ROOT, env=env,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"sandbox did not start:\n{log.read_text()}") from None
        assert first.startswith(URL_PREFIX), first
        self.url = first[len(URL_PREFIX):]
        httpx.get(f"{self.url}/_sandbox/health", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


@pytest.fixture(scope="session")
def sandbox_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    base = tmp_path_factory.mktemp("auth-sandbox")
    sp = SandboxProc(base / "state", base / "sandbox.log")
    yield sp
    _msal._close_shared()  # MSAL's per-process HTTP client, before its server goes away
    sp.stop()


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
    """Fills and submits the sandbox's pages as a browser would."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=30, follow_redirects=False)

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


class SandboxHandle:
    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = httpx.Client(base_url=url, timeout=30)

    def put(self, what: str, data: dict[str, Any]) -> dict[str, Any]:
        r = self.admin.put(f"/_sandbox/{what}", json=data)
        r.raise_for_status()
        return r.json()

    def counters(self) -> dict[str, int]:
        return self.admin.get("/_sandbox/counters").json()

    def device_calls(self) -> int:
        return sum(n for k, n in self.counters().items() if "devicecode" in k)

    def token_grants(self) -> int:
        return sum(n for k, n in self.counters().items() if "oauth2/v2.0/token" in k)


@pytest.fixture
def sandbox(sandbox_proc: SandboxProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SandboxHandle]:
    """A reset sandbox; CRMKIT_SANDBOX_URL and a private CRMKIT_HOME for this test."""
    sb = SandboxHandle(sandbox_proc.url)
    sb.admin.post("/_sandbox/reset").raise_for_status()
    monkeypatch.setenv("CRMKIT_SANDBOX_URL", sandbox_proc.url)
    home = tmp_path / "home"
    monkeypatch.setenv("CRMKIT_HOME", str(home))
    _cache.forget_caches()
    _msal._apps.clear()
    yield sb
    sb.admin.close()
    _cache.forget_caches()
    _msal._apps.clear()


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def crm_file(tmp_path: Path) -> crmkit.CRM:
    """A file-backed CRM (so the DuckDB file can be inspected) with users of several roles."""
    crm = crmkit.open(tmp_path / "crm.duckdb")
    crm.add_user("sara", "Sara Sales", roles=["sales"])
    crm.add_user("carl", "Carl Campaigns", roles=["campaign_manager"])
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    return crm


@pytest.fixture
def m365(sandbox: SandboxHandle, crm_file: crmkit.CRM) -> Iterator[Microsoft365]:
    m = Microsoft365(crm_file)
    yield m
    m.close()
