"""A real browser (Debian Chromium via Playwright) signs in at the sandbox's authorization endpoint; the
code reaches a loopback redirect URI by redirect and by form_post (the page's own script posts it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_TENANT_ID
from tests.sandbox.test_auth_code import SCOPE, STATE, _authorize_url, _pkce
from tests.support import forms

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier


class _Catcher(BaseHTTPRequestHandler):
    got: list[dict[str, str]] = []

    def _answer(self, query: str) -> None:
        type(self).got.append({k: v[0] for k, v in parse_qs(query).items()})
        body = b"<!doctype html><title>ok</title><p>ok</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(urlsplit(self.path).query)

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def catcher() -> Iterator[tuple[str, list[dict[str, str]]]]:
    _Catcher.got = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Catcher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/callback", _Catcher.got
    server.shutdown()
    server.server_close()


def _wait(page: Any, got: list[dict[str, str]]) -> dict[str, str]:
    # Playwright's wait, not time.sleep: the page fixture routes every request through Python, and a
    # sync-API route handler only runs while Playwright is being called.
    deadline = time.monotonic() + 15
    while not got and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert got, "nothing reached the redirect URI"
    return got[0]


@pytest.mark.parametrize("mode", ["query", "form_post"])
def test_browser_sign_in_delivers_the_code(sp: Any, page: Any, catcher: Any, mode: str) -> None:
    redirect, got = catcher
    verifier, challenge = _pkce()
    page.goto(_authorize_url(sp.url, redirect_uri=redirect, response_mode=mode, code_challenge=challenge,
                             code_challenge_method="S256"), wait_until="domcontentloaded")
    forms.fill_sign_in(page, SANDBOX_DEFAULT_UPN)
    back = _wait(page, got)
    assert back["state"] == STATE and back["code"]
    r = httpx.post(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data={
        "grant_type": "authorization_code", "client_id": SANDBOX_CLIENT_ID, "code": back["code"],
        "redirect_uri": redirect, "code_verifier": verifier, "scope": SCOPE})
    assert r.status_code == 200 and r.json()["id_token"], r.text
