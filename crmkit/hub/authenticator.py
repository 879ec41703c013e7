"""The hub's refresh of a person's sign-in: a fresh id_token before the old one runs out (loaded inside the hub).

The spawner verifies the id_token of the person's auth state before every spawn (``hooks.check_sign_in``), but
oauthenticator's ``refresh_user`` only uses the refresh token once the access token stops working, and keeps the
old auth state (and its id_token) otherwise. Entra's id_token lives 1 h and an access token may outlive it, so a
person whose server stopped and who spawned again in that window was refused ("your sign-in has expired") though
their session was fine. :class:`IdTokenRefresh` also takes oauthenticator's refresh-token path when the stored
id_token has expired or will within :data:`ID_TOKEN_MARGIN_S`; a refused refresh token means signing in again.
The refresh asks for the sign-in's scopes (Entra's v2.0 token endpoint requires ``scope`` on a refresh; without
``openid`` no id_token comes back, without crmkit's Graph permissions the new access token lacks them).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt

__all__ = ["ID_TOKEN_MARGIN_S", "IdTokenRefresh", "id_token_expires_at"]

ID_TOKEN_MARGIN_S = 60  # refresh this long before the id_token's exp (a spawn must verify it after the refresh)


def id_token_expires_at(token: Any) -> float | None:
    """The ``exp`` of an id_token (not verified here: the spawn verifies it), or None if it has no readable one."""
    if not isinstance(token, str) or not token:
        return None
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _id_token_due(auth_state: dict[str, Any] | None, now: float) -> bool:
    """Whether ``auth_state`` has a refresh token and an id_token that has expired or will within the margin."""
    if not auth_state or not auth_state.get("refresh_token") or not auth_state.get("id_token"):
        return False
    exp = id_token_expires_at(auth_state["id_token"])
    return exp is None or exp - now < ID_TOKEN_MARGIN_S


class IdTokenRefresh:
    """Mixin for an ``OAuthenticator`` (before it in the bases): ``refresh_user`` refreshes with the refresh token
    when the id_token is due, else does what oauthenticator does. One refresh per person at a time: a refresh
    token is single use (the tenant rotates it), and a page's parallel requests each ask for a refresh."""

    _id_refresh_locks: dict[str, asyncio.Lock]

    def build_refresh_token_request_params(self, refresh_token: str) -> dict[str, Any]:
        params: dict[str, Any] = super().build_refresh_token_request_params(refresh_token)  # type: ignore[misc]
        scopes = getattr(self, "scope", None)
        if scopes and "scope" not in params:
            params["scope"] = " ".join(scopes)
        return params

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        base = super().refresh_user  # type: ignore[misc]
        if not getattr(self, "enable_auth_state", False) or getattr(self, "refresh_user_hook", None) is not None:
            return await base(user, handler, **kwargs)
        locks = self.__dict__.setdefault("_id_refresh_locks", {})
        async with locks.setdefault(user.name, asyncio.Lock()):
            auth_state = await user.get_auth_state()
            if not _id_token_due(auth_state, time.time()):  # (another request may just have refreshed it)
                return await base(user, handler, **kwargs)
            return await self._refresh_id_token(user, auth_state, handler)

    async def _refresh_id_token(self, user: Any, auth_state: dict[str, Any], handler: Any) -> Any:
        """oauthenticator's refresh-token exchange and auth model; False (sign in again) if the tenant refuses."""
        log = self.log  # type: ignore[attr-defined]
        refresh_token = auth_state["refresh_token"]
        log.info("Refreshing the sign-in of %s: its id_token has expired or is about to", user.name)
        try:
            token_info = await self.get_token_info(  # type: ignore[attr-defined]
                handler, self.build_refresh_token_request_params(refresh_token))
        except Exception as exc:  # the tenant's answer names no token; nothing of it is logged but its kind
            log.info("The refresh token of %s was refused (%s): a new sign-in is required", user.name,
                     getattr(exc, "status_code", type(exc).__name__))
            return False
        if not token_info.get("refresh_token"):
            token_info["refresh_token"] = refresh_token  # the tenant may keep the old one valid
        try:
            auth_model = await self._token_to_auth_model(token_info)  # type: ignore[attr-defined]
        except Exception as exc:
            log.error("The refreshed tokens of %s did not work (%s): a new sign-in is required", user.name,
                      type(exc).__name__)
            return False
        if not auth_model:
            return False
        # saved before the lock is let go, so a request waiting on it sees the new id_token (JupyterHub saves the
        # returned auth state too, after this returns)
        await user.save_auth_state(auth_model["auth_state"])
        return auth_model
