"""The sandbox over https with its own CA: standard clients (httpx, msal) with only the URL and CA changed."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import msal
import pytest
import requests
from requests.adapters import HTTPAdapter

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from tests.support.sandbox import Browser, SandboxProc

pytestmark = pytest.mark.sandbox

SCOPES = ["User.Read"]


@pytest.fixture(scope="module")
def https_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    base = tmp_path_factory.mktemp("sandbox-https")
    sp = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"], https=True)
    yield sp
    sp.stop()


@pytest.fixture
def trust_ca(https_sandbox: SandboxProc, monkeypatch: pytest.MonkeyPatch) -> str:
    # requests (msal's HTTP) lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's verify, so the
    # documented way is the variable: trust exactly the sandbox's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", https_sandbox.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return https_sandbox.ca_file


def _ca(sp: SandboxProc) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=sp.ca_file)  # httpx: trust the sandbox's CA (and only it)


def _authority(sp: SandboxProc) -> str:
    return f"{sp.https_url}/{SANDBOX_TENANT_ID}"


def test_ca_is_kept_in_the_state_folder_with_a_private_key(https_sandbox: SandboxProc, tmp_path: Path) -> None:
    ca = Path(https_sandbox.ca_file)
    assert ca.is_file() and ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    for key in ca.parent.glob("*key*.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert "PRIVATE KEY" not in https_sandbox.log.read_text()
    # a second start on the same state folder keeps the CA (clients keep trusting it)
    from crmkit.sandbox.tls import ensure_tls

    before = ca.read_bytes()
    assert ensure_tls(ca.parent.parent).ca.read_bytes() == before


def test_httpx_trusts_the_sandbox_through_its_ca_only(https_sandbox: SandboxProc) -> None:
    url = f"{_authority(https_sandbox)}/v2.0/.well-known/openid-configuration"
    doc = httpx.get(url, verify=_ca(https_sandbox)).json()
    assert doc["token_endpoint"] == f"{_authority(https_sandbox)}/oauth2/v2.0/token"
    # Graph answers over https too (401 without a token, in Graph's shape)
    r = httpx.get(f"{https_sandbox.https_url}/v1.0/me", verify=_ca(https_sandbox))
    assert r.status_code == 401 and "error" in r.json()
    # localhost is on the certificate as well
    port = https_sandbox.https_url.rsplit(":", 1)[1]
    assert httpx.get(f"https://localhost:{port}/_sandbox/health", verify=_ca(https_sandbox)).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url, verify=True)  # the system's trust store does not know the sandbox's CA
    # the plain-http listener is unchanged
    assert httpx.get(f"{https_sandbox.url}/_sandbox/health").status_code == 200


def _me(sp: SandboxProc, token: str) -> dict:
    r = httpx.get(f"{sp.https_url}/v1.0/me", headers={"Authorization": f"Bearer {token}"}, verify=_ca(sp))
    r.raise_for_status()
    return r.json()


def test_msal_device_code_sign_in_and_refresh_over_https(https_sandbox: SandboxProc, trust_ca: str) -> None:
    # instance_discovery=False: msal's documented switch for an authority Microsoft does not know;
    # msal still validates it (https, OIDC discovery on the authority, issuer).
    app = msal.PublicClientApplication(SANDBOX_CLIENT_ID, authority=_authority(https_sandbox),
                                       instance_discovery=False)
    flow = app.initiate_device_flow(scopes=SCOPES)
    assert flow["verification_uri"].startswith(https_sandbox.https_url), flow

    def browser() -> None:
        b = Browser(verify=ssl.create_default_context(cafile=trust_ca))
        try:
            b.device_login(flow["verification_uri"], flow["user_code"], SANDBOX_DEFAULT_UPN)
        finally:
            b.close()

    t = threading.Thread(target=browser)
    t.start()
    result = app.acquire_token_by_device_flow(flow)
    t.join(30)
    assert "access_token" in result, result.get("error_description")
    assert _me(https_sandbox, result["access_token"])["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    [account] = app.get_accounts()
    assert account["username"] == SANDBOX_DEFAULT_UPN
    refreshed = app.acquire_token_silent(SCOPES, account=account, force_refresh=True)
    assert refreshed and "access_token" in refreshed, refreshed
    assert refreshed["access_token"] != result["access_token"]
    assert _me(https_sandbox, refreshed["access_token"])["userPrincipalName"] == SANDBOX_DEFAULT_UPN


class _UserRealmOnPort(HTTPAdapter):
    """msal 1.x builds its user-realm URL from the authority's host without its port
    (https://127.0.0.1/common/userrealm/...); this sends that one request to the sandbox's port."""

    def __init__(self, port: str) -> None:
        super().__init__()
        self.port = port

    def send(self, request: requests.PreparedRequest, **kw):  # type: ignore[no-untyped-def, override]
        if request.url and request.url.startswith("https://127.0.0.1/common/userrealm/"):
            request.url = request.url.replace("https://127.0.0.1/", f"https://127.0.0.1:{self.port}/", 1)
        return super().send(request, **kw)


@pytest.mark.filterwarnings("ignore:This API has been deprecated for public client flows:DeprecationWarning")
def test_msal_username_password_and_refresh_over_https(https_sandbox: SandboxProc, trust_ca: str) -> None:
    session = requests.Session()
    session.mount("https://127.0.0.1/", _UserRealmOnPort(https_sandbox.https_url.rsplit(":", 1)[1]))
    app = msal.PublicClientApplication(SANDBOX_CLIENT_ID, authority=_authority(https_sandbox),
                                       instance_discovery=False, http_client=session)
    result = app.acquire_token_by_username_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, scopes=SCOPES)
    assert "access_token" in result, result.get("error_description")
    assert result["id_token_claims"]["preferred_username"] == SANDBOX_DEFAULT_UPN
    [account] = app.get_accounts()
    refreshed = app.acquire_token_silent(SCOPES, account=account, force_refresh=True)
    assert refreshed and "access_token" in refreshed, refreshed
    assert refreshed["access_token"] != result["access_token"]
    assert _me(https_sandbox, refreshed["access_token"])["userPrincipalName"] == SANDBOX_DEFAULT_UPN


