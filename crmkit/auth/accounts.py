"""Microsoft 365 accounts per CRM user ("Microsoft 365" tab of the user settings).

A CRM user adds work or school accounts by device-code sign-in and flags each for Teams and/or
SMTP. The database lists the accounts; their tokens stay in the user's token cache on this
machine (see :mod:`crmkit.auth._cache`), so a token never reaches the database.

In a person's server of ``crmkit hub`` (team mode) there is no second sign-in: the account the person signed in
to the hub with is their Teams account, and its tokens come from the hub (:mod:`crmkit.auth.hub_tokens`).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import msal
import pandas as pd

from ..config import TeamsConfig
from ..errors import ConsentRequired, NotFound, PermissionDenied
from ..graph import GraphClient, TokenProvider
from ..http import make_async_http_client
from ..i18n import t
from ._cache import CacheFile, cache_file, cache_key, open_cache
from ._errors import SignInRequired
from ._msal import DeviceSignIn, Identity, account_of
from .consent import (
    ORGANIZATION,
    account_consent_url,
    admin_consent_url,
    cancel_consent_request,
    classic_admin_consent_url,
    consent_accounts,
    consent_request_status,
    consent_states,
    record_consent,
    record_redirect,
    start_consent_request,
)
from .hub_tokens import HubTokens, hub_tokens_from_env

if TYPE_CHECKING:
    from ..session import Session
    from ..store import Tx
    from .campaign import CampaignAccount
    from .consent import ConsentRequest, ConsentResult

__all__ = ["Accounts", "M365Account", "Microsoft365", "mark_used"]

log = logging.getLogger("crmkit.auth")


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


class Microsoft365:
    """A CRM session's door to Microsoft 365: accounts, campaign sender, consent, Graph.

    Args:
        crm: the session; its user owns the accounts.
        config: default :meth:`TeamsConfig.resolve` (settings, environment, else the sandbox).
        http: the ``httpx.Client`` MSAL uses (inject a transport in tests).
        async_http: builds the ``httpx.AsyncClient`` for each Graph client.
        encrypted_cache: use the OS keyring for token caches when available.
        hub_tokens: where the hub's tokens for the signed-in person come from (default: the hub that spawned
            this server, in team mode; None elsewhere, see :func:`crmkit.auth.hub_tokens.hub_tokens_from_env`).
    """

    def __init__(
        self, crm: Session, *, config: TeamsConfig | None = None, http: httpx.Client | None = None,
        async_http: Callable[[], httpx.AsyncClient] | None = None, encrypted_cache: bool = True,
        hub_tokens: HubTokens | None = None,
    ) -> None:
        self.crm = crm
        self.config = config or TeamsConfig.resolve(crm)
        self.identity = Identity(self.config, http=http)
        self.hub_tokens = hub_tokens if hub_tokens is not None else hub_tokens_from_env()
        self._async_http = async_http or (lambda: make_async_http_client(self.config.sandbox_url))
        self._encrypted_cache = encrypted_cache
        self.accounts = Accounts(self)
        from .campaign import CampaignAccount

        self.campaign: CampaignAccount = CampaignAccount(self)

    def __repr__(self) -> str:
        return f"<Microsoft365 user={self.crm.user.name!r} {self.config.describe()}>"

    # -- plumbing shared by accounts and the campaign account -------------------------------------

    def cache(self, owner: str) -> tuple[msal.TokenCache, CacheFile]:
        path = cache_file(self.config.home, cache_key(self.crm.store.path, owner))
        return open_cache(path, allow_encrypted=self._encrypted_cache)

    def graph_client(self, token_provider: TokenProvider, **kw: Any) -> GraphClient:
        """A Graph client on crmkit's loop with this configuration's URL and HTTP stack."""
        return GraphClient(token_provider, base_url=self.config.graph_url, http=self._async_http(), **kw)

    def require_any(self, rights: Iterable[str]) -> None:
        rights = tuple(rights)
        if not any(self.crm.user.can(r) for r in rights):
            params = {"user": self.crm.user.name, "rights": ", ".join(rights)}
            raise PermissionDenied(t("error.msg.permission_any", "en", **params), right=rights[0],
                                   user=self.crm.user.name).localized("error.msg.permission_any", **params)

    def learn_consent(self, scope: str, state: Any, details: str | None = None) -> None:
        self.crm.store.write(
            lambda tx: record_consent(tx, self.config, scope=scope, state=state, by=self.crm.user.name,
                                      details=details)
        )

    # -- consent -----------------------------------------------------------------------------------

    def consent_url(self, *, redirect_uri: str | None = None, state: str | None = None) -> str:
        """The v2 admin-consent link for the whole organisation."""
        return admin_consent_url(self.config, redirect_uri=redirect_uri, state=state)

    def classic_consent_url(self) -> str:
        return classic_admin_consent_url(self.config)

    def account_consent_url(self, username: str) -> str:
        """A consent link for one account (signs in as it with ``prompt=consent``)."""
        return account_consent_url(self.config, username)

    def record_consent_redirect(self, url: str) -> ConsentResult:
        """Record the organisation's consent from the address shown after the consent page."""
        return record_redirect(self.crm, self.config, url)

    def consent_states(self) -> pd.DataFrame:
        return consent_states(self.crm, self.config)

    def start_consent(self, scope: str, *, redirect_uri: str | None = None) -> ConsentRequest:
        """A consent link for ``organization`` or ``account:<user>`` whose answer crmkit records by itself
        (needs ``teams.admin``; see :func:`crmkit.auth.consent.start_consent_request`)."""
        return start_consent_request(self.crm, self.config, scope, redirect_uri=redirect_uri)

    def consent_request_status(self, request: ConsentRequest) -> str:
        return consent_request_status(self.crm, request)

    def cancel_consent(self, request: ConsentRequest) -> None:
        cancel_consent_request(self.crm, request)

    def consent_accounts(self) -> pd.DataFrame:
        """The accounts an admin may approve one by one, with their consent state (needs ``teams.admin``)."""
        return consent_accounts(self.crm, self.config)

    def graph(self, account: str | M365Account | None = None, **kw: Any) -> GraphClient:
        """Graph as the session user's Teams account (see :meth:`Accounts.graph`)."""
        return self.accounts.graph(account, **kw)

    def close(self) -> None:
        self.identity.close()
        if self.hub_tokens is not None:
            self.hub_tokens.close()


