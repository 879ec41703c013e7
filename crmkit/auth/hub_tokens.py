"""One sign-in: in a person's server of ``crmkit hub``, Graph tokens come from the hub, not a second sign-in.

The hub signed the person in at the tenant and keeps their tokens (access, refresh, id_token) in its encrypted
auth state, refreshing them itself (oauthenticator's ``refresh_user``, at most ``auth_refresh_age`` apart,
when the access token no longer works at the tenant's user-data endpoint). The server asks for the current ones
with its own API token: ``GET $JUPYTERHUB_API_URL/users/$JUPYTERHUB_USER`` (the hub's roles give user and
server ``admin:auth_state!user``; ``/user`` would answer ``auth_state: null``). So the tokens live only in the
hub and, while used, in the memory of that person's kernel: never in the CRM database, a file, a log, an
environment variable, or another person's server (whose API token is refused for this user).

:class:`HubTokens` is a :data:`crmkit.graph.TokenProvider` source; :func:`hub_tokens_from_env` builds it in
team mode inside a hub's server and returns None anywhere else (single-user mode keeps its MSAL caches).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from ..http import make_http_client
from ._errors import SignInRequired

__all__ = ["HubAccount", "HubTokens", "hub_tokens_from_env"]

log = logging.getLogger("crmkit.auth")

ENV_API_URL, ENV_API_TOKEN, ENV_USER = "JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER"


@dataclass(frozen=True)
class HubAccount:
    """Who the hub's tokens act as (from the id_token's claims and the hub's user data; no token here)."""

    username: str  # the UPN, e.g. anna.schmidt@contoso.example
    display_name: str | None
    tenant_id: str | None
    object_id: str | None

    @property
    def home_account_id(self) -> str:
        return f"{self.object_id}.{self.tenant_id}"


def _claims(jwt: str) -> dict[str, Any]:
    """A JWT's payload, read WITHOUT checking its signature: only for naming the account and timing. The hub got
    the token from the tenant's token endpoint over TLS; whoever relies on who a person is checks the id_token
    itself (crmkit.auth.id_token at the hub's spawn)."""
    try:
        part = jwt.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class HubTokens:
    """The person's current tokens from the hub that spawned this server.

    Args:
        api_url: ``$JUPYTERHUB_API_URL`` (``http://127.0.0.1:PORT/hub/api``).
        api_token: ``$JUPYTERHUB_API_TOKEN``, the server's own token at the hub (not a Microsoft token).
        user: ``$JUPYTERHUB_USER``.
        http: the client to ask through (default: one from :func:`crmkit.http.make_http_client`, closed by
            :meth:`close`; an injected one stays the caller's).
        refresh_wait_s: after Graph refused a token (``force_refresh``), how long to wait for the hub to hand out
            a newer one; the hub refreshes at most every ``auth_refresh_age`` seconds.
        poll_s: how often to ask the hub meanwhile.
        sleep: how to wait (tests pass a fake clock's).
    """

    def __init__(self, api_url: str, api_token: str, user: str, *, http: httpx.Client | None = None,
                 refresh_wait_s: float = 45.0, poll_s: float = 2.0,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        if not api_url or not api_token or not user:
            raise ValueError("the hub's API URL, the server's API token and the hub user are all needed")
        self.api_url = api_url.rstrip("/")
        self.user = user
        self._api_token = api_token
        self._own_http = http is None
        self.http = http if http is not None else make_http_client()
        self.refresh_wait_s = refresh_wait_s
        self.poll_s = poll_s
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last: str | None = None  # the access token handed out last (to tell a refreshed one from it)

    def __repr__(self) -> str:  # never the API token
        return f"<HubTokens user={self.user!r} hub={self.api_url}>"

    def _auth_state(self) -> dict[str, Any]:
        url = f"{self.api_url}/users/{quote(self.user, safe='')}"
        try:
            r = self.http.get(url, headers={"Authorization": f"token {self._api_token}"})
        except httpx.HTTPError as exc:
            raise SignInRequired(f"The hub at {self.api_url} did not answer ({type(exc).__name__}); "
                                 "reload the page or sign in at the hub again.") from None
        if r.status_code in (401, 403):
            raise SignInRequired(f"The hub refused this server's request for {self.user}'s tokens "
                                 f"({r.status_code}); sign in at the hub again.")
        if r.status_code != 200:
            raise SignInRequired(f"The hub answered {r.status_code} when asked for {self.user}'s tokens; "
                                 "sign in at the hub again.")
        state = r.json().get("auth_state")
        if not isinstance(state, dict) or not state.get("access_token"):
            raise SignInRequired(f"The hub gives this server no tokens for {self.user} (no auth state: the hub "
                                 "needs enable_auth_state and the role scope admin:auth_state!user); sign in at "
                                 "the hub again.")
        return state

    def access_token(self, force_refresh: bool = False) -> str:
        """The current access token for Graph. ``force_refresh`` (Graph refused the last one): wait up to
        ``refresh_wait_s`` for the hub to hand out another.

        Raises:
            SignInRequired: the hub does not answer, refuses, holds no tokens, or has no newer token in time
                (its refresh failed: the person signs in at the hub again).
        """
        with self._lock:
            token = str(self._auth_state()["access_token"])
            if force_refresh and token == self._last:
                deadline = time.monotonic() + self.refresh_wait_s
                while token == self._last:
                    if time.monotonic() >= deadline:
                        raise SignInRequired(f"The hub has no newer token for {self.user} than the one Microsoft "
                                             "refused; sign in at the hub again.")
                    self._sleep(self.poll_s)
                    token = str(self._auth_state()["access_token"])
                log.info("The hub handed out a refreshed token for %s", self.user)
            self._last = token
            return token

    def provider(self) -> Callable[[bool], str]:
        """A :data:`crmkit.graph.TokenProvider`: ``provider(force_refresh) -> access token``."""
        return lambda force: self.access_token(force_refresh=force)

    def account(self) -> HubAccount:
        """The account the tokens act as (tenant and object id from the id_token, names from the hub's data)."""
        state = self._auth_state()
        claims = _claims(str(state.get("id_token") or "")) or _claims(str(state["access_token"]))
        user = state.get("oauth_user") if isinstance(state.get("oauth_user"), Mapping) else {}
        upn = (user.get("userPrincipalName") or claims.get("preferred_username") or claims.get("upn")
               or self.user)
        return HubAccount(str(upn), user.get("displayName") or claims.get("name"),
                          claims.get("tid"), user.get("id") or claims.get("oid"))

    def close(self) -> None:
        if self._own_http:
            self.http.close()


def hub_tokens_from_env(environ: Mapping[str, str] | None = None, *,
                        http: httpx.Client | None = None) -> HubTokens | None:
    """:class:`HubTokens` for this server when it is a hub's server in team mode (``CRMKIT_MODE=team`` and the
    three ``JUPYTERHUB_*`` variables JupyterHub sets); None otherwise."""
    from ..mode import current_mode

    env = os.environ if environ is None else environ
    if current_mode(env) != "team":
        return None
    api_url, token, user = (env.get(k, "").strip() for k in (ENV_API_URL, ENV_API_TOKEN, ENV_USER))
    if not (api_url and token and user):
        return None
    return HubTokens(api_url, token, user, http=http)
