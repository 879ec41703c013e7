"""The hub's authenticator, whose logout ends the person's access (loaded inside the hub, like spawner.py).

JupyterHub's own logout only clears the browser's cookies and deletes the OAuth tokens of that one browser
session: a copy of the old ``jupyterhub-hub-login`` cookie keeps working until ``cookie_max_age_days`` (the
user's ``cookie_id`` it carries never changes), and the old ``jupyterhub-user-<name>`` cookie of their server
keeps working while the server caches the hub's answer for it (``HubOAuth.cache_max_age``, 300 s by default).

:class:`CrmkitAuthenticator` is GenericOAuthenticator (configured as ``c.GenericOAuthenticator``) with a logout
handler that also rotates the user's ``cookie_id`` (every hub cookie issued before is worthless at once) and
deletes the OAuth tokens of all the person's browser sessions, so every server cookie is refused as soon as the
server asks the hub again; the generated config makes the servers ask often (``config.SERVER_AUTH_CACHE_S``).
"""

from __future__ import annotations

from typing import Any

from jupyterhub import orm
from jupyterhub.utils import new_token
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler

from .authenticator import IdTokenRefresh

__all__ = ["CrmkitAuthenticator", "EndAccessLogoutHandler", "end_access"]


def end_access(db: Any, user: orm.User) -> int:
    """Make every cookie ``user`` holds worthless: a new ``cookie_id`` (the hub cookie carries the old one) and
    no OAuth token of any browser session (the server cookies carry those). Tokens without a session (the
    servers' own API tokens, tokens a person made on the token page) stay. Returns the tokens deleted."""
    user.cookie_id = new_token()
    deleted = 0
    for token in db.query(orm.APIToken).filter(orm.APIToken.user_id == user.id,
                                               orm.APIToken.session_id.isnot(None)):
        db.delete(token)
        deleted += 1
    db.commit()
    return deleted


class EndAccessLogoutHandler(OAuthLogoutHandler):
    """``/hub/logout``: JupyterHub's logout (cookies cleared, this session's tokens gone), then :func:`end_access`
    for the user who was signed in."""

    async def handle_logout(self) -> None:
        user = self.current_user  # still the signed-in user here: JupyterHub forgets it after handle_logout
        await super().handle_logout()
        if user is not None and getattr(user, "orm_user", None) is not None:
            deleted = end_access(self.db, user.orm_user)
            self.log.info("Logout ended every session of %s (%d session tokens revoked)", user.name, deleted)


class CrmkitAuthenticator(IdTokenRefresh, GenericOAuthenticator):
    """GenericOAuthenticator (its configuration is ``c.GenericOAuthenticator``'s) whose logout ends access and
    whose refresh keeps the id_token fresh (crmkit/hub/authenticator.py)."""

    logout_handler = EndAccessLogoutHandler
