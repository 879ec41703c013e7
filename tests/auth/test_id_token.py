"""crmkit verifies an id_token itself (auth/id_token.py): real id_tokens of the real sandbox tenant, over its http
listener, its https listener (trusting its CA) and crmkit's own routed client, each check refused by its typed
error, the JWKS fetched again once for an unknown key and after a real key rollover (the sandbox restarted with
a new signing key)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crmkit.auth._errors import (
    IdTokenBadSignature,
    IdTokenExpired,
    IdTokenNonceMismatch,
    IdTokenNotYetValid,
    IdTokenRefused,
    IdTokenWrongAudience,
    IdTokenWrongIssuer,
    SigningKeysUnavailable,
)
from crmkit.auth.id_token import IdTokenVerifier, VerifiedIdToken
from crmkit.config import TeamsConfig
from crmkit.errors import AuthError, CrmkitError
from crmkit.sandbox import (
    SANDBOX_ADMIN_UPN,
    SANDBOX_AUTHORITY,
    SANDBOX_CLIENT_ID,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_PASSWORD,
    SANDBOX_TENANT_ID,
    SANDBOX_UNCONSENTED_CLIENT_ID,
)
from crmkit.sandbox.process import SandboxProcess
from tests.support.sandbox import Browser, SandboxAdmin, SandboxProc

pytestmark = pytest.mark.sandbox

SCOPE = "openid profile offline_access User.Read"
REDIRECT = "http://127.0.0.1:8765/callback"  # a loopback redirect URI (any port is allowed for public clients)


class Clock:
    """The verifier's clock: real time moved by ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Side:
    """One listener of the sandbox, as a client that trusts it sees it."""

    base: str  # http://127.0.0.1:PORT or https://127.0.0.1:PORT
    http: httpx.Client
    verify: Any  # what httpx trusts for this listener (True, or the CA's SSL context)
    admin: SandboxAdmin

    def verifier(self, client_id: str = SANDBOX_CLIENT_ID, tenant: str = SANDBOX_TENANT_ID,
                 **kw: Any) -> IdTokenVerifier:
        return IdTokenVerifier(f"{self.base}/{tenant}", client_id, http=self.http, **kw)

    def tokens(self, upn: str = SANDBOX_DEFAULT_UPN, client_id: str = SANDBOX_CLIENT_ID,
               scope: str = SCOPE) -> dict[str, Any]:
        """A real sign-in: the password (ROPC) grant at the sandbox's token endpoint."""
        r = self.http.post(f"{self.base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data={
            "grant_type": "password", "client_id": client_id, "scope": scope, "username": upn,
            "password": SANDBOX_PASSWORD})
        assert r.status_code == 200, r.text
        return r.json()

    def code_flow_tokens(self, nonce: str) -> dict[str, Any]:
        """A real sign-in by authorization code + PKCE, the sign-in page filled in as a person does."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({"client_id": SANDBOX_CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT,
                           "scope": SCOPE, "state": "s", "nonce": nonce, "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        browser = Browser(verify=self.verify)
        try:
            page = browser.get(f"{self.base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/authorize?{query}")
            assert page.status_code == 200, page.text[:400]
            done = browser.sign_in(page, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, button="signin")
            assert done.status_code == 302, done.text[:400]
        finally:
            browser.close()
        code = parse_qs(urlsplit(done.headers["location"]).query)["code"][0]
        r = self.http.post(f"{self.base}/{SANDBOX_TENANT_ID}/oauth2/v2.0/token", data={
            "grant_type": "authorization_code", "client_id": SANDBOX_CLIENT_ID, "code": code,
            "redirect_uri": REDIRECT, "code_verifier": verifier, "scope": SCOPE})
        assert r.status_code == 200, r.text
        return r.json()

    def me(self, access_token: str) -> dict[str, Any]:
        r = self.http.get(f"{self.base}/v1.0/me", headers={"Authorization": f"Bearer {access_token}"})
        assert r.status_code == 200, r.text
        return r.json()

    def key_fetches(self) -> int:
        """JWKS requests the sandbox has answered so far (its own counters)."""
        return sum(n for k, n in self.admin.counters().items() if "discovery/v2.0/keys" in k)


@pytest.fixture(scope="module")
def tenant_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    """A sandbox of this module's own with both listeners (http and https on free ports)."""
    base = tmp_path_factory.mktemp("id-token-sandbox")
    proc = SandboxProc(base / "state", base / "sandbox.log", https=True)
    yield proc
    proc.stop()


