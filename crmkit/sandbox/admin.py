"""Admin API (``/_sandbox/...``) for tests, benchmarks and the demo.

Unauthenticated on purpose: the server only listens on 127.0.0.1 and the tenant is a sandbox.
Faults never apply here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import (
    GRAPH_BASE,
    LOGIN_URL,
    SANDBOX_AUTHORITY,
    SANDBOX_CLIENT_ID,
    SANDBOX_DAEMON_CLIENT_ID,
    SANDBOX_DOMAIN,
    SANDBOX_TENANT_ID,
    SANDBOX_UNCONSENTED_CLIENT_ID,
    SPECIAL_USERS,
)
from .core import browser_origin, sandbox_of
from .faults import FaultConfig
from .identity import parse_scopes
from .tokens import app_access_token, user_access_token


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        return {}
    import json

    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def info(request: Request) -> Response:
    origin = browser_origin(request)
    return JSONResponse({
        "url": origin,
        "identity": SANDBOX_AUTHORITY,
        "login": LOGIN_URL,
        "graph": GRAPH_BASE,
        "teams_view": f"{origin}/teams",
        "device_login": f"{origin}/devicelogin",
        "admin": f"{origin}/_sandbox",
        "tenant_id": SANDBOX_TENANT_ID,
        "domain": SANDBOX_DOMAIN,
        "client_id": SANDBOX_CLIENT_ID,
        "unconsented_client_id": SANDBOX_UNCONSENTED_CLIENT_ID,
        "daemon_client_id": SANDBOX_DAEMON_CLIENT_ID,
        "special_users": [dataclasses.asdict(u) for u in SPECIAL_USERS],
        "state_dir": str(sandbox_of(request).state_dir),
    })


async def reset(request: Request) -> Response:
    sandbox_of(request).reset()
    return JSONResponse({"status": "reset"})


async def faults(request: Request) -> Response:
    sb = sandbox_of(request)
    if request.method == "PUT":
        try:
            data = await _json(request)
            # Unspecified fields go back to their defaults, so a PUT fully describes the faults.
            sb.faults = FaultConfig.from_dict(data)
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
    return JSONResponse(sb.faults.as_dict())


async def limits(request: Request) -> Response:
    sb = sandbox_of(request)
    if request.method == "PUT":
        try:
            sb.throttle.limits.update(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        sb.throttle.reset()
    return JSONResponse(sb.throttle.limits.as_dict())


async def config(request: Request) -> Response:
    sb = sandbox_of(request)
    if request.method == "PUT":
        try:
            sb.settings.update(await _json(request))
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
    return JSONResponse(sb.settings.as_dict())


async def clock(request: Request) -> Response:
    """GET/PUT ``{"offset_s": seconds}``: the tenant's clock runs that far from real time (reset: 0).

    It stamps messages, chats and every response's ``Date`` header; tokens keep real time.
    """
    sb = sandbox_of(request)
    if request.method == "PUT":
        try:
            data = await _json(request)
            unknown = set(data) - {"offset_s"}
            if unknown:
                raise ValueError(f"unknown clock settings: {sorted(unknown)}")
            offset = float(data.get("offset_s", 0.0))
            if offset != offset or abs(offset) > 10 * 365 * 86400:
                raise ValueError("offset_s must be a number of seconds within ten years")
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        sb.clock.offset_s = offset
    return JSONResponse({"offset_s": sb.clock.offset_s, "now": sb.clock.now().isoformat()})


async def counters(request: Request) -> Response:
    sb = sandbox_of(request)
    if request.method == "DELETE":
        sb.counters.reset()
    return JSONResponse(sb.counters.snapshot())


async def messages(request: Request) -> Response:
    sb = sandbox_of(request)
    chat_id = request.query_params.get("chat_id")
    msgs = sb.state.messages(chat_id, newest_first=False) if chat_id else sb.state.all_messages()
    return JSONResponse({"count": len(msgs), "value": msgs})


async def chats(request: Request) -> Response:
    sb = sandbox_of(request)
    out = []
    for ch in sb.state.chats():
        out.append({**ch, "members": [m["user_id"] for m in sb.state.chat_members(ch["id"])],
                    "message_count": sb.state.count_messages(ch["id"])})
    return JSONResponse({"count": len(out), "value": out})


async def users(request: Request) -> Response:
    sb = sandbox_of(request)
    out = []
    for u in sorted(sb.state.users(), key=lambda u: u.userPrincipalName):
        d = dataclasses.asdict(u)
        out.append(d)
    return JSONResponse({"count": len(out), "value": out})


async def remove_user(request: Request) -> Response:
    """DELETE a user (by object id or UPN) from the directory, as when someone leaves; reset restores them."""
    user = sandbox_of(request).state.remove_user(request.path_params["key"])
    if user is None:
        return _bad("unknown user", 404)
    return JSONResponse({"removed": user.id, "userPrincipalName": user.userPrincipalName})


async def account_enabled(request: Request) -> Response:
    """PUT ``{"accountEnabled": false}`` on a user (object id or UPN): an admin blocking (or unblocking) the
    account, as Entra's ``PATCH /users/{id}`` does; its sign-ins and refreshes fail from then on."""
    try:
        data = await _json(request)
    except ValueError as exc:
        return _bad(str(exc))
    enabled = data.get("accountEnabled")
    if not isinstance(enabled, bool):
        return _bad("accountEnabled must be true or false")
    user = sandbox_of(request).state.set_account_enabled(request.path_params["key"], enabled)
    if user is None:
        return _bad("unknown user", 404)
    return JSONResponse({"id": user.id, "userPrincipalName": user.userPrincipalName,
                         "accountEnabled": user.accountEnabled})


