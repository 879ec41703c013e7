"""The sandbox over https with its own CA: standard clients (httpx, msal) with only the URL and CA changed."""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import msal
import pytest
import requests

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from tests.support.sandbox import Browser, SandboxProc

pytestmark = pytest.mark.sandbox

SCOPES = ["User.Read"]
CRMKIT = str(Path(sys.executable).with_name("crmkit"))  # the console script installed beside this Python


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



@pytest.mark.filterwarnings("ignore:This API has been deprecated for public client flows:DeprecationWarning")
def test_msal_username_password_and_refresh_over_https(https_sandbox: SandboxProc, trust_ca: str,
                                                       user_realm_session: requests.Session) -> None:
    session = user_realm_session
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


# -- https by default: `crmkit sandbox` as a user starts it --------------------------------------------------


def _crmkit_sandbox(*args: str, home: Path) -> subprocess.Popen[str]:
    """``crmkit sandbox ARGS`` as a real process (the installed console script), HOME set to ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_") and k != "XDG_STATE_HOME"}
    return subprocess.Popen([CRMKIT, "sandbox", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "HOME": str(home)}, stdin=subprocess.DEVNULL)


def _banner(proc: subprocess.Popen[str], last: str, timeout: float = 60) -> list[str]:
    """Lines the process prints up to (and with) the first one starting with ``last`` (after indentation)."""
    assert proc.stdout is not None
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip().startswith(last):
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(timeout), lines
    return lines


def _stop(proc: subprocess.Popen[str]) -> str:
    """Stop the process; what it printed on stdout after the lines already read."""
    proc.terminate()
    try:
        rest, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate(timeout=15)
    return rest or ""


def test_https_is_on_by_default_on_8766_and_no_https_turns_it_off() -> None:
    from crmkit.sandbox.__main__ import configure_parser

    parse = configure_parser(argparse.ArgumentParser()).parse_args
    assert parse([]).port == 8765 and parse([]).https_port == 8766
    assert parse(["--https-port", "0"]).https_port == 0
    assert parse(["--no-https"]).https_port is None


def test_crmkit_sandbox_prints_https_urls_and_its_ca_and_discovery_verifies(tmp_path: Path) -> None:
    # on free ports, with the default state folder under HOME: the CA path it prints is the one the README shows
    proc = _crmkit_sandbox("--port", "0", "--https-port", "0", home=tmp_path)
    try:
        lines = _banner(proc, "CA file (trust it):")
        printed = dict(line.split("=", 1) for line in lines if line.startswith("CRMKIT_SANDBOX_"))
        https_url, ca = printed["CRMKIT_SANDBOX_HTTPS_URL"], printed["CRMKIT_SANDBOX_CA"]
        assert https_url.startswith("https://127.0.0.1:") and https_url != "https://127.0.0.1:8766"
        assert ca == str(tmp_path / ".local/state/crmkit/sandbox/tls/ca.pem")
        pairs = (line.split(": ", 1) for line in lines if line.startswith(("  HTTPS ", "  CA file")))
        shown = {k.strip(): v.strip() for k, v in pairs}
        authority = f"{https_url}/{SANDBOX_TENANT_ID}"
        assert shown["HTTPS authority"] == authority
        assert shown["HTTPS Graph"] == f"{https_url}/v1.0"
        assert shown["HTTPS OIDC discovery"] == f"{authority}/v2.0/.well-known/openid-configuration"
        assert shown["CA file (trust it)"] == ca
        doc = httpx.get(shown["HTTPS OIDC discovery"], verify=ssl.create_default_context(cafile=ca)).json()
        assert doc["token_endpoint"] == f"{authority}/oauth2/v2.0/token"
        assert doc["device_authorization_endpoint"] == f"{authority}/oauth2/v2.0/devicecode"
    finally:
        _stop(proc)


def test_crmkit_sandbox_no_https_serves_plain_http_only(tmp_path: Path) -> None:
    proc = _crmkit_sandbox("--port", "0", "--no-https", "--state", str(tmp_path / "state"), home=tmp_path)
    try:
        lines = _banner(proc, "Sign in as")
        url = lines[0].removeprefix("CRMKIT_SANDBOX_URL=")
        assert httpx.get(f"{url}/_sandbox/health").status_code == 200
    finally:
        lines += _stop(proc).splitlines()
    assert not [line for line in lines if line.startswith(("CRMKIT_SANDBOX_HTTPS_URL=", "CRMKIT_SANDBOX_CA=",
                                                           "  HTTPS", "  CA file"))], lines
    assert not (tmp_path / "state" / "tls").exists()


def test_https_port_in_use_is_a_clear_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _crmkit_sandbox("--port", "0", "--https-port", str(port), "--state", str(tmp_path / "s"),
                               home=tmp_path)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            _stop(proc)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{port}" in err and "--https-port" in err and "--no-https" in err


def test_the_launcher_serves_https_on_a_free_port_by_default(tmp_path: Path) -> None:
    # what crmkit demo and the test fixtures start: never the fixed 8766, so parallel sandboxes do not collide
    from crmkit.sandbox.process import SandboxProcess

    procs: list[SandboxProcess] = []
    try:
        procs += [SandboxProcess(tmp_path / "s0")]
        procs += [SandboxProcess(tmp_path / "s1")]  # stopped below, even if this one cannot start
        urls = {p.https_url for p in procs}
        assert len(urls) == 2 and "https://127.0.0.1:8766" not in urls
        for p in procs:
            ctx = ssl.create_default_context(cafile=p.ca_file)
            assert httpx.get(f"{p.https_url}/_sandbox/health", verify=ctx).status_code == 200
        off = SandboxProcess(tmp_path / "off", https_port=None)
        try:
            assert off.https_url == "" and off.ca_file == ""
        finally:
            off.stop()
    finally:
        for p in procs:
            p.stop()