@pytest.fixture(params=["http", "https"])
def side(request: pytest.FixtureRequest, tenant_proc: SandboxProc) -> Iterator[Side]:
    if request.param == "http":
        base, verify = tenant_proc.url, True
    else:
        base, verify = tenant_proc.https_url, ssl.create_default_context(cafile=tenant_proc.ca_file)
    admin = SandboxAdmin(tenant_proc.url)
    client = httpx.Client(verify=verify, timeout=30)
    try:
        yield Side(base, client, verify, admin)
    finally:
        client.close()
        admin.close()


# -- forged tokens (built here: no real tenant would sign them) ---------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def _compact(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode())) if sign else ''}"


def _published_key(side: Side, token: str) -> jwt.PyJWK:
    doc = side.http.get(f"{side.base}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration").json()
    return jwt.PyJWKSet.from_dict(side.http.get(doc["jwks_uri"]).json())[jwt.get_unverified_header(token)["kid"]]


def _assert_tells_nothing_of(err: CrmkitError, token: str) -> None:
    """No message, in either language, carries the token, a part of it, or a claim of it."""
    claims = _claims(token)
    for text in (str(err), err.text("de"), err.text("en")):
        assert all(part not in text for part in token.split(".") if part), text
        assert claims["oid"] not in text and claims["preferred_username"] not in text, text
    assert err.text("de") != err.text("en")


# -- a good sign-in ------------------------------------------------------------------------------------------
def test_a_real_id_token_verifies_with_who_signed_in(side: Side) -> None:
    tokens = side.tokens()
    before = time.time()
    who = side.verifier().verify(tokens["id_token"])
    me = side.me(tokens["access_token"])
    assert isinstance(who, VerifiedIdToken)
    assert (who.tid, who.oid, who.upn, who.name) == (SANDBOX_TENANT_ID, me["id"], SANDBOX_DEFAULT_UPN,
                                                     me["displayName"])
    assert abs(who.issued_at.timestamp() - before) < 60 and who.expires_at.timestamp() - who.issued_at.timestamp() > 0
    other = side.verifier().verify(side.tokens(SANDBOX_ADMIN_UPN)["id_token"])
    assert other.upn == SANDBOX_ADMIN_UPN and other.oid != who.oid and other.tid == who.tid


def test_crmkits_own_sign_in_verifies_through_its_config_and_routed_client(crm_tenant: SandboxAdmin) -> None:
    """What crmkit's msal sign-in returns verifies with the configured tenant and app (the sandbox by default,
    fetched through crmkit's HTTP seam, which routes the public https hosts to the sandbox)."""
    config = TeamsConfig.resolve()
    assert config.sandbox and config.authority == SANDBOX_AUTHORITY
    result = crm_tenant.ropc(crm_tenant.msal_app(), SANDBOX_DEFAULT_UPN)
    assert "id_token" in result, result
    who = IdTokenVerifier.from_config(config).verify(result["id_token"])
    assert (who.tid, who.oid, who.upn) == (SANDBOX_TENANT_ID, result["id_token_claims"]["oid"], SANDBOX_DEFAULT_UPN)


def test_multi_tenant_metadata_issuer_takes_the_tokens_tenant(side: Side) -> None:
    """``organizations`` metadata names its issuer with Entra's {tenantid} placeholder; the token's tid fills it."""
    doc = side.http.get(f"{side.base}/organizations/v2.0/.well-known/openid-configuration").json()
    assert "{tenantid}" in doc["issuer"]
    who = side.verifier(tenant="organizations").verify(side.tokens()["id_token"])
    assert who.tid == SANDBOX_TENANT_ID


# -- each check ----------------------------------------------------------------------------------------------
def test_expired_and_not_yet_valid_on_the_injected_clock(side: Side) -> None:
    token = side.tokens()["id_token"]
    exp, iat = _claims(token)["exp"], _claims(token)["iat"]
    clock = Clock()
    verifier = side.verifier(clock=clock, leeway_s=60)
    clock.offset = exp + 30 - time.time()  # past the expiry, inside the leeway
    verifier.verify(token)
    clock.offset = exp + 90 - time.time()  # past the leeway
    with pytest.raises(IdTokenExpired) as e:
        verifier.verify(token)
    _assert_tells_nothing_of(e.value, token)
    clock.offset = iat - 600 - time.time()  # this machine's clock ten minutes behind
    with pytest.raises(IdTokenNotYetValid):
        verifier.verify(token)


