"""One MSAL public client per (app registration, token cache) per process, over crmkit's HTTP seam."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import msal

from ..config import TeamsConfig
from ..errors import AuthError, SignInCancelled
from ..http import MsalHttpAdapter, shared_http
from ..http import _close_shared as _close_shared  # tests drop the shared clients through here
from ._errors import auth_error, is_personal_account
from .consent import admin_consent_url

__all__ = ["DeviceSignIn", "Identity"]

log = logging.getLogger("crmkit.auth")

_apps: dict[tuple[Any, ...], msal.PublicClientApplication] = {}
_apps_lock = threading.Lock()


# crmkit's UI languages as the market codes Entra takes for the device-code message.
_MARKETS = {"de": "de-DE", "en": "en-US"}


class Identity:
    """MSAL for one configuration: device code, password (ROPC), silent tokens.

    Args:
        config: tenant, client id, hosts.
        http: the ``httpx.Client`` MSAL sends through (default: one per process and target, from
            :func:`crmkit.http.make_http_client`, which routes the sandbox hosts to the sandbox).
            An injected client stays the caller's to close.
    """

    def __init__(self, config: TeamsConfig, *, http: httpx.Client | None = None) -> None:
        self.config = config
        self.http = http if http is not None else shared_http(config.sandbox_url)

    def __repr__(self) -> str:
        return f"<Identity {self.config.describe()}>"

    def consent_url(self) -> str:
        return admin_consent_url(self.config)

    def app(self, cache: msal.TokenCache, *, fresh: bool = False) -> msal.PublicClientApplication:
        """The shared app for ``cache`` (``fresh=True``: a new one, bypassing MSAL's replay of recent
        identical failed requests, e.g. when an admin has just granted consent)."""
        key = (self.config.client_id, self.config.authority, id(cache), id(self.http))
        with _apps_lock:
            app = None if fresh else _apps.get(key)
            if app is None:
                app = msal.PublicClientApplication(
                    self.config.client_id, authority=self.config.authority, token_cache=cache,
                    http_client=MsalHttpAdapter(self.http),
                    # The sandbox host is unknown to Microsoft's instance discovery; a real tenant
                    # on a well-known host skips it anyway.
                    instance_discovery=False if self.config.sandbox else None,
                )
                if not fresh:
                    _apps[key] = app
            return app

    def error(self, result: Mapping[str, Any], who: str | None = None) -> AuthError:
        return auth_error(result, consent_url=self.consent_url, who=who)

    # -- flows ------------------------------------------------------------------------------------

    def silent(self, app: msal.PublicClientApplication, home_account_id: str, *,
               force_refresh: bool = False) -> dict[str, Any] | None:
        """A token from the cache (refreshing if needed); None when the account is not cached."""
        account = next((a for a in app.get_accounts() if a.get("home_account_id") == home_account_id), None)
        if account is None:
            return None
        result = app.acquire_token_silent_with_error(
            self.config.graph_scopes, account=account, force_refresh=force_refresh
        )
        if result is None:
            return None
        if "access_token" not in result:
            raise self.error(result, who=account.get("username"))
        return result

    def password(self, app: msal.PublicClientApplication, username: str, password: str) -> dict[str, Any]:
        """Resource-owner password sign-in (deprecated by Microsoft; no MFA). Raises AuthError."""
        with warnings.catch_warnings():
            # crmkit offers this flow on purpose, as the reference does, and says so in the UI.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*deprecated.*")
            result = app.acquire_token_by_username_password(username, password, scopes=self.config.graph_scopes)
        if "access_token" not in result:
            raise self.error(result, who=username)
        if is_personal_account(result.get("id_token_claims")):
            raise self.error({"error": "invalid_grant", "error_codes": [50020]}, who=username)
        return result

    def start_device_flow(
        self, app: msal.PublicClientApplication, *, timeout: float | None = None,
        on_success: Callable[[dict[str, Any]], Any] | None = None, lang: str | None = None,
    ) -> DeviceSignIn:
        """Begin a device-code sign-in; the code is available at once, the wait runs in a thread.

        ``lang`` ("de"/"en") asks for Microsoft's ``message`` in that language: Entra localises it
        with ``?mkt=xx-XX`` on the request. That is all the protocol carries (no ``ui_locales``, no
        ``verification_uri_complete``); the sign-in page itself follows the browser's language.
        """
        market = _MARKETS.get(lang or "")
        extra: dict[str, Any] = {"params": {"mkt": market}} if market else {}
        flow = app.initiate_device_flow(scopes=self.config.graph_scopes, **extra)
        if "user_code" not in flow:
            raise self.error(flow)
        return DeviceSignIn(self, app, flow, timeout=timeout, on_success=on_success)

    def close(self) -> None:
        """Nothing to release: MSAL apps and their HTTP client are shared per process."""


def account_of(app: msal.PublicClientApplication, result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cache account a token result belongs to (MSAL's result has claims, not the account)."""
    claims = result.get("id_token_claims") or {}
    oid, tid = claims.get("oid"), claims.get("tid")
    for acct in app.get_accounts():
        if oid and tid and acct.get("home_account_id") == f"{oid}.{tid}":
            return acct
    username = claims.get("preferred_username")
    matches = app.get_accounts(username=username) if username else []
    return matches[0] if matches else None


