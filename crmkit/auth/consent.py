"""Admin consent: the links an administrator opens, and the consent state crmkit has learned.

Microsoft's formats (Entra docs "v2-admin-consent" and "grant-admin-consent"):

- organisation, v2: ``https://{host}/{tenant}/v2.0/adminconsent?client_id=…&scope=…&redirect_uri=…&state=…``
- organisation, classic: ``https://{host}/{tenant}/adminconsent?client_id=…``
- one account: the authorize endpoint with ``prompt=consent`` and ``login_hint``; the account
  (or an admin signing in as it) consents for itself.

Every link carries a ``state`` made here (:func:`start_consent_request`) and recorded only as its
sha256 in ``consent_requests``, with the scope, the requesting CRM user and an expiry. The redirect
lands on a page crmkit's Voila server serves (``/crmkit/consent``, :data:`CONSENT_PATH`), which hands
the query to :func:`answer_consent`: an unknown, expired or used state is refused with nothing written;
otherwise the consent state is recorded with the requesting user as ``by`` and audited. For one
account the redirect brings an authorization code: it is redeemed with a PKCE verifier derived from the
state and the machine's key (so nothing secret is stored), the id_token's ``preferred_username`` must be
the requested account, and the tokens are dropped.

Where crmkit serves no redirect URI (a notebook outside Voila) the links use the native-client URI and
the admin pastes the address the browser shows afterwards (:func:`record_redirect`, the same
:func:`answer_consent`). crmkit also learns consent from what it sees: a successful sign-in (granted
for that account) and AADSTS65001 (missing).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pandas as pd

from ..errors import ValidationError, catalog_error
from ._secrets import SecretBox

if TYPE_CHECKING:
    import httpx

    from ..config import TeamsConfig
    from ..session import Session
    from ..store import Store, Tx

log = logging.getLogger("crmkit.auth")

__all__ = [
    "CONSENT_PATH",
    "ConsentAnswer",
    "ConsentRequest",
    "ConsentResult",
    "account_consent_url",
    "admin_consent_url",
    "answer_consent",
    "cancel_consent_request",
    "classic_admin_consent_url",
    "consent_accounts",
    "consent_redirect_uri",
    "consent_request_status",
    "consent_states",
    "native_redirect_uri",
    "parse_consent_redirect",
    "record_consent",
    "record_redirect",
    "start_consent_request",
]

ORGANIZATION = "organization"
STATES = ("granted", "required", "declined", "unknown")
CONSENT_PATH = "/crmkit/consent"  # where crmkit's Voila server receives the consent redirects
REQUEST_TTL = timedelta(minutes=20)  # a consent link answers within this time, or not at all


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
    the redirect URI must be registered on the app exactly as given. Without ``state`` the link
    carries none (Microsoft's is optional): its answer is the admin's word, pasted back
    (:func:`record_redirect`); a link with a state comes from :func:`start_consent_request`.
    """
    scope = " ".join(f"{config.graph_resource}/{s}" for s in (scopes or config.scopes))
    params = {
        "client_id": config.client_id,
        "scope": scope,
        "redirect_uri": redirect_uri or native_redirect_uri(config),
    }
    if state is not None:
        params["state"] = state
    return f"{config.browser_login_origin}/{config.tenant_id}/v2.0/adminconsent?{_q(params)}"


def classic_admin_consent_url(config: TeamsConfig) -> str:
    """The older organisation-wide link: consents to every permission the app registration lists."""
    return f"{config.browser_login_origin}/{config.tenant_id}/adminconsent?{_q({'client_id': config.client_id})}"


def account_consent_url(
    config: TeamsConfig, username: str, *, redirect_uri: str | None = None, state: str | None = None,
    code_challenge: str | None = None, nonce: str | None = None,
) -> str:
    """A consent link for one account: sign in as ``username`` and accept the permissions.

    With ``code_challenge`` (PKCE, S256) and ``nonce`` the redirect's code can be redeemed and its
    id_token tells which account consented (:func:`answer_consent`).
    """
    params = {
        "client_id": config.client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri or native_redirect_uri(config),
        "response_mode": "query",
        "scope": " ".join(_link_scopes(config)),
        "prompt": "consent",
        "login_hint": username,
    }
    if state is not None:
        params["state"] = state
    if code_challenge is not None:
        params.update(code_challenge=code_challenge, code_challenge_method="S256")
    if nonce is not None:
        params["nonce"] = nonce
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


