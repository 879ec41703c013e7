"""crmkit verifies an OpenID Connect id_token itself: who signed in, proven by the tenant's signature.

In team mode a session's user comes only from a verified sign-in. :class:`IdTokenVerifier` reads the
authority's discovery document and JWKS through crmkit's HTTP seam (:mod:`crmkit.http`), checks an id_token
(RS256 signature by a published key, issuer, audience, expiry, nonce, ``tid``/``oid``) and returns a
:class:`VerifiedIdToken`, or raises an :class:`~crmkit.auth._errors.IdTokenRefused` (or
:class:`~crmkit.auth._errors.SigningKeysUnavailable`). The same code serves the sandbox tenant and Microsoft
Entra ID: the authority is ``https://{host}/{tenant}`` as MSAL uses it (:attr:`TeamsConfig.authority`).

PyJWT checks the signature; the claims are checked here, on an injectable clock. Its PyJWKClient is not used:
it fetches with urllib, past the seam. No message carries the token or any claim of it.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

from ..config import TeamsConfig
from ..errors import catalog_error
from ..http import shared_http
from ._errors import (
    IdTokenBadSignature,
    IdTokenExpired,
    IdTokenNonceMismatch,
    IdTokenNotYetValid,
    IdTokenRefused,
    IdTokenWrongAudience,
    IdTokenWrongIssuer,
    SigningKeysUnavailable,
)

__all__ = ["ALGORITHM", "IdTokenVerifier", "VerifiedIdToken"]

# Entra signs id_tokens with RS256 only; accepting anything else (none, HS256 keyed with the public key)
# is how forged tokens get in.
ALGORITHM = "RS256"
# Multi-tenant metadata (organizations, common) names its issuer with this placeholder for the token's tid.
TENANT_PLACEHOLDER = "{tenantid}"
# Keys older than this are fetched again before use, so a key the tenant withdrew stops verifying.
MAX_KEY_AGE_S = 24 * 3600.0


@dataclass(frozen=True)
class VerifiedIdToken:
    """Who signed in, from an id_token that passed every check.

    ``tid`` + ``oid`` (tenant id, object id) identify the directory account; ``upn`` (``preferred_username``)
    and ``name`` can change and are for display and keeping a linked user up to date, never for lookup.
    """

    tid: str
    oid: str
    upn: str | None
    name: str | None
    issued_at: datetime
    expires_at: datetime


class IdTokenVerifier:
    """Verifies id_tokens of one authority for one app registration.

    Args:
        authority: ``https://{host}/{tenant}`` (a tenant id, domain or ``organizations``), as MSAL's.
        client_id: the app registration the token must be issued to (``aud``).
        http: the ``httpx.Client`` discovery and keys are fetched with (default: the process-wide one for real
            Microsoft; :meth:`from_config` takes the sandbox-routed one). An injected client stays the caller's.
        clock: seconds since the epoch (``time.time``); the expiry checks and the key cache read it.
        leeway_s: clock skew allowed on ``exp``, ``nbf`` and ``iat``.
        refetch_after_s: an unknown ``kid`` fetches the JWKS again only if the keys are at least this old, so a
            stream of forged tokens cannot make crmkit hammer the tenant.
    """

    def __init__(
        self, authority: str, client_id: str, *, http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time, leeway_s: float = 60.0, refetch_after_s: float = 60.0,
    ) -> None:
        self.authority = authority.rstrip("/")
        self.client_id = client_id
        self.http = http if http is not None else shared_http(None)
        self.clock = clock
        self.leeway_s = leeway_s
        self.refetch_after_s = refetch_after_s
        self._lock = threading.Lock()
        self._issuer: str | None = None
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._keys_at = 0.0

    @classmethod
    def from_config(cls, config: TeamsConfig, *, http: httpx.Client | None = None, **kw: Any) -> IdTokenVerifier:
        """The verifier for crmkit's tenant and app (the sandbox's unless a tenant is configured)."""
        return cls(config.authority, config.client_id,
                   http=http if http is not None else shared_http(config.sandbox_url), **kw)

    def __repr__(self) -> str:
        return f"<IdTokenVerifier {self.authority} app {self.client_id}>"

    @property
    def discovery_url(self) -> str:
        return f"{self.authority}/v2.0/.well-known/openid-configuration"

    # -- verification -----------------------------------------------------------------------------
    def verify(self, token: str, nonce: str | None = None) -> VerifiedIdToken:
        """Check ``token`` and say who signed in.

        Args:
            token: the id_token (compact JWS).
            nonce: the nonce this sign-in sent; when given the token must carry it, equal.

        Raises:
            IdTokenRefused: or one of its subclasses, naming the check that failed.
            SigningKeysUnavailable: the discovery document or the keys could not be read.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise catalog_error(IdTokenRefused, "error.msg.id_token_malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg != ALGORITHM:
            raise catalog_error(IdTokenBadSignature, "error.msg.id_token_algorithm")
        key = self._signing_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise catalog_error(IdTokenBadSignature, "error.msg.id_token_unknown_key", authority=self.authority)
        if key.algorithm_name != alg:  # a key published for another algorithm verifies nothing else
            raise catalog_error(IdTokenBadSignature, "error.msg.id_token_algorithm")
        try:
            # Signature only; every claim is checked below (on self.clock, with the tid placeholder).
            claims = jwt.decode(token, key.key, algorithms=[ALGORITHM], options={
                "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False})
        except jwt.InvalidSignatureError:
            raise catalog_error(IdTokenBadSignature, "error.msg.id_token_signature",
                                authority=self.authority) from None
        except jwt.InvalidTokenError:
            raise catalog_error(IdTokenRefused, "error.msg.id_token_malformed") from None
        return self._check_claims(claims, nonce)

    def _check_claims(self, claims: Mapping[str, Any], nonce: str | None) -> VerifiedIdToken:
        tid, oid = claims.get("tid"), claims.get("oid")
        if not (isinstance(tid, str) and tid and isinstance(oid, str) and oid):
            raise catalog_error(IdTokenRefused, "error.msg.id_token_claims")
        if claims.get("iss") != self._expected_issuer(tid):
            raise catalog_error(IdTokenWrongIssuer, "error.msg.id_token_issuer", authority=self.authority)
        if not self._audience_ok(claims):
            raise catalog_error(IdTokenWrongAudience, "error.msg.id_token_audience", client_id=self.client_id)
        exp, iat, nbf = (claims.get(c) for c in ("exp", "iat", "nbf"))
        if not all(_is_time(v) for v in (exp, iat)) or not (nbf is None or _is_time(nbf)):
            raise catalog_error(IdTokenRefused, "error.msg.id_token_malformed")
        now = self.clock()
        if now > exp + self.leeway_s:
            raise catalog_error(IdTokenExpired, "error.msg.id_token_expired")
        if now + self.leeway_s < max(iat, nbf if nbf is not None else iat):
            raise catalog_error(IdTokenNotYetValid, "error.msg.id_token_not_yet_valid", leeway=int(self.leeway_s))
        if nonce is not None:
            got = claims.get("nonce")
            # An empty nonce proves nothing (a caller's bug), so it matches nothing either.
            if not (nonce and isinstance(got, str) and hmac.compare_digest(got.encode(), nonce.encode())):
                raise catalog_error(IdTokenNonceMismatch, "error.msg.id_token_nonce")
        upn, name = claims.get("preferred_username") or claims.get("upn"), claims.get("name")
        return VerifiedIdToken(
            tid=tid, oid=oid, upn=upn if isinstance(upn, str) else None, name=name if isinstance(name, str) else None,
            issued_at=datetime.fromtimestamp(iat, UTC), expires_at=datetime.fromtimestamp(exp, UTC),
        )

    def _audience_ok(self, claims: Mapping[str, Any]) -> bool:
        aud = claims.get("aud")
        if isinstance(aud, str):
            return aud == self.client_id
        # Several audiences (OIDC Core 3.1.3.7): ours among them, and the token was issued to us (azp).
        return isinstance(aud, list) and self.client_id in aud and claims.get("azp") == self.client_id

    def _expected_issuer(self, tid: str) -> str:
        issuer = self._discovery()[0]
        return issuer.replace(TENANT_PLACEHOLDER, tid)

    # -- discovery and keys -------------------------------------------------------------------------
    def _discovery(self) -> tuple[str, str]:
        with self._lock:
            if self._issuer is None or self._jwks_uri is None:
                doc = self._get_json(self.discovery_url)
                issuer, jwks_uri = doc.get("issuer"), doc.get("jwks_uri")
                if not (isinstance(issuer, str) and issuer and isinstance(jwks_uri, str) and jwks_uri):
                    raise self._unavailable("no issuer or jwks_uri in the discovery document")
                self._issuer, self._jwks_uri = issuer, jwks_uri
            return self._issuer, self._jwks_uri

    def _signing_key(self, kid: str) -> jwt.PyJWK | None:
        """The published key ``kid``; an unknown one fetches the keys again, at most once per verification."""
        jwks_uri = self._discovery()[1]
        with self._lock:
            now = self.clock()
            fetched = False
            if self._keys is None or now - self._keys_at > MAX_KEY_AGE_S:
                self._fetch_keys(jwks_uri, now)
                fetched = True
            assert self._keys is not None
            key = self._keys.get(kid)
            if key is None and not fetched and now - self._keys_at >= self.refetch_after_s:
                self._fetch_keys(jwks_uri, now)  # key rollover: the tenant may have published a new key
                key = self._keys.get(kid)
            return key

    def _fetch_keys(self, jwks_uri: str, now: float) -> None:
        keys: dict[str, jwt.PyJWK] = {}
        for data in self._get_json(jwks_uri).get("keys") or []:
            if not isinstance(data, dict) or data.get("kty") != "RSA" or data.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # a key this PyJWT cannot read verifies nothing; the others still do
            if key.key_id:
                keys[key.key_id] = key
        self._keys, self._keys_at = keys, now

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            r = self.http.get(url)
        except httpx.HTTPError as e:
            raise self._unavailable(type(e).__name__) from None
        if r.status_code != 200:
            raise self._unavailable(f"HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise self._unavailable("not JSON") from None
        if not isinstance(body, dict):
            raise self._unavailable("not a JSON object")
        return body

    def _unavailable(self, detail: str) -> SigningKeysUnavailable:
        return catalog_error(SigningKeysUnavailable, "error.msg.signing_keys_unavailable",
                             authority=self.authority, detail=detail)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