class DeviceSignIn:
    """A device-code sign-in waiting in the background.

    Show :attr:`message` (or :attr:`verification_uri` and :attr:`user_code`); call :meth:`cancel`
    to stop, :meth:`wait` to block for the result. Callbacks added with :meth:`add_done_callback`
    run on the waiting thread when it ends, before :meth:`wait` returns. The device code is never exposed.
    """

    def __init__(
        self, identity: Identity, app: msal.PublicClientApplication, flow: dict[str, Any], *,
        timeout: float | None, on_success: Callable[[dict[str, Any]], Any] | None,
    ) -> None:
        self.user_code: str = flow["user_code"]
        self.verification_uri: str = flow["verification_uri"]
        self.message: str = flow.get("message") or (
            f"To sign in, open {self.verification_uri} and enter the code {self.user_code}."
        )
        expires = float(flow.get("expires_at") or time.time() + 900)
        self.expires_at = min(expires, time.time() + timeout) if timeout else expires
        self.status = "waiting"  # waiting | signed_in | failed | cancelled | timed_out
        self.result: Any = None
        self.error: AuthError | None = None
        self._identity = identity
        self._app = app
        self._flow = flow
        self._on_success = on_success
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._finished = False
        self._callbacks: list[Callable[[DeviceSignIn], None]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="crmkit-device-sign-in", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<DeviceSignIn {self.status} code={self.user_code} at {self.verification_uri}>"

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.expires_at - time.time())

    def cancel(self) -> None:
        """Stop waiting (takes effect within about a second)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the sign-in ends; return the result or raise its AuthError.

        Raises:
            AuthError: the sign-in failed (``SignInCancelled`` when cancelled or timed out).
            TimeoutError: ``timeout`` passed while the sign-in was still waiting.
        """
        if not self._done.wait(timeout):
            raise TimeoutError("The device-code sign-in is still waiting for the user.")
        if self.error is not None:
            raise self.error
        return self.result

    def add_done_callback(self, fn: Callable[[DeviceSignIn], None]) -> None:
        with self._lock:
            if not self._finished:
                self._callbacks.append(fn)
                return
        fn(self)

    def _stop_now(self, flow: dict[str, Any]) -> bool:
        return self._cancel.is_set() or time.time() >= self.expires_at

    def _run(self) -> None:
        try:
            result = self._app.acquire_token_by_device_flow(self._flow, exit_condition=self._stop_now)
            if "access_token" in result:
                if is_personal_account(result.get("id_token_claims")):
                    raise self._identity.error({"error": "invalid_grant", "error_codes": [50020]})
                self.result = self._on_success(result) if self._on_success else result
                self.status = "signed_in"
            elif self._cancel.is_set():
                self.status = "cancelled"
                self.error = SignInCancelled("The sign-in was cancelled.", error="cancelled")
            elif time.time() >= self.expires_at and result.get("error") in ("authorization_pending", "slow_down"):
                self.status = "timed_out"
                self.error = SignInCancelled(
                    "Nobody completed the sign-in in time; the code has expired. Start the sign-in again.",
                    error="timed_out",
                )
            else:
                err = self._identity.error(result)
                self.status = "cancelled" if isinstance(err, SignInCancelled) else "failed"
                self.error = err
        except AuthError as exc:
            self.status, self.error = "failed", exc
        except Exception as exc:  # network or store failure: surface it typed, keep the thread quiet
            log.warning("Device-code sign-in failed: %s", type(exc).__name__)
            self.status = "failed"
            self.error = AuthError(f"The sign-in could not complete: {type(exc).__name__}: {exc}")
        finally:
            self._flow.pop("device_code", None)  # not needed any more; keep it out of memory dumps
            with self._lock:
                self._finished = True
                callbacks, self._callbacks = self._callbacks, []
            for fn in callbacks:
                try:
                    fn(self)
                except Exception:
                    log.exception("A sign-in callback failed")
            self._done.set()  # after the callbacks, so wait() returns once views are updated
