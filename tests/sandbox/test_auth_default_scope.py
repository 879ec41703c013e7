"""``/.default`` on any of the sandbox's resource URLs gets a Graph token: its Graph host names, Graph's app id,
and ``<scheme>://<host:port>/.default`` of the URL the client was given (kiota's Azure provider asks for that).
A foreign resource stays AADSTS500011."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from crmkit.sandbox import (
    SANDBOX_CLIENT_ID,
    SANDBOX_DAEMON_CLIENT_ID,
    SANDBOX_DAEMON_SECRET,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_PASSWORD,
    SANDBOX_TENANT_ID,
)
from tests.support.sandbox import SandboxProc

pytestmark = pytest.mark.sandbox


@pytest.fixture(params=["http", "https"])
def origin(request: pytest.FixtureRequest, sp: SandboxProc) -> tuple[str, Any]:
    if request.param == "http":
        return sp.url, True
    return sp.https_url, ssl.create_default_context(cafile=sp.ca_file)


def _password(base: str, verify: Any, scope: str) -> httpx.Response:
    return httpx.post(f"{base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", verify=verify, data={
        "grant_type": "password", "client_id": SANDBOX_CLIENT_ID, "username": SANDBOX_DEFAULT_UPN,
        "password": SANDBOX_PASSWORD, "scope": scope})


def _works_on_graph(base: str, verify: Any, r: httpx.Response) -> None:
    assert r.status_code == 200, r.text
    me = httpx.get(f"{base}/v1.0/me", verify=verify, headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.status_code == 200 and me.json()["userPrincipalName"] == SANDBOX_DEFAULT_UPN


def test_default_on_the_host_the_client_used(origin: tuple[str, Any]) -> None:
    base, verify = origin
    r = _password(base, verify, f"{base}/.default offline_access")
    _works_on_graph(base, verify, r)
    assert f"{base}/User.Read" in r.json()["scope"].split()  # echoed on the resource asked for
    # localhost names the same listener
    local = base.replace("127.0.0.1", "localhost")
    _works_on_graph(base, verify, _password(base, verify, f"{local}/.default"))
    # a named permission on that host, as on graph.microsoft.com
    _works_on_graph(base, verify, _password(base, verify, f"{base}/User.Read"))


@pytest.mark.parametrize("scope", ["https://graph.crmkit.localhost/.default", "https://graph.microsoft.com/.default",
                                   "00000003-0000-0000-c000-000000000000/.default",
                                   "https://graph.crmkit.localhost:8443/.default"])
def test_default_on_the_graph_resource_names(sp: SandboxProc, scope: str) -> None:
    _works_on_graph(sp.url, True, _password(sp.url, True, scope))


def test_client_credentials_on_the_host_the_client_used(origin: tuple[str, Any]) -> None:
    base, verify = origin
    r = httpx.post(f"{base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", verify=verify, data={
        "grant_type": "client_credentials", "client_id": SANDBOX_DAEMON_CLIENT_ID,
        "client_secret": SANDBOX_DAEMON_SECRET, "scope": f"{base}/.default"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("scope", ["https://evil.example/.default", "https://login.crmkit.localhost/.default",
                                   "http://10.0.0.1:8080/.default"])
def test_a_foreign_resource_is_refused(sp: SandboxProc, scope: str) -> None:
    r = _password(sp.url, True, scope)
    assert r.status_code == 400 and r.json()["error_codes"] == [500011], r.text
