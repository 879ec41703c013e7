"""Sandbox tier: the session's sandbox subprocess and its handle come from tests/conftest.py (``sandbox_proc``,
``sandbox_admin``: reset per test); here the sandboxes a test module has for itself (``sp``, ``https_sandbox``) and
the CA requests trusts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.support.sandbox import SandboxProc


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


class _UserRealmOnPort(HTTPAdapter):
    """msal (also inside azure-identity) builds its user-realm URL from the authority's host without its port
    (https://127.0.0.1/common/userrealm/...); this sends that one request to the sandbox's port."""

    def __init__(self, port: str) -> None:
        super().__init__()
        self.port = port

    def send(self, request: requests.PreparedRequest, **kw):  # type: ignore[no-untyped-def, override]
        if request.url and request.url.startswith("https://127.0.0.1/common/userrealm/"):
            request.url = request.url.replace("https://127.0.0.1/", f"https://127.0.0.1:{self.port}/", 1)
        return super().send(request, **kw)


@pytest.fixture
def user_realm_session(https_sandbox: SandboxProc) -> Iterator[requests.Session]:
    """A requests session carrying the user-realm port fix, for msal's and azure-identity's username/password
    flows against the https sandbox (without it they fail with "port=443 ... Connection refused")."""
    session = requests.Session()
    session.mount("https://127.0.0.1/", _UserRealmOnPort(https_sandbox.https_url.rsplit(":", 1)[1]))
    yield session
    session.close()


@pytest.fixture(scope="module")
def sp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    """A sandbox process of the test module's own (one per module that asks), http and https listeners on free
    ports: for sign-in sessions, cookies and redirects that no other module's tests may touch."""
    base = tmp_path_factory.mktemp("sandbox-module")
    proc = SandboxProc(base / "state", base / "sandbox.log", https=True)
    yield proc
    proc.stop()
