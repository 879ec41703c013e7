"""The sandbox tenant: a local Microsoft identity platform + Microsoft Graph v1.0 subset.

It is the embedded default for the demo and the tests.  Real MSAL and httpx talk to it over
real sockets on 127.0.0.1; :mod:`crmkit.http` routes the public https hosts below to it.

Everything here is demo data.  ``SANDBOX_PASSWORD`` and ``SANDBOX_DAEMON_SECRET`` are
published on purpose so that people can sign in to the sandbox; they are not secrets and
open nothing outside the sandbox.

Importing this package is cheap: the server itself lives in :mod:`crmkit.sandbox.server`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GRAPH_BASE",
    "GRAPH_HOST",
    "GRAPH_RESOURCE",
    "LOGIN_HOST",
    "LOGIN_URL",
    "SANDBOX_ADMIN_UPN",
    "SANDBOX_AUTHORITY",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_DAEMON_CLIENT_ID",
    "SANDBOX_DAEMON_SECRET",
    "SANDBOX_DEFAULT_UPN",
    "SANDBOX_DISABLED_UPN",
    "SANDBOX_DOMAIN",
    "SANDBOX_GUEST_UPN",
    "SANDBOX_MFA_CODE",
    "SANDBOX_MFA_UPN",
    "SANDBOX_PASSWORD",
    "SANDBOX_PERSONAL_ACCOUNT",
    "SANDBOX_TENANT_ID",
    "SANDBOX_TENANT_NAME",
    "SANDBOX_UNCONSENTED_CLIENT_ID",
    "SPECIAL_USERS",
    "SpecialUser",
]

SANDBOX_TENANT_ID = "8f2c1a9e-5b3d-4c7e-9a1f-2d6b0e4c3a71"
SANDBOX_TENANT_NAME = "Contoso Sandbox"
SANDBOX_DOMAIN = "contoso.example"

LOGIN_HOST = "login.crmkit.localhost"
GRAPH_HOST = "graph.crmkit.localhost"
LOGIN_URL = f"https://{LOGIN_HOST}"
SANDBOX_AUTHORITY = f"{LOGIN_URL}/{SANDBOX_TENANT_ID}"
GRAPH_RESOURCE = f"https://{GRAPH_HOST}"
GRAPH_BASE = f"{GRAPH_RESOURCE}/v1.0"

# The registered crmkit public client app ("Allow public client flows" on, org-wide admin
# consent granted for its delegated Graph permissions).
SANDBOX_CLIENT_ID = "5e1c7a0d-3b2f-4d8e-9c6a-7f0b1e2d3c4a"
# A second public client nobody has consented to: ROPC/refresh for it fails with AADSTS65001,
# the device-code sign-in page asks the user for consent.
SANDBOX_UNCONSENTED_CLIENT_ID = "0b7d3e91-6c2a-4f58-8e1d-93a4c5b6d7e8"
# A confidential (daemon) app with application permissions, for app-only tokens via
# client_credentials.  Demo secret, not a secret.
SANDBOX_DAEMON_CLIENT_ID = "c4e2a8f1-9d3b-4a6c-b5e7-1f0d2c3b4a59"
SANDBOX_DAEMON_SECRET = "sandbox-daemon-secret-not-a-secret"  # noqa: S105 (published demo value)

# Every seeded user signs in with this password (demo tenant; published on purpose).
SANDBOX_PASSWORD = "Sandbox-Pass-1"  # noqa: S105 (published demo value)
# One-time code the MFA-only user types on the sandbox sign-in page.
SANDBOX_MFA_CODE = "246810"

SANDBOX_DEFAULT_UPN = f"anna.schmidt@{SANDBOX_DOMAIN}"
SANDBOX_ADMIN_UPN = f"admin@{SANDBOX_DOMAIN}"
SANDBOX_MFA_UPN = f"mfa.only@{SANDBOX_DOMAIN}"
SANDBOX_DISABLED_UPN = f"disabled.user@{SANDBOX_DOMAIN}"
SANDBOX_GUEST_UPN = f"kim.berg_partner.example#EXT#@{SANDBOX_DOMAIN}"
SANDBOX_PERSONAL_ACCOUNT = "max.privat@outlook.example"


@dataclass(frozen=True)
class SpecialUser:
    upn: str
    behaviour: str


SPECIAL_USERS: tuple[SpecialUser, ...] = (
    SpecialUser(SANDBOX_DEFAULT_UPN, "ordinary member (Sales); the demo's default sender"),
    SpecialUser(
        SANDBOX_ADMIN_UPN,
        "Global + Privileged Role Administrator; can grant org-wide admin consent",
    ),
    SpecialUser(
        SANDBOX_MFA_UPN,
        "MFA required: password flow fails with AADSTS50076; the sign-in page asks for SANDBOX_MFA_CODE",
    ),
    SpecialUser(SANDBOX_DISABLED_UPN, "accountEnabled=false: sign-in fails with AADSTS50057"),
    SpecialUser(
        SANDBOX_GUEST_UPN,
        "B2B guest (userType Guest, mail kim.berg@partner.example); may not list users",
    ),
    SpecialUser(
        SANDBOX_PERSONAL_ACCOUNT,
        "personal Microsoft account, not in the directory: refused with AADSTS50020",
    ),
)