async def revoke_sign_in_sessions(request: Request) -> Response:
    """POST on a user (object id or UPN): their refresh tokens and the tenant's browser sessions end, as Graph's
    ``POST /users/{id}/revokeSignInSessions`` does; access tokens already issued keep working until they expire."""
    sb = sandbox_of(request)
    user = sb.state.user(request.path_params["key"])
    if user is None:
        return _bad("unknown user", 404)
    return JSONResponse({"id": user.id, "refresh_tokens": sb.state.revoke_refresh_tokens(user.id),
                         "browser_sessions": sb.state.end_browser_sessions_of(user.id)})


async def consent(request: Request) -> Response:
    """PUT {"client_id": ..., "admin_consented": bool} toggles org-wide consent for an app."""
    sb = sandbox_of(request)
    try:
        data = await _json(request)
    except ValueError as exc:
        return _bad(str(exc))
    client_id = str(data.get("client_id", ""))
    if not sb.state.set_admin_consent(client_id, bool(data.get("admin_consented", True))):
        return _bad(f"unknown client_id {client_id!r}", 404)
    app = sb.state.app(client_id)
    assert app is not None
    return JSONResponse({"client_id": client_id, "admin_consented": app.admin_consented})


def _registrable_redirect_uri(uri: object) -> str:
    """A redirect URI as Entra lets one be registered: absolute, no fragment, http only on loopback."""
    from urllib.parse import urlsplit

    if not isinstance(uri, str) or not uri or len(uri) > 256 or any(c.isspace() for c in uri):
        raise ValueError(f"not a redirect URI: {uri!r}")
    parts = urlsplit(uri)
    if not parts.scheme or not (parts.netloc or parts.scheme not in ("http", "https")) or "://" not in uri:
        raise ValueError(f"not an absolute URI: {uri!r}")
    if parts.fragment or "#" in uri:
        raise ValueError(f"a redirect URI has no fragment: {uri!r}")
    if parts.scheme == "http" and parts.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise ValueError(f"http is allowed for loopback only, use https: {uri!r}")
    return uri


async def redirect_uris(request: Request) -> Response:
    """GET/PUT ``{"redirect_uris": [...]}``: the redirect URIs registered for an app (PUT replaces them)."""
    sb = sandbox_of(request)
    client_id = request.path_params["client_id"]
    app = sb.state.app(client_id)
    if app is None:
        return _bad(f"unknown client_id {client_id!r}", 404)
    if request.method == "PUT":
        try:
            data = await _json(request)
            uris = data.get("redirect_uris")
            if not isinstance(uris, list) or len(uris) > 256:
                raise ValueError("redirect_uris must be a list of at most 256 URIs")
            sb.state.set_redirect_uris(client_id, [_registrable_redirect_uri(u) for u in uris])
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        app = sb.state.app(client_id)
        assert app is not None
    return JSONResponse({"client_id": client_id, "kind": app.kind, "redirect_uris": list(app.redirect_uris)})


