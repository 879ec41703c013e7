"""crmkit hub: logout ends access, and the hub's tokens reach the person's server (one sign-in).

One real hub per module (``crmkit hub`` against the sandbox over https, tests/hub/support_hub.py). A person signs
in in Chromium; the cookies the browser got are copied and replayed with httpx after ``/hub/logout``: the old hub
cookie gets nothing at once, the old server cookie nothing once the server's short cache of the hub's answer ran
out (JupyterHub's defaults keep both working for minutes to days: STACK-NOTES-2 H).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crmkit.hub.config import SERVER_AUTH_CACHE_S
from crmkit.sandbox import SANDBOX_DOMAIN
from tests.hub.support_hub import RunningHub, hub_context, running_hub, sign_in_to_lab
from tests.support import forms

pytestmark = pytest.mark.hub

JONAS_UPN = f"jonas.becker@{SANDBOX_DOMAIN}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("hub-tokens")) as h:
        yield h


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    with hub_context(browser) as ctx:
        yield ctx


def _replay(hub: RunningHub, cookies: dict[str, str], path: str) -> httpx.Response:
    """GET ``path`` with copies of the browser's cookies (all of them, whatever their path), no redirect followed."""
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return httpx.get(hub.url + path, headers={"Cookie": header}, follow_redirects=False, timeout=30)


def _refused(r: httpx.Response) -> bool:
    """Nothing for the request: 401/403, or a redirect to signing in (the hub's login or its OAuth authorize)."""
    if r.status_code in (401, 403):
        return True
    where = r.headers.get("location", "")
    return r.status_code in (302, 303) and ("/hub/login" in where or "/hub/api/oauth2/authorize" in where)


def test_after_logout_neither_the_old_hub_cookie_nor_the_old_server_cookie_gets_anything(
        hub: RunningHub, context: Any) -> None:
    sign_in_to_lab(context, hub, JONAS_UPN)
    name = "jonas.becker"
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    assert {"jupyterhub-hub-login", f"jupyterhub-user-{name}"} <= set(cookies), sorted(cookies)
    server_api = f"/user/{name}/api/contents"
    # the copies work while signed in: what the replay after logout proves is the logout's doing
    assert _replay(hub, cookies, "/hub/home").status_code == 200
    me = _replay(hub, cookies, "/hub/api/user")
    assert me.status_code == 200 and me.json()["name"] == name
    assert _replay(hub, cookies, server_api).status_code == 200

    page = context.new_page()
    page.goto(hub.url + "/hub/logout", wait_until="domcontentloaded")
    page.close()
    logged_out = time.monotonic()

    for path in ("/hub/home", "/hub/api/user", "/hub/token", f"/hub/api/users/{name}"):
        r = _replay(hub, cookies, path)
        assert _refused(r), (path, r.status_code, r.headers.get("location"))
    # the server asks the hub again once its cache of the answer (SERVER_AUTH_CACHE_S) is over
    deadline = logged_out + SERVER_AUTH_CACHE_S + 15
    while True:
        r = _replay(hub, cookies, server_api)
        if _refused(r):
            break
        assert r.status_code == 200, r.status_code
        assert time.monotonic() < deadline, f"the old server cookie still works {time.monotonic() - logged_out:.0f} s "
        time.sleep(1)
    took = time.monotonic() - logged_out
    print(f"old server cookie refused {took:.1f} s after logout (cache {SERVER_AUTH_CACHE_S} s)")
    assert _refused(_replay(hub, cookies, f"/user/{name}/lab"))
    # signing in again works (new cookies; the tenant may still know the browser and skip its password page)
    page = context.new_page()
    page.goto(hub.url + "/hub/home", wait_until="domcontentloaded")
    deadline = time.monotonic() + 60
    while not page.url.startswith(f"{hub.url}/hub/home"):
        assert time.monotonic() < deadline, page.url
        if page.url.startswith(hub.sandbox_url) and page.locator("#passwd").count():
            forms.fill_sign_in(page, JONAS_UPN)
            page.wait_for_load_state("domcontentloaded")
        page.wait_for_timeout(300)
    again = {c["name"]: c["value"] for c in context.cookies()}
    assert again["jupyterhub-hub-login"] != cookies["jupyterhub-hub-login"]
    assert _replay(hub, again, "/hub/api/user").json()["name"] == name
    page.close()