def record_redirect(crm: Session, config: TeamsConfig, url: str) -> ConsentResult:
    """Record consent from the pasted redirect address (needs ``teams.admin``).

    An address with a ``state`` goes through :func:`answer_consent` as the handler's would, and must
    answer a request this user made (else :class:`ConsentAnswerRefused`, nothing written). An address
    without one (a link made elsewhere, e.g. the classic URL) is the admin's word for the organisation.
    """
    crm.require("teams.admin")
    result = parse_consent_redirect(url)
    if result.state is not None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(url.strip()).query).items() if v}
        answer = answer_consent(crm.store, query, user=crm.user.name, config=config)
        if not answer.recorded:
            raise catalog_error(ValidationError, f"consent.refused.{answer.outcome}")
        return result
    state: Literal["granted", "declined"] = "granted" if result.granted else "declined"
    details = json.dumps({"tenant": result.tenant, "error": result.error, "description": result.description})

    def run(tx: Tx) -> None:
        record_consent(tx, config, scope=ORGANIZATION, state=state, by=crm.user.name, details=details)
        crm.audit(tx, "teams", "consent.organization", None, state)

    crm.store.write(run)
    return result


def consent_states(crm: Session, config: TeamsConfig) -> pd.DataFrame:
    """The consent state learned per scope for this tenant and app."""
    return crm.store.df(
        "SELECT scope, state, learned_at, learned_by, details FROM consent_state "
        "WHERE tenant_id = ? AND client_id = ? ORDER BY scope",
        [config.tenant_id, config.client_id],
    )


# -- consent requests: the state of a link, and the redirect that answers it -----------------------


def consent_redirect_uri(env: Mapping[str, str] | None = None) -> str | None:
    """The redirect URI crmkit serves for consent links, or None where it serves none.

    ``CRMKIT_CONSENT_REDIRECT_URI`` (a server behind a registered https name), else the one crmkit's Voila
    server announces to its kernels (``http://localhost:<port>/crmkit/consent``: Entra matches a localhost
    redirect URI on any port). In a plain notebook there is none: the links fall back to the native-client
    URI and the pasted address.
    """
    env = os.environ if env is None else env
    uri = (env.get("CRMKIT_CONSENT_REDIRECT_URI") or "").strip()
    return uri or None


def _hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _pkce(config: TeamsConfig, state: str) -> tuple[str, str, str]:
    """``(verifier, S256 challenge, nonce)`` for a state: derived with the machine's key, never stored.

    The link carries the nonce's sha256 (hex), as MSAL's own auth-code flow sends it; MSAL compares the
    id_token's nonce with the hash of the one it is given.
    """
    box = SecretBox(config.home)
    verifier = _b64(box.mac("consent-pkce", state))  # 43 characters of [A-Za-z0-9_-], as RFC 7636 wants
    challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge, _b64(box.mac("consent-nonce", state))


def _link_scopes(config: TeamsConfig) -> list[str]:
    return [*config.graph_scopes, "openid", "profile", "offline_access"]


def _check_scope(scope: str) -> str:
    if scope == ORGANIZATION:
        return scope
    if scope.startswith("account:"):
        name = scope.removeprefix("account:").strip().lower()
        if "@" in name and " " not in name and len(name) <= 256:
            return f"account:{name}"
    raise ValidationError(f"consent scope is {ORGANIZATION!r} or 'account:<user@domain>', not {scope!r}")


@dataclass(frozen=True)
class ConsentRequest:
    """A consent link handed out: open :attr:`url` in a new tab; :func:`consent_request_status` watches it."""

    scope: str
    url: str
    state_hash: str
    expires_at: datetime

    def __repr__(self) -> str:  # the URL carries the state: keep it out of logs and reprs
        return f"<ConsentRequest {self.scope} until {self.expires_at:%H:%M}>"


def start_consent_request(
    crm: Session, config: TeamsConfig, scope: str, *, redirect_uri: str | None = None, lang: str | None = None,
    ttl: timedelta = REQUEST_TTL,
) -> ConsentRequest:
    """Make a consent link for ``scope`` (``organization`` or ``account:<user>``) and record its state.

    Needs ``teams.admin``. ``redirect_uri`` default: :func:`consent_redirect_uri`, else the native-client
    URI (then the admin pastes the address back). The state is 256 random bits; the database keeps its
    sha256, the requesting user, the scope and the expiry.
    """
    crm.require("teams.admin")
    scope = _check_scope(scope)
    redirect_uri = redirect_uri or consent_redirect_uri() or native_redirect_uri(config)
    lang = lang or crm.language
    state = secrets.token_urlsafe(32)
    if scope == ORGANIZATION:
        url = admin_consent_url(config, redirect_uri=redirect_uri, state=state)
    else:
        _verifier, challenge, nonce = _pkce(config, state)
        url = account_consent_url(config, scope.removeprefix("account:"), redirect_uri=redirect_uri, state=state,
                                  code_challenge=challenge, nonce=hashlib.sha256(nonce.encode()).hexdigest())
    now = _now()
    request = ConsentRequest(scope, url, _hash(state), now + ttl)
    crm.store.execute(
        "INSERT INTO consent_requests (state_hash, scope, tenant_id, client_id, redirect_uri, lang, requested_by, "
        "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [request.state_hash, scope, config.tenant_id, config.client_id, redirect_uri, lang, crm.user.name, now,
         request.expires_at],
    )
    return request


