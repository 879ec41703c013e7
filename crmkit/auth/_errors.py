"""MSAL's error dicts → crmkit's typed :class:`~crmkit.errors.AuthError` tree, by AADSTS code.

MSAL returns ``{"error", "error_description", "error_codes", "suberror"}`` instead of raising.
Messages here say what happened and what to do; they carry the service's codes but never a
token, a password or a device code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import (
    AuthError,
    ConsentRequired,
    InvalidCredentials,
    MfaRequired,
    PersonalAccountRefused,
    SignInCancelled,
)

__all__ = [
    "CONSUMER_TENANT_ID",
    "IdTokenBadSignature",
    "IdTokenExpired",
    "IdTokenNonceMismatch",
    "IdTokenNotYetValid",
    "IdTokenRefused",
    "IdTokenWrongAudience",
    "IdTokenWrongIssuer",
    "SignInRequired",
    "SigningKeysUnavailable",
    "auth_error",
    "is_personal_account",
]

# The tenant every personal Microsoft account (outlook.com, hotmail.com, live.com …) lives in.
CONSUMER_TENANT_ID = "9188040d-6c67-4c5b-b112-36a304b66dad"

_MFA = {50076, 50079, 50072, 50074, 50158, 53003}
_PERSONAL = {50020, 500200, 9002331, 50107}
_CONSENT = {65001, 65004}


class SignInRequired(AuthError):
    """No usable Microsoft 365 account (none added, or its sign-in expired); sign in by device code."""


# An id_token crmkit verifies itself (auth/id_token.py): one class per cause a person can act on.
class SigningKeysUnavailable(AuthError):
    """The authority's discovery document or signing keys (JWKS) could not be read: network, or tenant id."""


class IdTokenRefused(AuthError):
    """An id_token failed crmkit's own verification (not a JWT, or no ``tid``/``oid``); sign in again."""


class IdTokenExpired(IdTokenRefused):
    """The id_token is past its expiry: sign in again."""


class IdTokenNotYetValid(IdTokenRefused):
    """The id_token is issued in the future: this computer's clock is off."""


class IdTokenWrongAudience(IdTokenRefused):
    """The id_token was issued to another app: check the client id."""


class IdTokenWrongIssuer(IdTokenRefused):
    """The id_token comes from another tenant or sign-in service: check the tenant id."""


class IdTokenBadSignature(IdTokenRefused):
    """Not signed (RS256) by a key the authority publishes: refused as forged or tampered."""


class IdTokenNonceMismatch(IdTokenRefused):
    """The id_token's nonce is missing or not this sign-in's: a replayed or foreign answer."""


def _codes(result: Mapping[str, Any]) -> tuple[int, ...]:
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    if not codes:
        codes = [int(c) for c in re.findall(r"AADSTS(\d+)", str(result.get("error_description") or ""))]
    return tuple(codes)


def _summary(result: Mapping[str, Any]) -> str:
    # Entra appends "Trace ID: … Correlation ID: … Timestamp: …" on the same line; keep the text.
    text = str(result.get("error_description") or result.get("error") or "unknown error")
    text = text.splitlines()[0] if text else text
    return re.split(r"\s+Trace ID:", text)[0].strip()


def is_personal_account(claims: Mapping[str, Any] | None) -> bool:
    return bool(claims) and str(claims.get("tid", "")).lower() == CONSUMER_TENANT_ID  # type: ignore[union-attr]


def auth_error(
    result: Mapping[str, Any], *, consent_url: Callable[[], str], who: str | None = None,
) -> AuthError:
    """The typed error for an MSAL error result.

    Args:
        result: MSAL's dict (``error``, ``error_description``, ``error_codes``, ``suberror``).
        consent_url: builds the admin-consent link for :class:`ConsentRequired`.
        who: the account's user name, for the message.
    """
    error = str(result.get("error") or "")
    codes = _codes(result)
    code_set = set(codes)
    summary = _summary(result)
    account = f" for {who}" if who else ""
    kw: dict[str, Any] = {"error": error or None, "codes": codes}
    if code_set & _CONSENT or result.get("suberror") == "consent_required" or error == "consent_required":
        url = consent_url()
        return ConsentRequired(
            f"crmkit's app has no consent in this tenant{account} (AADSTS65001). A directory administrator "
            f"must grant consent once, for the whole organisation or this account, via: {url}",
            consent_url=url, **kw,
        )
    if code_set & _PERSONAL:
        return PersonalAccountRefused(
            f"{who or 'This account'} is a personal Microsoft account. crmkit needs a work or school account "
            "of your organisation (Microsoft Entra ID); sign in with that instead.", **kw,
        )
    if code_set & _MFA:
        return MfaRequired(
            f"The account{account} requires multi-factor authentication, which the password sign-in cannot do "
            "(Microsoft is phasing that flow out). Use the device-code sign-in (\"Sign in once\") instead.", **kw,
        )
    if 50126 in code_set:
        return InvalidCredentials(f"Wrong user name or password{account} (AADSTS50126).", **kw)
    if 50034 in code_set:
        return InvalidCredentials(
            f"The account{account} does not exist in this organisation's directory (AADSTS50034).", **kw
        )
    if error == "authorization_declined":
        return SignInCancelled("The sign-in was declined on the Microsoft sign-in page.", **kw)
    if error in ("expired_token", "code_expired") or 70020 in code_set:
        return SignInCancelled("The sign-in code expired before it was used; start the sign-in again.", **kw)
    if 50057 in code_set:
        return AuthError(f"The account{account} is disabled in the directory (AADSTS50057); ask your "
                         "administrator.", **kw)
    if 50053 in code_set:
        return AuthError(f"The account{account} is locked after too many attempts (AADSTS50053); wait and "
                         "try again.", **kw)
    if 7000218 in code_set:
        return AuthError("The app registration is treated as confidential (AADSTS7000218): enable \"Allow "
                         "public client flows\" in its Authentication settings (docs/app-registration.md).", **kw)
    if 700016 in code_set:
        return AuthError("The client id is not known in this tenant (AADSTS700016); check teams.client_id and "
                         "teams.tenant_id, or grant admin consent first.", **kw)
    if 90002 in code_set:
        return AuthError("The tenant does not exist (AADSTS90002); check teams.tenant_id.", **kw)
    if 700082 in code_set or (error == "invalid_grant" and 70000 in code_set):
        return SignInRequired(f"The saved sign-in{account} has expired or was revoked; sign in again.", **kw)
    return AuthError(f"Microsoft sign-in failed{account}: {summary}", **kw)