@dataclass(frozen=True)
class M365Account:
    """One Microsoft 365 account of a CRM user (no token here; those stay in the cache)."""

    home_account_id: str
    username: str
    display_name: str | None
    tenant_id: str | None
    object_id: str | None
    use_teams: bool
    use_smtp: bool
    added_at: datetime
    consent_state: str


_COLUMNS = ("home_account_id", "username", "display_name", "tenant_id", "object_id", "use_teams", "use_smtp",
            "added_at", "consent_state")


def print_prompt(sign_in: DeviceSignIn) -> None:
    """Default prompt outside widgets: print Microsoft's message and flush (notebook output buffers)."""
    print(sign_in.message, flush=True)
    sys.stdout.flush()


class Accounts:
    """The session user's own Microsoft 365 accounts (any active CRM user may manage their own)."""

    def __init__(self, m365: Microsoft365) -> None:
        self.m365 = m365
        self._pending: DeviceSignIn | None = None
        self._lock = threading.Lock()
        self._hub_account: M365Account | None = None

    @property
    def _user(self) -> str:
        return self.m365.crm.user.name

    def _app(self, *, fresh: bool = False) -> msal.PublicClientApplication:
        cache, _ = self.m365.cache(self._user)
        return self.m365.identity.app(cache, fresh=fresh)

    @property
    def cache_file(self) -> CacheFile:
        """Where this user's tokens are kept, and whether that is encrypted."""
        return self.m365.cache(self._user)[1]

    # -- reading ----------------------------------------------------------------------------------

    def list(self) -> list[M365Account]:
        rows = self.m365.crm.store.read(lambda tx: tx.rows(
            f"SELECT {', '.join(_COLUMNS)} FROM m365_accounts WHERE user_name = ? ORDER BY added_at, username",
            [self._user],
        ))
        return [M365Account(*r) for r in rows]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([a.__dict__ for a in self.list()], columns=list(_COLUMNS))

    def get(self, account: str | M365Account) -> M365Account:
        """An account by home account id or user name.

        Raises:
            NotFound: the session user has no such account.
        """
        if isinstance(account, M365Account):
            account = account.home_account_id
        wanted = account.strip().lower()
        hub = self.hub_account()
        if hub is not None and wanted in (hub.home_account_id.lower(), hub.username.lower()):
            return hub  # without reading the database: the hub's account is listed nowhere
        for a in self.list():
            if wanted in (a.home_account_id.lower(), a.username.lower()):
                return a
        raise NotFound(f"{self._user} has no Microsoft 365 account {account!r}; see accounts.list().")

    def teams_account(self) -> M365Account | None:
        """The account used for Teams: the hub's (team mode), else the first flagged one, or None."""
        hub = self.hub_account()
        if hub is not None:
            return hub
        return next((a for a in self.list() if a.use_teams), None)

    def hub_account(self) -> M365Account | None:
        """In a hub's server: the account the person signed in to the hub with (its tokens are the hub's, so
        Teams needs no second sign-in); None elsewhere. Not listed in the database: nothing of it is stored."""
        hub = self.m365.hub_tokens
        if hub is None:
            return None
        if self._hub_account is None:
            a = hub.account()
            self._hub_account = M365Account(a.home_account_id, a.username, a.display_name, a.tenant_id,
                                            a.object_id, True, False, _now(), "granted")
        return self._hub_account

    # -- adding and removing ------------------------------------------------------------------------

    def start_sign_in(self, *, use_teams: bool = True, use_smtp: bool = False,
                      timeout: float | None = None) -> DeviceSignIn:
        """Add an account by device code: returns at once with the code; the wait runs in the background.

        On success the account is listed for this user (flags as given); a personal Microsoft
        account is refused with :class:`PersonalAccountRefused`.
        """
        app = self._app()

        def finish(result: dict[str, Any]) -> M365Account:
            return self._store_account(app, result, use_teams=use_teams, use_smtp=use_smtp)

        sign_in = self.m365.identity.start_device_flow(app, timeout=timeout, on_success=finish,
                                                       lang=self.m365.crm.language)
        sign_in.add_done_callback(self._learn_from_failure)
        with self._lock:
            self._pending = sign_in
        return sign_in

    @property
    def pending_sign_in(self) -> DeviceSignIn | None:
        """The last sign-in started here, while it is still waiting."""
        p = self._pending
        return p if p is not None and not p.done else None

    def _learn_from_failure(self, sign_in: DeviceSignIn) -> None:
        if isinstance(sign_in.error, ConsentRequired):
            self.m365.learn_consent(ORGANIZATION, "required", "AADSTS65001 at a device-code sign-in")

    def _store_account(self, app: msal.PublicClientApplication, result: dict[str, Any], *,
                       use_teams: bool, use_smtp: bool) -> M365Account:
        claims = result.get("id_token_claims") or {}
        acct = account_of(app, result)
        if acct is None:
            raise SignInRequired("The sign-in succeeded but MSAL kept no account; try again.")
        home_id = acct["home_account_id"]
        username = acct.get("username") or claims.get("preferred_username") or home_id
        crm = self.m365.crm
        config = self.m365.config

        def run(tx: Tx) -> None:
            old = tx.one("SELECT added_at FROM m365_accounts WHERE user_name = ? AND home_account_id = ?",
                         [self._user, home_id])
            tx.execute("DELETE FROM m365_accounts WHERE user_name = ? AND home_account_id = ?", [self._user, home_id])
            tx.execute(
                "INSERT INTO m365_accounts (user_name, home_account_id, username, display_name, tenant_id, "
                "object_id, use_teams, use_smtp, added_at, consent_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [self._user, home_id, username, claims.get("name"), claims.get("tid"), claims.get("oid"),
                 use_teams, use_smtp, old or _now(), "granted"],
            )
            record_consent(tx, config, scope=f"account:{username}", state="granted", by=self._user,
                           details="learned from a successful sign-in")
            crm.audit(tx, f"user:{self._user}", "m365.account", None,
                       {"username": username, "use_teams": use_teams, "use_smtp": use_smtp})

        crm.store.write(run)
        log.info("Microsoft 365 account %s added for CRM user %s", username, self._user)
        return self.get(home_id)

    def sign_in(self, *, use_teams: bool = True, use_smtp: bool = False, timeout: float | None = None,
                prompt: Callable[[DeviceSignIn], None] | None = print_prompt) -> M365Account:
        """Blocking variant of :meth:`start_sign_in` for scripts: prompt, then wait."""
        sign_in = self.start_sign_in(use_teams=use_teams, use_smtp=use_smtp, timeout=timeout)
        if prompt is not None:
            prompt(sign_in)
        try:
            return sign_in.wait()
        except KeyboardInterrupt:
            sign_in.cancel()
            raise

    def ensure_teams_account(self, *, prompt: Callable[[DeviceSignIn], None] | None = print_prompt,
                             timeout: float | None = None) -> M365Account:
        """The user's Teams account; the first Teams action without one starts the sign-in."""
        account = self.teams_account()
        if account is not None:
            return account
        return self.sign_in(use_teams=True, prompt=prompt, timeout=timeout)

    def set_usage(self, account: str | M365Account, *, use_teams: bool | None = None,
                  use_smtp: bool | None = None) -> M365Account:
        """Flag an account for Teams and/or SMTP."""
        acct = self.get(account)
        new_teams = acct.use_teams if use_teams is None else bool(use_teams)
        new_smtp = acct.use_smtp if use_smtp is None else bool(use_smtp)

        def run(tx: Tx) -> None:
            tx.execute("UPDATE m365_accounts SET use_teams = ?, use_smtp = ? WHERE user_name = ? AND "
                       "home_account_id = ?", [new_teams, new_smtp, self._user, acct.home_account_id])
            self.m365.crm.audit(tx, f"user:{self._user}", "m365.account.usage",
                                 {"username": acct.username, "use_teams": acct.use_teams, "use_smtp": acct.use_smtp},
                                 {"username": acct.username, "use_teams": new_teams, "use_smtp": new_smtp})

        self.m365.crm.store.write(run)
        return self.get(acct.home_account_id)

    def remove(self, account: str | M365Account) -> None:
        """Remove the account from the list and its tokens from this machine's cache."""
        acct = self.get(account)

        def run(tx: Tx) -> None:
            tx.execute("DELETE FROM m365_accounts WHERE user_name = ? AND home_account_id = ?",
                       [self._user, acct.home_account_id])
            self.m365.crm.audit(tx, f"user:{self._user}", "m365.account", {"username": acct.username}, None)

        self.m365.crm.store.write(run)
        app = self._app()
        for cached in app.get_accounts():
            if cached.get("home_account_id") == acct.home_account_id:
                app.remove_account(cached)

    # -- tokens -------------------------------------------------------------------------------------

    def token(self, account: str | M365Account | None = None, *, force_refresh: bool = False) -> str:
        """An access token for Graph, silently from the cache (refreshing when needed).

        Raises:
            SignInRequired: no Teams account, or its saved sign-in is gone or expired.
            AuthError: the refresh failed for another reason (e.g. ConsentRequired).
        """
        acct = self.get(account) if account is not None else self.teams_account()
        if acct is None:
            raise SignInRequired(f"{self._user} has no Microsoft 365 account for Teams yet; add one by signing in.")
        hub = self.hub_account()
        if hub is not None and acct.home_account_id == hub.home_account_id:
            assert self.m365.hub_tokens is not None
            return self.m365.hub_tokens.access_token(force_refresh=force_refresh)  # the hub refreshes it
        result = self.m365.identity.silent(self._app(), acct.home_account_id, force_refresh=force_refresh)
        if result is None:
            raise SignInRequired(
                f"The sign-in of {acct.username} is not saved on this machine (or has expired); sign in again."
            )
        return str(result["access_token"])

    def token_provider(self, account: str | M365Account | None = None) -> TokenProvider:
        acct = self.get(account) if account is not None else self.teams_account()
        key = acct.home_account_id if acct is not None else None
        return lambda force: self.token(key, force_refresh=force)

    def graph(self, account: str | M365Account | None = None, **kw: Any) -> GraphClient:
        """A Graph client acting as ``account`` (default: the Teams account).

        Making the client writes nothing: a send refused after it (unknown recipient, too large,
        blocked) must leave the database as it was. ``last_used_at`` is stamped by
        :func:`mark_used` in the transaction of a send that goes ahead.
        """
        acct = self.get(account) if account is not None else self.teams_account()
        if acct is None:
            raise SignInRequired(f"{self._user} has no Microsoft 365 account for Teams yet; add one by signing in.")
        return self.m365.graph_client(self.token_provider(acct), **kw)


def mark_used(tx: Tx, user_name: str, username: str | None) -> None:
    """Stamp ``last_used_at`` of ``user_name``'s account ``username`` inside the caller's transaction.

    Called where a send is accepted (its batch is written), after Graph has resolved its
    recipients: a refused send or a preview never gets here, so it writes nothing.
    """
    if username:
        tx.execute("UPDATE m365_accounts SET last_used_at = ? WHERE user_name = ? AND lower(username) = lower(?)",
                   [_now(), user_name, username])