def cancel_consent_request(crm: Session, request: ConsentRequest) -> None:
    """Close an unanswered request (the admin unticked its box): its link no longer records anything."""
    crm.store.execute(
        "UPDATE consent_requests SET answered_at = ?, outcome = 'cancelled' WHERE state_hash = ? "
        "AND answered_at IS NULL AND requested_by = ?", [_now(), request.state_hash, crm.user.name])


def consent_request_status(crm: Session, request: ConsentRequest) -> str:
    """``pending``, ``expired``, or how it was answered (``granted``, ``declined``, ``wrong_account``, …)."""
    row = crm.store.read(lambda tx: tx.rows(
        "SELECT outcome, answered_at, expires_at FROM consent_requests WHERE state_hash = ?", [request.state_hash]))
    if not row:
        return "unknown"
    outcome, answered, expires = row[0]
    if answered is not None:
        return str(outcome)
    return "expired" if _now() > expires else "pending"


@dataclass(frozen=True)
class ConsentAnswer:
    """What a consent redirect did. ``outcome``: ``granted``, ``declined``, ``wrong_account`` (recorded:
    the request is closed), or why nothing was written: ``unknown``, ``expired``, ``used``, ``cancelled``,
    ``wrong_user``, ``no_rights``, ``changed`` (tenant or app changed since the link), ``invalid``, ``failed``."""

    outcome: str
    scope: str | None = None
    lang: str | None = None
    account: str | None = None  # the account the id_token named (per-account consent)

    @property
    def recorded(self) -> bool:
        return self.outcome in ("granted", "declined", "wrong_account")


_ANSWER_COLUMNS = "scope, tenant_id, client_id, redirect_uri, lang, requested_by, expires_at, answered_at, outcome"


def answer_consent(
    store: Store, params: Mapping[str, str], *, user: str | None = None, config: TeamsConfig | None = None,
    http: httpx.Client | None = None,
) -> ConsentAnswer:
    """Record what a consent redirect says, for the request its ``state`` names; the one way both the
    redirect handler and the pasted address record a consent result.

    ``params`` is the redirect's query. ``user`` (the paste) must be the user who asked; the handler passes
    None (the state, unguessable and single use, stands for the asking admin's browser). The request's user
    must still hold ``teams.admin``; the consent state is written with that user as ``by`` and audited.
    Nothing is written for a refused answer; the tokens of a redeemed code are never kept.
    """
    from ..config import TeamsConfig
    from ..errors import UnknownUser
    from ..session import Session, load_user
    from ..teams.sessions import register_session

    state = params.get("state") or ""
    if not state:
        return ConsentAnswer("unknown")
    key = _hash(state)
    rows = store.read(lambda tx: tx.rows(f"SELECT {_ANSWER_COLUMNS} FROM consent_requests WHERE state_hash = ?",
                                         [key]))
    if not rows:
        return ConsentAnswer("unknown")
    scope, tenant_id, client_id, redirect_uri, lang, requested_by, expires_at, answered_at, before = rows[0]
    refused = lambda outcome: ConsentAnswer(outcome, scope, lang)  # noqa: E731
    if answered_at is not None:
        return refused("cancelled" if before == "cancelled" else "used")
    if _now() > expires_at:
        return refused("expired")
    if user is not None and user != requested_by:
        return refused("wrong_user")
    try:  # read first: a refused answer opens no session (a CRM session records itself)
        asker = store.read(lambda tx: load_user(tx, requested_by))
    except UnknownUser:
        return refused("no_rights")
    if not asker.can("teams.admin"):
        return refused("no_rights")
    crm = Session(store, requested_by)
    register_session(crm)  # as a CRM session opened here always did
    config = config or TeamsConfig.resolve(crm)
    if (config.tenant_id, config.client_id) != (tenant_id, client_id):
        return refused("changed")
    error = params.get("error")
    account: str | None = None
    if error:
        outcome = "declined"
        details = {"error": error[:100], "description": (params.get("error_description") or "")[:300]}
    elif scope == ORGANIZATION:
        if (params.get("admin_consent") or "").lower() != "true":
            return refused("invalid")
        outcome, details = "granted", {"tenant": params.get("tenant"), "scope": params.get("scope")}
    else:
        code = params.get("code")
        if not code:
            return refused("invalid")
        try:
            account = _redeemed_account(config, state, code, redirect_uri, http)
        except Exception as exc:  # the code is spent or refused; nothing learned, the admin may try again
            log.warning("consent for %s: the code could not be redeemed (%s)", scope, type(exc).__name__)
            return refused("failed")
        wanted = scope.removeprefix("account:")
        outcome = "granted" if account == wanted else "wrong_account"
        details = {"account": account}

    def run(tx: Tx) -> bool:
        again = tx.one("SELECT answered_at FROM consent_requests WHERE state_hash = ?", [key])
        if again is not None:
            return False  # answered meanwhile (a second tab, the paste): single use
        tx.execute("UPDATE consent_requests SET answered_at = ?, outcome = ? WHERE state_hash = ?",
                   [_now(), outcome, key])
        if outcome == "wrong_account":
            crm.audit(tx, "teams", f"consent.{scope}", None, {"refused": "wrong_account", "account": account})
            return True
        state_name: Literal["granted", "declined"] = "granted" if outcome == "granted" else "declined"
        record_consent(tx, config, scope=scope, state=state_name, by=requested_by, details=json.dumps(details))
        if scope != ORGANIZATION:
            tx.execute("UPDATE m365_accounts SET consent_state = ? WHERE lower(username) = ?",
                       [state_name, scope.removeprefix("account:")])
        crm.audit(tx, "teams", f"consent.{scope}", None, state_name)
        return True

    if not store.write(run):
        return refused("used")
    return ConsentAnswer(outcome, scope, lang, account)