def test_a_token_for_another_app_is_refused(side: Side) -> None:
    token = side.tokens()["id_token"]
    with pytest.raises(IdTokenWrongAudience) as e:
        side.verifier(client_id=SANDBOX_UNCONSENTED_CLIENT_ID).verify(token)
    assert SANDBOX_UNCONSENTED_CLIENT_ID in str(e.value)  # names the app it expected, not the token's
    _assert_tells_nothing_of(e.value, token)
    # A real id_token the tenant issued to another app (signed by the same key) is refused by crmkit's.
    side.admin.put("consent", {"client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "admin_consented": True})
    try:
        other_app = side.tokens(client_id=SANDBOX_UNCONSENTED_CLIENT_ID)["id_token"]
    finally:
        side.admin.put("consent", {"client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "admin_consented": False})
    assert _claims(other_app)["aud"] == SANDBOX_UNCONSENTED_CLIENT_ID
    with pytest.raises(IdTokenWrongAudience):
        side.verifier().verify(other_app)


def test_a_token_of_another_issuer_is_refused(tenant_proc: SandboxProc) -> None:
    """The same tenant key signs, but the token was issued on the http origin; the https one's issuer differs."""
    ctx = ssl.create_default_context(cafile=tenant_proc.ca_file)
    with httpx.Client(verify=ctx) as https, httpx.Client() as plain:
        admin = SandboxAdmin(tenant_proc.url)
        try:
            token = Side(tenant_proc.url, plain, True, admin).tokens()["id_token"]
            verifier = Side(tenant_proc.https_url, https, ctx, admin).verifier()
            with pytest.raises(IdTokenWrongIssuer) as e:
                verifier.verify(token)
        finally:
            admin.close()
    _assert_tells_nothing_of(e.value, token)


def test_a_tampered_payload_is_refused(side: Side) -> None:
    token = side.tokens()["id_token"]
    header, _payload, signature = token.split(".")
    claims = _claims(token) | {"preferred_username": SANDBOX_ADMIN_UPN,
                               "oid": side.me(side.tokens(SANDBOX_ADMIN_UPN)["access_token"])["id"]}
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(IdTokenBadSignature) as e:
        side.verifier().verify(tampered)
    _assert_tells_nothing_of(e.value, token)


@pytest.mark.parametrize("how", ["none", "HS256 keyed with the public key", "RS512 under the tenant's kid"])
def test_forged_algorithms_are_refused(side: Side, how: str) -> None:
    token = side.tokens()["id_token"]
    header, claims = jwt.get_unverified_header(token), _claims(token)
    if how == "none":
        forged = _compact(header | {"alg": "none"}, claims)
    elif how.startswith("HS256"):
        # The classic confusion attack: a verifier that lets the header pick the algorithm takes the public key
        # (which anyone can fetch) as the HMAC secret.
        secret = _published_key(side, token).key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        forged = _compact(header | {"alg": "HS256"}, claims,
                          lambda data: hmac.new(secret, data, hashlib.sha256).digest())
    else:
        own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, own, algorithm="RS512", headers={"kid": header["kid"]})
    with pytest.raises(IdTokenBadSignature) as e:
        side.verifier().verify(forged)
    _assert_tells_nothing_of(e.value, token)


def test_an_unknown_key_fetches_the_keys_again_once_then_refuses(side: Side) -> None:
    good = side.tokens()["id_token"]
    own = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(_claims(good), own, algorithm="RS256", headers={"kid": "a-key-nobody-published"})
    clock = Clock()
    verifier = side.verifier(clock=clock, refetch_after_s=60)
    start = side.key_fetches()
    verifier.verify(good)
    assert side.key_fetches() == start + 1  # the first verification fetches the keys
    verifier.verify(good)
    assert side.key_fetches() == start + 1  # then they are cached
    clock.offset = 61
    with pytest.raises(IdTokenBadSignature) as e:
        verifier.verify(forged)
    assert side.key_fetches() == start + 2  # exactly one fetch more for the unknown kid
    _assert_tells_nothing_of(e.value, good)
    with pytest.raises(IdTokenBadSignature):
        verifier.verify(forged)  # right again: the keys are fresh, so no fetch (forged tokens cannot hammer)
    assert side.key_fetches() == start + 2
    # A fresh verifier meeting the forged token first fetches once, not twice.
    with pytest.raises(IdTokenBadSignature):
        side.verifier().verify(forged)
    assert side.key_fetches() == start + 3


def test_keys_older_than_a_day_are_fetched_again(side: Side) -> None:
    """So a key the tenant withdrew stops verifying in a long-running process (not only on an unknown kid)."""
    token = side.tokens()["id_token"]
    clock = Clock()
    verifier = side.verifier(clock=clock, leeway_s=10 ** 6)  # the token itself stays acceptable
    start = side.key_fetches()
    verifier.verify(token)
    clock.offset = 23 * 3600
    verifier.verify(token)
    assert side.key_fetches() == start + 1
    clock.offset = 24 * 3600 + 1
    verifier.verify(token)
    assert side.key_fetches() == start + 2


def test_nonce_must_match_when_given(side: Side) -> None:
    nonce = secrets.token_urlsafe(16)
    token = side.code_flow_tokens(nonce)["id_token"]
    verifier = side.verifier()
    assert verifier.verify(token, nonce=nonce).upn == SANDBOX_DEFAULT_UPN
    assert verifier.verify(token).upn == SANDBOX_DEFAULT_UPN  # no nonce asked for: not checked
    with pytest.raises(IdTokenNonceMismatch) as e:
        verifier.verify(token, nonce=secrets.token_urlsafe(16))
    _assert_tells_nothing_of(e.value, token)
    without = side.tokens()["id_token"]  # the password grant carries no nonce
    assert "nonce" not in _claims(without)
    with pytest.raises(IdTokenNonceMismatch):
        verifier.verify(without, nonce=nonce)


def test_not_a_jwt_and_an_unknown_tenant(side: Side) -> None:
    with pytest.raises(IdTokenRefused) as e:
        side.verifier().verify("not-a-token")
    assert type(e.value) is IdTokenRefused and isinstance(e.value, AuthError)
    with pytest.raises(SigningKeysUnavailable) as u:
        side.verifier(tenant="no-such-tenant.example").verify(side.tokens()["id_token"])
    assert "HTTP 400" in str(u.value) and "no-such-tenant.example" in u.value.text("de")


# -- key rollover ---------------------------------------------------------------------------------------------
def test_key_rollover_the_new_key_is_fetched_once_and_the_old_one_stops(tmp_path: Path) -> None:
    """The tenant rotates its signing key (the sandbox restarted on its state folder without its key file): a
    verifier holding the old keys fetches them again once for the new kid; the old key's tokens are refused."""
    state = tmp_path / "state"
    with (tmp_path / "sandbox.log").open("w") as log:
        first = SandboxProcess(state, https_port=None, log=log)
        port = int(first.url.rsplit(":", 1)[1])
        client = httpx.Client(timeout=30)
        clock = Clock()
        try:
            admin = SandboxAdmin(first.url)
            old = Side(first.url, client, True, admin).tokens()["id_token"]
            admin.close()
            verifier = IdTokenVerifier(f"{first.url}/{SANDBOX_TENANT_ID}", SANDBOX_CLIENT_ID, http=client,
                                       clock=clock)
            verifier.verify(old)
            first.stop()
            (state / "signing-key.pem").unlink()
            second = SandboxProcess(state, port=port, https_port=None, log=log)
            try:
                admin = SandboxAdmin(second.url)
                side = Side(second.url, client, True, admin)
                new = side.tokens()["id_token"]
                assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
                clock.offset = 61  # the cached keys are older than refetch_after_s
                assert verifier.verify(new).upn == SANDBOX_DEFAULT_UPN
                assert side.key_fetches() == 1
                with pytest.raises(IdTokenBadSignature):
                    verifier.verify(old)
                assert side.key_fetches() == 1
                admin.close()
            finally:
                second.stop()
        finally:
            first.stop()
            client.close()
