"""The campaign sender account: one system-wide Microsoft 365 account that sends campaign messages.

Two modes:

- ``signed_in`` (recommended): an administrator signs the account in once by device code; its
  refresh token is kept in the campaign token cache on this machine and renewed on use. Works
  with MFA.
- ``password`` (the reference's way): user name and password, used with Microsoft's
  resource-owner password flow. Microsoft deprecates this flow and it cannot pass MFA. The
  password is encrypted with a key outside the database and never shown again.

Configuring needs ``campaign.admin`` or ``teams.admin``; sending with the account does not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msal

from ..errors import (
    AuthError,
    ConfigError,
    ConsentRequired,
    GraphError,
    InvalidCredentials,
    MfaRequired,
    PersonalAccountRefused,
    SignInCancelled,
    ValidationError,
    catalog_error,
)
from ..graph import GraphClient, RetryPolicy, TokenProvider
from ..text_rules import check_text
from ._cache import CacheFile
from ._errors import SignInRequired
from ._msal import DeviceSignIn, account_of
from ._secrets import SecretBox
from .consent import ORGANIZATION, record_consent

if TYPE_CHECKING:
    from ..store import Tx
    from .accounts import Microsoft365

__all__ = ["ADMIN_RIGHTS", "CampaignAccount", "CampaignAccountInfo", "TestResult"]

log = logging.getLogger("crmkit.auth")

ADMIN_RIGHTS = ("campaign.admin", "teams.admin")
CACHE_OWNER = "@campaign"
# A UI text, not a password.
PASSWORD_FLOW_WARNING = "The password sign-in uses Microsoft's resource-owner password flow. Microsoft " \
    "deprecates it, and it fails for accounts with multi-factor authentication. Prefer \"Sign in once\"."  # noqa: S105


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


@dataclass(frozen=True)
class CampaignAccountInfo:
    """What may be shown about the campaign account (never the password)."""

    mode: str
    username: str
    display_name: str | None
    home_account_id: str | None
    has_password: bool
    set_at: datetime
    set_by: str
    last_test_at: datetime | None
    last_test_ok: bool | None
    last_test_detail: str | None


@dataclass(frozen=True)
class TestResult:
    """The outcome of "Test…": ``reason`` is ``ok`` or a stable key for the failure."""

    __test__ = False  # not a pytest test class

    ok: bool
    reason: str
    message: str
    username: str | None = None
    display_name: str | None = None
    consent_url: str | None = None


_REASONS: list[tuple[type[Exception], str]] = [
    (ConsentRequired, "consent_required"),
    (PersonalAccountRefused, "personal_account"),
    (MfaRequired, "mfa_required"),
    (InvalidCredentials, "invalid_credentials"),
    (SignInRequired, "sign_in_required"),
    (SignInCancelled, "sign_in_cancelled"),
    (ConfigError, "config"),
    (AuthError, "auth_error"),
    (GraphError, "graph_error"),
]


class CampaignAccount:
    """The system-wide campaign sender (see module docstring)."""

    def __init__(self, m365: Microsoft365) -> None:
        self.m365 = m365
        self.box = SecretBox(m365.config.home)

    def __repr__(self) -> str:
        info = self.info()
        return f"<CampaignAccount {info.mode + ' ' + info.username if info else 'not set'}>"

    def _cache(self) -> tuple[msal.TokenCache, CacheFile]:
        return self.m365.cache(CACHE_OWNER)

    def _app(self, *, fresh: bool = False) -> msal.PublicClientApplication:
        return self.m365.identity.app(self._cache()[0], fresh=fresh)

    @property
    def cache_file(self) -> CacheFile:
        return self._cache()[1]

    # -- reading ------------------------------------------------------------------------------------

    def info(self) -> CampaignAccountInfo | None:
        row = self.m365.crm.store.read(lambda tx: tx.rows(
            "SELECT mode, username, display_name, home_account_id, password_ciphertext IS NOT NULL, set_at, "
            "set_by, last_test_at, last_test_ok, last_test_detail FROM campaign_account WHERE id = 1"))
        return CampaignAccountInfo(*row[0]) if row else None

    # -- configuring ----------------------------------------------------------------------------------

    def set_password(self, username: str, password: str) -> CampaignAccountInfo:
        """Use ``username`` + ``password`` (resource-owner password flow; see PASSWORD_FLOW_WARNING).

        The password is encrypted at rest with a key in CRMKIT_HOME and never returned.
        """
        self.m365.require_any(ADMIN_RIGHTS)
        username = (username or "").strip()
        if "@" not in username:
            raise catalog_error(ValidationError, "error.msg.campaign_username")
        check_text(username, "username")  # the password is the user's business: it is never looked at
        if not password:
            raise catalog_error(ValidationError, "error.msg.campaign_password")
        if password != password.strip():
            raise catalog_error(ValidationError, "error.msg.campaign_password_spaces")
        ciphertext, key_id = self.box.encrypt(password)
        self._forget_cached_accounts()
        self._write(mode="password", username=username, display_name=None, home_account_id=None,
                    ciphertext=ciphertext, key_id=key_id)
        info = self.info()
        assert info is not None
        return info

    def start_sign_in(self, *, timeout: float | None = None) -> DeviceSignIn:
        """Sign the campaign account in once by device code; its refresh token is kept on this machine."""
        self.m365.require_any(ADMIN_RIGHTS)
        app = self._app()

        def finish(result: dict[str, Any]) -> CampaignAccountInfo:
            acct = account_of(app, result)
            if acct is None:
                raise SignInRequired("The sign-in succeeded but MSAL kept no account; try again.")
            # Only now replace the previous account: a cancelled sign-in leaves it working.
            self._forget_cached_accounts(keep=acct["home_account_id"])
            claims = result.get("id_token_claims") or {}
            username = acct.get("username") or claims.get("preferred_username") or ""
            self._write(mode="signed_in", username=username, display_name=claims.get("name"),
                        home_account_id=acct["home_account_id"], ciphertext=None, key_id=None)
            info = self.info()
            assert info is not None
            return info

        return self.m365.identity.start_device_flow(app, timeout=timeout, on_success=finish,
                                                     lang=self.m365.crm.language)

    def clear(self) -> None:
        """Remove the campaign account (and its saved sign-in on this machine)."""
        self.m365.require_any(ADMIN_RIGHTS)
        old = self.info()
        crm = self.m365.crm

        def run(tx: Tx) -> None:
            tx.execute("DELETE FROM campaign_account")
            crm.audit(tx, "teams", "campaign_account", _public(old), None)

        crm.store.write(run)
        self._forget_cached_accounts()

    def _forget_cached_accounts(self, keep: str | None = None) -> None:
        """Drop every saved sign-in but ``keep``'s from the campaign token cache on this machine.

        Works on the cache itself, not through an MSAL app: building one fetches the authority's
        metadata, and clearing or replacing the account must work while the identity platform is
        unreachable.
        """
        cache = self._cache()[0]
        kinds = msal.TokenCache.CredentialType
        for kind in (kinds.ACCESS_TOKEN, kinds.REFRESH_TOKEN, kinds.ID_TOKEN, kinds.ACCOUNT):
            for entry in list(cache.search(kind)):
                if entry.get("home_account_id") != keep:
                    cache.modify(kind, entry)  # no new values: remove

    def _write(self, *, mode: str, username: str, display_name: str | None, home_account_id: str | None,
               ciphertext: str | None, key_id: str | None) -> None:
        crm = self.m365.crm
        old = self.info()

        def run(tx: Tx) -> None:
            tx.execute("DELETE FROM campaign_account")
            tx.execute(
                "INSERT INTO campaign_account (id, mode, username, home_account_id, display_name, "
                "password_ciphertext, key_id, set_at, set_by) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)",
                [mode, username, home_account_id, display_name, ciphertext, key_id, _now(), crm.user.name],
            )
            # The audit shows that a password was set, never the password or its ciphertext.
            crm.audit(tx, "teams", "campaign_account", _public(old),
                       {"mode": mode, "username": username, "password": "(set)" if ciphertext else None})

        crm.store.write(run)
        log.info("Campaign account set to %s (%s) by %s", username, mode, crm.user.name)

    # -- tokens ---------------------------------------------------------------------------------------

    def _password(self) -> tuple[str, str]:
        row = self.m365.crm.store.read(lambda tx: tx.rows(
            "SELECT username, password_ciphertext, key_id FROM campaign_account WHERE id = 1 AND mode = 'password'"))
        if not row or row[0][1] is None:
            raise catalog_error(SignInRequired, "error.msg.campaign_no_password")
        username, ciphertext, key_id = row[0]
        return username, self.box.decrypt(ciphertext, key_id)

    def _password_sign_in(self, *, fresh: bool) -> dict[str, Any]:
        username, password = self._password()
        app = self._app(fresh=fresh)
        try:
            result = self.m365.identity.password(app, username, password)
        finally:
            del password
        acct = account_of(app, result)
        if acct is not None:
            home_id = acct["home_account_id"]
            name = (result.get("id_token_claims") or {}).get("name")
            self.m365.crm.store.write(lambda tx: tx.execute(
                "UPDATE campaign_account SET home_account_id = ?, display_name = ? WHERE id = 1",
                [home_id, name]) and None)
        return result

    def token(self, *, force_refresh: bool = False) -> str:
        """An access token for the campaign account (cache first; the password flow if needed).

        Raises:
            SignInRequired: not configured, or the once-signed-in account must sign in again.
            AuthError: InvalidCredentials, MfaRequired, ConsentRequired … from the password flow.
        """
        info = self.info()
        if info is None:
            raise catalog_error(SignInRequired, "error.msg.campaign_none")
        if info.home_account_id:
            result = self.m365.identity.silent(self._app(), info.home_account_id, force_refresh=force_refresh)
            if result is not None:
                return str(result["access_token"])
        if info.mode == "password":
            return str(self._password_sign_in(fresh=False)["access_token"])
        raise catalog_error(SignInRequired, "error.msg.campaign_expired", account=info.username)

    def token_provider(self) -> TokenProvider:
        return lambda force: self.token(force_refresh=force)

    def graph(self, **kw: Any) -> GraphClient:
        """A Graph client that sends as the campaign account."""
        return self.m365.graph_client(self.token_provider(), **kw)

    # -- Test… ----------------------------------------------------------------------------------------

    def test(self) -> TestResult:
        """Get a token (fresh, not from cache) and read ``/me``; record and return the outcome."""
        self.m365.require_any(ADMIN_RIGHTS)
        info = self.info()
        if info is None:
            return TestResult(False, "not_configured", "No campaign account is set up yet.")
        try:
            if info.mode == "password":
                token = str(self._password_sign_in(fresh=True)["access_token"])
            else:
                if not info.home_account_id:
                    raise catalog_error(SignInRequired, "error.msg.campaign_never")
                result = self.m365.identity.silent(self._app(), info.home_account_id, force_refresh=True)
                if result is None:
                    raise catalog_error(SignInRequired, "error.msg.campaign_test_expired", account=info.username)
                token = str(result["access_token"])
            graph = self.m365.graph_client(lambda force: token, retry=RetryPolicy(max_retries=2))
            try:
                me = graph.me()
            finally:
                graph.close()
            outcome = TestResult(
                True, "ok", f"The campaign account works: signed in as {me.get('displayName')} "
                f"({me.get('userPrincipalName')}).", username=me.get("userPrincipalName"),
                display_name=me.get("displayName"),
            )
        except Exception as exc:
            reason = next((key for cls, key in _REASONS if isinstance(exc, cls)), None)
            if reason is None:
                raise
            outcome = TestResult(False, reason, str(exc), username=info.username,
                                 consent_url=getattr(exc, "consent_url", None))
        self._record_test(info, outcome)
        return outcome

    def _record_test(self, info: CampaignAccountInfo, outcome: TestResult) -> None:
        config = self.m365.config
        by = self.m365.crm.user.name

        def run(tx: Tx) -> None:
            tx.execute("UPDATE campaign_account SET last_test_at = ?, last_test_ok = ?, last_test_detail = ? "
                       "WHERE id = 1", [_now(), outcome.ok, outcome.message])
            if outcome.ok:
                record_consent(tx, config, scope=f"account:{info.username}", state="granted", by=by,
                               details="campaign account test succeeded")
            elif outcome.reason == "consent_required":
                record_consent(tx, config, scope=ORGANIZATION, state="required", by=by,
                               details="AADSTS65001 when testing the campaign account")
                record_consent(tx, config, scope=f"account:{info.username}", state="required", by=by,
                               details="AADSTS65001 when testing the campaign account")

        self.m365.crm.store.write(run)


def _public(info: CampaignAccountInfo | None) -> dict[str, Any] | None:
    return None if info is None else {"mode": info.mode, "username": info.username}