def _redeemed_account(config: TeamsConfig, state: str, code: str, redirect_uri: str,
                      http: httpx.Client | None) -> str:
    """Redeem the code (PKCE verifier and nonce derived from the state) and return the id_token's
    ``preferred_username``, lower-cased; the tokens go with the throwaway cache."""
    import msal

    from ..http import MsalHttpAdapter, shared_http

    verifier, _challenge, nonce = _pkce(config, state)
    app = msal.PublicClientApplication(
        config.client_id, authority=config.authority, token_cache=msal.TokenCache(),
        http_client=MsalHttpAdapter(http if http is not None else shared_http(config.sandbox_url)),
        instance_discovery=False if config.sandbox else None,
    )
    # The flow MSAL's initiate_auth_code_flow would have kept in a session, rebuilt from the state.
    flow = {"state": state, "redirect_uri": redirect_uri, "scope": _link_scopes(config), "code_verifier": verifier,
            "nonce": nonce}
    result: dict[str, Any] = app.acquire_token_by_auth_code_flow(
        flow, {"code": code, "state": state}, scopes=config.graph_scopes)
    try:
        if "error" in result:
            raise ValidationError(f"the code was refused: {result.get('error')}")
        claims = result.get("id_token_claims") or {}
        name = str(claims.get("preferred_username") or "").strip().lower()
        if not name:
            raise ValidationError("the id_token names no account")
        return name
    finally:
        result.clear()  # keep nothing: the access and refresh tokens are not crmkit's to hold here


def consent_accounts(crm: Session, config: TeamsConfig) -> pd.DataFrame:
    """Every account the admin may consent for, one by one: those CRM users added and those with a
    learned consent state. Columns ``account``, ``state`` (``unknown`` when nothing is known), ``learned_at``.
    Needs ``teams.admin`` (it lists other users' accounts)."""
    crm.require("teams.admin")
    return crm.store.df(
        "WITH names AS (SELECT DISTINCT lower(username) AS account FROM m365_accounts "
        "UNION SELECT substr(scope, 9) FROM consent_state WHERE scope LIKE 'account:%' AND tenant_id = ? "
        "AND client_id = ?) "
        "SELECT n.account, coalesce(c.state, 'unknown') AS state, c.learned_at FROM names n "
        "LEFT JOIN consent_state c ON c.scope = 'account:' || n.account AND c.tenant_id = ? AND c.client_id = ? "
        "ORDER BY n.account",
        [config.tenant_id, config.client_id, config.tenant_id, config.client_id],
    )