def test_msal_refuses_the_plain_http_authority(https_sandbox: SandboxProc) -> None:
    # why the https listener exists: msal accepts only https authorities
    with pytest.raises(ValueError, match="https"):
        msal.PublicClientApplication(SANDBOX_CLIENT_ID, authority=f"{https_sandbox.url}/{SANDBOX_TENANT_ID}",
                                     instance_discovery=False)


def test_printed_lines_name_the_ca_and_no_key(https_sandbox: SandboxProc) -> None:
    text = "\n".join(https_sandbox.https_lines)
    assert os.path.basename(https_sandbox.ca_file) == "ca.pem" and https_sandbox.ca_file in text
    assert "key" not in text.lower() and "PRIVATE" not in text


def test_httpx_and_requests_trust_the_ca_from_the_environment(https_sandbox: SandboxProc,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # what the README tells users: SSL_CERT_FILE for httpx, REQUESTS_CA_BUNDLE for requests (and msal)
    monkeypatch.setenv("SSL_CERT_FILE", https_sandbox.ca_file)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", https_sandbox.ca_file)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    url = f"{https_sandbox.https_url}/_sandbox/health"
    assert httpx.get(url).status_code == 200
    assert requests.get(url, timeout=10).status_code == 200


@pytest.mark.parametrize("name", ["login.crmkit.localhost", "graph.crmkit.localhost", "localhost", "127.0.0.1"])
def test_certificate_covers_the_sandbox_host_names(https_sandbox: SandboxProc, name: str) -> None:
    # a real TLS handshake to the https port, checking the certificate against each name a client may use
    port = int(https_sandbox.https_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            _ca(https_sandbox).wrap_socket(raw, server_hostname=name) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _ca(https_sandbox).wrap_socket(raw, server_hostname="graph.microsoft.com")


def test_in_process_server_serves_https_beside_http(tmp_path: Path) -> None:
    from crmkit.sandbox.server import SandboxServer

    with SandboxServer(tmp_path / "state", https=True) as server:
        assert server.ca_file is not None and server.https_url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(server.ca_file))
        assert httpx.get(f"{server.https_url}/_sandbox/health", verify=ctx).status_code == 200
        assert httpx.get(f"{server.url}/_sandbox/health").status_code == 200