async def register_app(request: Request) -> Response:
    """POST ``{"name", "delegated_scopes": [...], "redirect_uris": [...]}``: a confidential web app (a client with
    a secret, e.g. ``crmkit hub``'s JupyterHub), admin-consented for those scopes. The answer carries its
    ``client_id`` and a generated ``client_secret``, once: the sandbox keeps only the secret's sha256, as for the
    daemon app, so nothing can show it again."""
    import secrets
    import uuid

    from .state import DELEGATED_SCOPES, App, sha256

    sb = sandbox_of(request)
    try:
        data = await _json(request)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 120:
            raise ValueError("name must be a non-empty string of at most 120 characters")
        scopes = data.get("delegated_scopes", ["User.Read"])
        known = {s.lower(): s for s in DELEGATED_SCOPES}
        if not isinstance(scopes, list) or any(not isinstance(s, str) or s.lower() not in known for s in scopes):
            raise ValueError(f"delegated_scopes must be a list of {', '.join(DELEGATED_SCOPES)}")
        uris = data.get("redirect_uris")
        if not isinstance(uris, list) or not 1 <= len(uris) <= 256:
            raise ValueError("redirect_uris must be a list of 1 to 256 URIs")
        registered = tuple(_registrable_redirect_uri(u) for u in uris)
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    secret = secrets.token_urlsafe(32)
    app = App(str(uuid.uuid4()), name.strip(), "confidential", sha256(secret),
              tuple(dict.fromkeys(known[s.lower()] for s in scopes)), (), True, registered)
    sb.state.add_app(app)
    return JSONResponse({"client_id": app.client_id, "client_secret": secret, "name": app.name, "kind": app.kind,
                         "delegated_scopes": list(app.delegated_scopes), "redirect_uris": list(registered)},
                        status_code=201, headers={"Cache-Control": "no-store"})


async def mint_token(request: Request) -> Response:
    """Mint an access token without a sign-in (benchmarks, expiry tests).

    Body: {"upn": ..., "scopes": [...], "client_id": ..., "lifetime_s": 3599} for a user token, or
    {"app_only": true, "client_id": daemon id} for an application token.  ``lifetime_s`` may be
    negative to get an already expired token.
    """
    sb = sandbox_of(request)
    try:
        data = await _json(request)
    except ValueError as exc:
        return _bad(str(exc))
    lifetime = float(data.get("lifetime_s", sb.settings.access_token_lifetime_s))
    if data.get("app_only"):
        app = sb.state.app(str(data.get("client_id", SANDBOX_DAEMON_CLIENT_ID)))
        if app is None:
            return _bad("unknown client_id", 404)
        roles = list(data.get("roles") or app.app_roles)
        return JSONResponse({"access_token": app_access_token(sb.key, client_id=app.client_id, roles=roles,
                                                              lifetime_s=lifetime)})
    user = sb.state.user(str(data.get("upn", "")))
    if user is None:
        return _bad("unknown upn", 404)
    app = sb.state.app(str(data.get("client_id", SANDBOX_CLIENT_ID)))
    if app is None:
        return _bad("unknown client_id", 404)
    scopes = data.get("scopes")
    graph = parse_scopes(" ".join(scopes), app, consented=set(app.delegated_scopes)).graph if scopes else list(
        app.delegated_scopes)
    token = user_access_token(sb.key, user=user, client_id=app.client_id, scopes=graph, lifetime_s=lifetime)
    return JSONResponse({"access_token": token, "scopes": graph, "user_id": user.id})


routes = [
    Route("/_sandbox/health", health, methods=["GET"]),
    Route("/_sandbox/info", info, methods=["GET"]),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/faults", faults, methods=["GET", "PUT"]),
    Route("/_sandbox/limits", limits, methods=["GET", "PUT"]),
    Route("/_sandbox/config", config, methods=["GET", "PUT"]),
    Route("/_sandbox/clock", clock, methods=["GET", "PUT"]),
    Route("/_sandbox/counters", counters, methods=["GET", "DELETE"]),
    Route("/_sandbox/messages", messages, methods=["GET"]),
    Route("/_sandbox/chats", chats, methods=["GET"]),
    Route("/_sandbox/users", users, methods=["GET"]),
    Route("/_sandbox/users/{key}", remove_user, methods=["DELETE"]),
    Route("/_sandbox/users/{key}/account_enabled", account_enabled, methods=["PUT"]),
    Route("/_sandbox/users/{key}/revoke_sign_in_sessions", revoke_sign_in_sessions, methods=["POST"]),
    Route("/_sandbox/consent", consent, methods=["PUT"]),
    Route("/_sandbox/apps", register_app, methods=["POST"]),
    Route("/_sandbox/apps/{client_id}/redirect_uris", redirect_uris, methods=["GET", "PUT"]),
    Route("/_sandbox/token", mint_token, methods=["POST"]),
]
