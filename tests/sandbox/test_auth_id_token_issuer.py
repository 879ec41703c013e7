"""Every grant's id_token names the issuer the OIDC discovery document announces (for the origin the client
used), and verifies with PyJWT against the JWKS — device code, password and refresh as the code flow does."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from tests.support.sandbox import Browser, SandboxProc

pytestmark = pytest.mark.sandbox

SCOPE = "openid profile offline_access User.Read"


@pytest.fixture(params=["http", "https"])
def origin(request: pytest.FixtureRequest, sp: SandboxProc) -> Iterator[tuple[str, Any]]:
    if request.param == "http":
        yield sp.url, True
    else:
        yield sp.https_url, ssl.create_default_context(cafile=sp.ca_file)


def _token(base: str, verify: Any, **form: str) -> dict[str, Any]:
    r = httpx.post(f"{base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", verify=verify,
                   data={"client_id": SANDBOX_CLIENT_ID, "scope": SCOPE, **form})
    assert r.status_code == 200, r.text
    return r.json()


def _verified(base: str, verify: Any, id_token: str) -> dict[str, Any]:
    doc = httpx.get(f"{base}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration", verify=verify).json()
    keys = jwt.PyJWKSet.from_dict(httpx.get(doc["jwks_uri"], verify=verify).json())
    key = keys[jwt.get_unverified_header(id_token)["kid"]]
    claims = jwt.decode(id_token, key.key, algorithms=["RS256"], audience=SANDBOX_CLIENT_ID, issuer=doc["issuer"],
                        options={"require": ["exp", "iat", "iss", "aud"]})
    assert doc["issuer"] == f"{base}/{SANDBOX_TENANT_ID}/v2.0"
    assert claims["tid"] == SANDBOX_TENANT_ID and claims["preferred_username"] == SANDBOX_DEFAULT_UPN
    return claims


def test_password_grant_id_token(origin: tuple[str, Any]) -> None:
    base, verify = origin
    tokens = _token(base, verify, grant_type="password", username=SANDBOX_DEFAULT_UPN, password=SANDBOX_PASSWORD)
    _verified(base, verify, tokens["id_token"])


def test_refresh_grant_id_token(origin: tuple[str, Any]) -> None:
    base, verify = origin
    first = _token(base, verify, grant_type="password", username=SANDBOX_DEFAULT_UPN, password=SANDBOX_PASSWORD)
    again = _token(base, verify, grant_type="refresh_token", refresh_token=first["refresh_token"])
    _verified(base, verify, again["id_token"])


def test_device_code_grant_id_token(origin: tuple[str, Any]) -> None:
    base, verify = origin
    r = httpx.post(f"{base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/devicecode", verify=verify,
                   data={"client_id": SANDBOX_CLIENT_ID, "scope": SCOPE})
    assert r.status_code == 200, r.text
    flow = r.json()
    browser = Browser(verify=verify)
    try:
        done = browser.device_login(flow["verification_uri"], flow["user_code"], SANDBOX_DEFAULT_UPN)
        assert done.status_code == 200, done.text[:400]
    finally:
        browser.close()
    tokens = _token(base, verify, grant_type="urn:ietf:params:oauth:grant-type:device_code",
                    device_code=flow["device_code"])
    _verified(base, verify, tokens["id_token"])
