"""Signing key, JWT access/id tokens and client_info for the sandbox identity platform."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import GRAPH_RESOURCE, LOGIN_URL, SANDBOX_TENANT_ID

ISSUER = f"{LOGIN_URL}/{SANDBOX_TENANT_ID}/v2.0"
GRAPH_AUDIENCE = GRAPH_RESOURCE


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class SigningKey:
    """RSA key the sandbox signs tokens with; generated once and kept in the state dir (0600)."""

    def __init__(self, state_dir: Path) -> None:
        path = Path(state_dir) / "signing-key.pem"
        if path.exists():
            self._key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        else:
            self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = self._key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            # Create with 0600 from the start; never widen an existing file's mode.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        assert isinstance(self._key, rsa.RSAPrivateKey)
        pub = self._key.public_key().public_numbers()
        self.kid = b64url(hashlib.sha256(_b64url_uint(pub.n).encode()).digest()[:15])
        self.jwk = {"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, "n": _b64url_uint(pub.n),
                    "e": _b64url_uint(pub.e), "issuer": ISSUER}
        self.public_key = self._key.public_key()

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str, *, audience: str = GRAPH_AUDIENCE) -> dict[str, Any]:
        """Decode and validate; raises ``jwt.InvalidTokenError`` subclasses."""
        return jwt.decode(
            token, self.public_key, algorithms=["RS256"], audience=audience, issuer=ISSUER,
            options={"require": ["exp", "iat", "tid", "aud", "iss"]},
        )


def client_info(oid: str, tid: str = SANDBOX_TENANT_ID) -> str:
    return b64url(json.dumps({"uid": oid, "utid": tid}).encode())


def new_refresh_token() -> str:
    # Opaque, like Entra's; only its hash is stored.
    return "0.sbx." + secrets.token_urlsafe(48)


def user_access_token(key: SigningKey, *, user: Any, client_id: str, scopes: list[str],
                      lifetime_s: float) -> str:
    now = int(time.time())
    return key.sign({
        "aud": GRAPH_AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + int(lifetime_s),
        "tid": SANDBOX_TENANT_ID, "oid": user.id, "sub": user.id, "upn": user.userPrincipalName,
        "preferred_username": user.userPrincipalName, "name": user.displayName, "scp": " ".join(scopes),
        "appid": client_id, "azp": client_id, "idtyp": "user", "ver": "2.0", "uti": b64url(os.urandom(16)),
    })


def app_access_token(key: SigningKey, *, client_id: str, roles: list[str], lifetime_s: float) -> str:
    now = int(time.time())
    sp_id = str(uuid.uuid5(uuid.UUID(SANDBOX_TENANT_ID), "sp:" + client_id))
    return key.sign({
        "aud": GRAPH_AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + int(lifetime_s),
        "tid": SANDBOX_TENANT_ID, "oid": sp_id, "sub": sp_id, "roles": roles, "appid": client_id,
        "azp": client_id, "idtyp": "app", "ver": "2.0", "uti": b64url(os.urandom(16)),
    })


def id_token(key: SigningKey, *, user: Any, client_id: str, lifetime_s: float = 3600, nonce: str | None = None,
             issuer: str = ISSUER) -> str:
    """``issuer``: the discovery document's, for the origin the client used (an OIDC client compares them)."""
    now = int(time.time())
    claims = {
        "aud": client_id, "iss": issuer, "iat": now, "nbf": now, "exp": now + int(lifetime_s),
        "tid": SANDBOX_TENANT_ID, "oid": user.id, "sub": user.id, "name": user.displayName,
        "preferred_username": user.userPrincipalName, "ver": "2.0",
    }
    if nonce:
        claims["nonce"] = nonce
    return key.sign(claims)
