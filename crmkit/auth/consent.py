"""Admin consent: the links an administrator opens, and the consent state crmkit has learned.

Microsoft's formats (Entra docs "v2-admin-consent" and "grant-admin-consent"):

- organisation, v2: ``https://{host}/{tenant}/v2.0/adminconsent?client_id=…&scope=…&redirect_uri=…&state=…``
- organisation, classic: ``https://{host}/{tenant}/adminconsent?client_id=…``
- one account: the authorize endpoint with ``prompt=consent`` and ``login_hint``; the account
  (or an admin signing in as it) consents for itself.

crmkit cannot receive the redirect in a notebook, so it learns consent from what it sees:
a successful sign-in (granted for that account), AADSTS65001 (missing), or the address the
admin's browser shows after the consent page, pasted back (:func:`record_redirect`).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pandas as pd

from ..errors import ValidationError

if TYPE_CHECKING:
    from ..config import TeamsConfig
    from ..crm import CRM
    from ..store import Tx

__all__ = [
    "ConsentResult",
    "account_consent_url",
    "admin_consent_url",
    "classic_admin_consent_url",
    "consent_states",
    "native_redirect_uri",
    "parse_consent_redirect",
    "record_consent",
    "record_redirect",
]

ORGANIZATION = "organization"
STATES = ("granted", "required", "declined", "unknown")


def native_redirect_uri(config: TeamsConfig) -> str:
    """The redirect URI a public client registers for desktop/mobile (``…/oauth2/nativeclient``)."""
    return f"https://{config.authority_host}/common/oauth2/nativeclient"


def _q(params: dict[str, str]) -> str:
    return urlencode(params, quote_via=quote, safe="")


def admin_consent_url(
    config: TeamsConfig, *, redirect_uri: str | None = None, state: str | None = None,
    scopes: tuple[str, ...] | None = None,
) -> str:
    """The v2 admin-consent link for the whole organisation.

    Scopes are resource-qualified (``https://graph.microsoft.com/Chat.Create``), space-separated;
    the redirect URI must be registered on the app exactly as given.
    """
    scope = " ".join(f"{config.graph_resource}/{s}" for s in (scopes or config.scopes))
    params = {
        "client_id": config.client_id,
        "scope": scope,
        "redirect_uri": redirect_uri or native_redirect_uri(config),
        "state": state or secrets.token_urlsafe(12),
    }
    return f"{config.browser_login_origin}/{config.tenant_id}/v2.0/adminconsent?{_q(params)}"


def classic_admin_consent_url(config: TeamsConfig) -> str:
    """The older organisation-wide link: consents to every permission the app registration lists."""
    return f"{config.browser_login_origin}/{config.tenant_id}/adminconsent?{_q({'client_id': config.client_id})}"


def account_consent_url(config: TeamsConfig, username: str, *, redirect_uri: str | None = None) -> str:
    """A consent link for one account: sign in as ``username`` and accept the permissions."""
    params = {
        "client_id": config.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri or native_redirect_uri(config),
        "response_mode": "query",
        "scope": " ".join([*config.graph_scopes, "offline_access"]),
        "prompt": "consent",
        "login_hint": username,
    }
    return f"{config.browser_login_origin}/{config.tenant_id}/oauth2/v2.0/authorize?{_q(params)}"


@dataclass(frozen=True)
class ConsentResult:
    """What the consent page's redirect said."""

    granted: bool
    tenant: str | None
    error: str | None
    description: str | None
    state: str | None


def parse_consent_redirect(url: str) -> ConsentResult:
    """Read ``…?admin_consent=True&tenant=…`` or ``…&error=…&error_description=…``.

    Raises:
        ValidationError: the address is not a consent redirect.
    """
    query = parse_qs(urlsplit(url.strip()).query)

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    if one("admin_consent") is None and one("error") is None:
        raise ValidationError("That address is not a consent result; paste the full address the browser shows "
                              "after the consent page (it contains admin_consent=…).")
    error = one("error")
    granted = error is None and (one("admin_consent") or "").lower() == "true"
    return ConsentResult(granted, one("tenant"), error, one("error_description"), one("state"))


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def record_consent(
    tx: Tx, config: TeamsConfig, *, scope: str, state: Literal["granted", "required", "declined", "unknown"],
    by: str, details: str | None = None,
) -> None:
    """Upsert what crmkit learned (``scope`` is ``organization`` or ``account:<username>``)."""
    if state not in STATES:
        raise ValidationError(f"consent state must be one of {STATES}")
    tx.execute(
        "DELETE FROM consent_state WHERE scope = ? AND tenant_id = ? AND client_id = ?",
        [scope, config.tenant_id, config.client_id],
    )
    tx.execute(
        "INSERT INTO consent_state VALUES (?, ?, ?, ?, ?, ?, ?)",
        [scope, config.tenant_id, config.client_id, state, _now(), by, details],
    )


def record_redirect(crm: CRM, config: TeamsConfig, url: str) -> ConsentResult:
    """Record the organisation's consent from the pasted redirect address (needs ``teams.admin``)."""
    crm.require("teams.admin")
    result = parse_consent_redirect(url)
    state: Literal["granted", "declined"] = "granted" if result.granted else "declined"
    details = json.dumps({"tenant": result.tenant, "error": result.error, "description": result.description})

    def run(tx: Tx) -> None:
        record_consent(tx, config, scope=ORGANIZATION, state=state, by=crm.user.name, details=details)
        crm._audit(tx, "teams", "consent.organization", None, state)

    crm.store.write(run)
    return result


def consent_states(crm: CRM, config: TeamsConfig) -> pd.DataFrame:
    """The consent state learned per scope for this tenant and app."""
    return crm.store.df(
        "SELECT scope, state, learned_at, learned_by, details FROM consent_state "
        "WHERE tenant_id = ? AND client_id = ? ORDER BY scope",
        [config.tenant_id, config.client_id],
    )
