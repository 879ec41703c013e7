"""Sandbox identity platform: discovery, device code, token grants, user realm, errors.

Error responses follow Entra's shape (``error``, ``error_description`` starting with the
AADSTS code, ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``) so that MSAL
hands them to crmkit exactly as it would from Microsoft. Protocol responses stay English, as
Entra's ``error_description`` does; a page shows the same error in the person's language
(:meth:`IdentityErrorResponse.text`). The device-code ``message`` follows ``mkt`` (``?mkt=de-DE``), as Entra's does.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import SANDBOX_DOMAIN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID, SANDBOX_TENANT_NAME, i18n
from .core import Sandbox, browser_origin, public_origin, request_ids, sandbox_of, utc_now
from .directory import SandboxUser
from .state import DELEGATED_SCOPES, OIDC_SCOPES, App, sha256
from .tokens import app_access_token, client_info, id_token, new_refresh_token, user_access_token

GRAPH_PREFIXES = (
    "https://graph.crmkit.localhost/",
    "https://graph.microsoft.com/",
    "00000003-0000-0000-c000-000000000000/",
)
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
# The sandbox's other resource URLs: its Graph host on any port, and every loopback origin (the sandbox listens
# on loopback only, so that is the host a client was given: kiota's Azure provider asks for
# "<scheme>://<host:port>/.default" of its base URL).
_OWN_RESOURCE = re.compile(r"https?://(?:graph\.crmkit\.localhost|localhost|127\.0\.0\.1|\[::1\])(?::\d{1,5})?/",
                           re.IGNORECASE)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
_USER_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
# Tenant path segments this sandbox answers for.
_TENANT_ALIASES = {SANDBOX_TENANT_ID, SANDBOX_DOMAIN, "organizations", "common"}


@dataclass
class IdentityErrorResponse(Exception):
    """An Entra-style OAuth error (``error`` + AADSTS code) the sandbox answers with, as JSON or on a page.

    The server's answer, not crmkit's client-side ``crmkit.errors.AuthError`` family; hence the name.
    """

    error: str
    code: int
    description: str
    status: int = 400
    suberror: str | None = None
    # The values the page text (catalog "aadsts.<code>") fills in; the description has them already.
    detail: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"AADSTS{self.code}: {self.description}"

    def text(self, lang: i18n.Lang) -> str:
        """The error as a sign-in page shows it, in ``lang`` (English description if not in the catalog)."""
        key = f"aadsts.{self.code}"
        if not i18n.has(key):
            return str(self)
        try:
            return f"AADSTS{self.code}: {i18n.t(key, lang, **self.detail)}"
        except KeyError:  # a placeholder without a value: the English original is still true
            return str(self)

    def response(self, request: Request) -> JSONResponse:
        rid, crid = request_ids(request.scope)
        now = utc_now()
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        body: dict[str, Any] = {
            "error": self.error,
            "error_description": f"AADSTS{self.code}: {self.description} Trace ID: {rid} "
            f"Correlation ID: {crid} Timestamp: {stamp}",
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": rid,
            "correlation_id": crid,
            "error_uri": f"{public_origin(request)}/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        return JSONResponse(body, status_code=self.status, headers={"Cache-Control": "no-store"})


# -- errors, written once so the token endpoint and the sign-in page agree -----------------
def err_bad_password() -> IdentityErrorResponse:
    return IdentityErrorResponse("invalid_grant", 50126,
                                 "Error validating credentials due to invalid username or password.")


def err_mfa_required() -> IdentityErrorResponse:
    return IdentityErrorResponse(
        "invalid_grant", 50076,
        "Due to a configuration change made by your administrator, or because you moved to a new location, "
        f"you must use multi-factor authentication to access '{GRAPH_APP_ID}'.",
        suberror="basic_action", detail={"resource": GRAPH_APP_ID},
    )


def err_disabled() -> IdentityErrorResponse:
    return IdentityErrorResponse("invalid_grant", 50057, "The user account is disabled.")


def err_unknown_user(upn: str) -> IdentityErrorResponse:
    return IdentityErrorResponse(
        "invalid_grant", 50034,
        f"The user account {upn} does not exist in the {SANDBOX_DOMAIN} directory. To sign into this "
        "application, the account must be added to the directory.",
        detail={"upn": upn, "domain": SANDBOX_DOMAIN},
    )


def err_personal_account(upn: str, app: App | None) -> IdentityErrorResponse:
    app_part = f"'{app.client_id}'({app.name})" if app else "the application"
    return IdentityErrorResponse(
        "invalid_grant", 50020,
        f"User account '{upn}' from identity provider 'live.com' does not exist in tenant "
        f"'{SANDBOX_TENANT_NAME}' and cannot access the application {app_part} in that tenant. The account "
        "needs to be added as an external user in the tenant first. Sign out and sign in again with a "
        "different Azure Active Directory user account.",
        detail={"upn": upn, "tenant": SANDBOX_TENANT_NAME, "app": app_part},
    )


def err_consent(app: App) -> IdentityErrorResponse:
    return IdentityErrorResponse(
        "invalid_grant", 65001,
        f"The user or administrator has not consented to use the application with ID '{app.client_id}' "
        f"named '{app.name}'. Send an interactive authorization request for this user and resource.",
        suberror="consent_required",
    )


def err_missing(param: str) -> IdentityErrorResponse:
    return IdentityErrorResponse("invalid_request", 900144,
                                 f"The request body must contain the following parameter: '{param}'.",
                                 detail={"param": param})


def err_unknown_client(client_id: str) -> IdentityErrorResponse:
    return IdentityErrorResponse(
        "unauthorized_client", 700016,
        f"Application with identifier '{client_id}' was not found in the directory '{SANDBOX_TENANT_NAME}'. "
        "This can happen if the application has not been installed by the administrator of the tenant or "
        "consented to by any user in the tenant. You may have sent your authentication request to the "
        "wrong tenant.",
        detail={"client_id": client_id, "tenant": SANDBOX_TENANT_NAME},
    )


def _is_personal_domain(upn: str) -> bool:
    domain = upn.rpartition("@")[2].lower()
    return domain != SANDBOX_DOMAIN and "#ext#" not in upn.lower()


def authenticate(sb: Sandbox, upn: str, password: str, app: App | None, *, mfa_possible: bool) -> SandboxUser:
    """Check a username/password; raises IdentityErrorResponse with the AADSTS code Microsoft would use."""
    user = sb.state.user(upn.strip()) if upn else None
    if user is None:
        if upn and _is_personal_domain(upn):
            raise err_personal_account(upn, app)
        raise err_unknown_user(upn)
    # Constant-time comparison; passwords are never logged.
    if not hmac.compare_digest(password.encode(), SANDBOX_PASSWORD.encode()):
        raise err_bad_password()
    if not user.accountEnabled:
        raise err_disabled()
    if user.mfa_required and not mfa_possible:
        raise err_mfa_required()
    return user


# -- scopes and consent -----------------------------------------------------------------
@dataclass
class ScopeRequest:
    graph: list[str]  # short names, e.g. ChatMessage.Send
    echo: list[str]  # as the response's "scope" should list them
    oidc: set[str]


def parse_scopes(raw: str, app: App, *, consented: set[str]) -> ScopeRequest:
    graph: list[str] = []
    echo: list[str] = []
    oidc: set[str] = set()
    for item in raw.split():
        if item in OIDC_SCOPES:
            oidc.add(item)
            continue
        prefix = ""
        own = _OWN_RESOURCE.match(item)
        for p in GRAPH_PREFIXES:
            if item.lower().startswith(p):
                prefix, item = item[: len(p)], item[len(p):]
                break
        else:
            if own:
                prefix, item = item[: own.end()], item[own.end():]
            elif "/" in item:
                raise IdentityErrorResponse(
                    "invalid_resource", 500011,
                    f"The resource principal named {item.rsplit('/', 1)[0]} was not found in the tenant named "
                    f"{SANDBOX_TENANT_NAME}.",
                )
        if item == ".default":
            names = sorted(consented) or sorted(app.delegated_scopes)
            graph += names
            echo += [f"{prefix or GRAPH_PREFIXES[0]}{n}" for n in names]
            continue
        known = {s.lower(): s for s in DELEGATED_SCOPES}
        if item.lower() not in known:
            raise IdentityErrorResponse(
                "invalid_scope", 70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope '{prefix}{item}' "
                "does not exist.",
            )
        graph.append(known[item.lower()])
        echo.append(prefix + known[item.lower()])
    if not graph:
        graph, echo = ["User.Read"], ["User.Read"]
    return ScopeRequest(graph, echo, oidc)


def consented_scopes(sb: Sandbox, app: App, user_id: str) -> set[str]:
    granted = set(app.delegated_scopes) if app.admin_consented else set()
    return granted | sb.state.user_consent(user_id, app.client_id)


def needs_consent(sb: Sandbox, app: App, user_id: str, graph_scopes: list[str]) -> bool:
    return not set(graph_scopes) <= consented_scopes(sb, app, user_id)


# -- device codes ------------------------------------------------------------------------
@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    status: str = "pending"  # pending | approved | declined | redeemed
    user_id: str | None = None
    last_poll: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def find_user_code(sb: Sandbox, user_code: str) -> DeviceCode | None:
    wanted = user_code.strip().upper().replace("-", "").replace(" ", "")
    for dc in sb.device_codes.values():
        if dc.user_code == wanted:
            return dc
    return None


def _purge_device_codes(sb: Sandbox) -> None:
    cutoff = time.time() - 3600
    for k in [k for k, v in sb.device_codes.items() if v.expires_at < cutoff]:
        del sb.device_codes[k]


# -- helpers -----------------------------------------------------------------------------
def _check_tenant(request: Request) -> str:
    tenant = request.path_params["tenant"]
    if tenant.lower() not in {t.lower() for t in _TENANT_ALIASES}:
        raise IdentityErrorResponse(
            "invalid_tenant", 90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there are "
            "no active subscriptions for the tenant.",
            detail={"tenant": tenant},
        )
    return tenant


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items()}


def request_client(sb: Sandbox, form: dict[str, str]) -> App:
    """The registered app named by a request's ``client_id`` (token, device-code, authorize, admin consent)."""
    client_id = form.get("client_id", "")
    if not client_id:
        raise err_missing("client_id")
    app = sb.state.app(client_id)
    if app is None:
        raise err_unknown_client(client_id)
    return app


def _require_public_or_secret(app: App, form: dict[str, str]) -> None:
    if app.kind == "confidential":
        secret = form.get("client_secret")
        if not secret:
            raise IdentityErrorResponse(
                "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                status=401,
            )
        if not hmac.compare_digest(sha256(secret), app.secret_sha256 or ""):
            raise IdentityErrorResponse(
                "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{app.client_id}'.",
                status=401,
            )


def discovery_issuer(request: Request) -> str:
    """The issuer the tenant's discovery document names for the origin the client used; every id_token
    carries it (an OIDC client compares the two)."""
    return f"{public_origin(request)}/{SANDBOX_TENANT_ID}/v2.0"


def _user_token_response(sb: Sandbox, user: SandboxUser, app: App, scopes: ScopeRequest, *, issuer: str,
                         nonce: str | None = None) -> JSONResponse:
    s = sb.settings
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join(scopes.echo),
        "expires_in": int(s.access_token_lifetime_s),
        "ext_expires_in": int(s.access_token_lifetime_s),
        "access_token": user_access_token(
            sb.key, user=user, client_id=app.client_id, scopes=scopes.graph, lifetime_s=s.access_token_lifetime_s
        ),
        "client_info": client_info(user.id),
    }
    if "offline_access" in scopes.oidc:
        rt = new_refresh_token()
        sb.state.store_refresh_token(rt, user.id, app.client_id, scopes.graph, s.refresh_token_lifetime_s)
        body["refresh_token"] = rt
        body["refresh_token_expires_in"] = int(s.refresh_token_lifetime_s)
    if "openid" in scopes.oidc:
        body["id_token"] = id_token(sb.key, user=user, client_id=app.client_id, nonce=nonce, issuer=issuer,
                                    lifetime_s=s.id_token_lifetime_s)
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


# -- endpoints ---------------------------------------------------------------------------
async def openid_configuration(request: Request) -> Response:
    try:
        tenant = _check_tenant(request)
    except IdentityErrorResponse as e:
        return e.response(request)
    base = f"{public_origin(request)}/{tenant}"
    tid = SANDBOX_TENANT_ID if tenant.lower() not in ("organizations", "common") else "{tenantid}"
    origin = public_origin(request)
    return JSONResponse({
        "token_endpoint": f"{base}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "jwks_uri": f"{base}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{origin}/{tid}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{origin.replace('login.', 'graph.', 1)}/oidc/userinfo",
        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
                             "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": f"{base}/kerberos",
        "tenant_region_scope": "EU",
        "cloud_instance_name": "crmkit.localhost",
        "cloud_graph_host_name": "graph.crmkit.localhost",
        "msgraph_host": "graph.crmkit.localhost",
        "rbac_url": "https://pas.crmkit.localhost",
    })


async def jwks(request: Request) -> Response:
    try:
        _check_tenant(request)
    except IdentityErrorResponse as e:
        return e.response(request)
    return JSONResponse({"keys": [sandbox_of(request).key.jwk]})


async def user_realm(request: Request) -> Response:
    user = request.path_params["user"]
    domain = user.rpartition("@")[2] or user
    return JSONResponse({
        "ver": "1.0",
        "account_type": "Managed",
        "domain_name": domain,
        "cloud_instance_name": "crmkit.localhost",
        "cloud_audience_urn": "urn:federation:crmkit.localhost",
    })


async def device_authorization(request: Request) -> Response:
    sb = sandbox_of(request)
    try:
        _check_tenant(request)
        form = await _form(request)
        app = request_client(sb, form)
        if app.kind != "public":
            raise IdentityErrorResponse(
                "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                status=401,
            )
        scope = form.get("scope", "")
        parse_scopes(scope, app, consented=set(app.delegated_scopes))  # validate early, like Entra
    except IdentityErrorResponse as e:
        return e.response(request)
    _purge_device_codes(sb)
    user_code = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(9))
    device_code = "DAQABAAEAAAD." + secrets.token_urlsafe(48)
    s = sb.settings
    dc = DeviceCode(device_code, user_code, app.client_id, scope, time.time() + s.device_code_lifetime_s,
                    s.device_code_interval_s)
    sb.device_codes[device_code] = dc
    verification_uri = f"{browser_origin(request)}/devicelogin"
    # Entra localises the message with ?mkt=xx-XX on the request; the page itself follows the browser.
    lang = i18n.from_ui_locales(request.query_params.get("mkt") or form.get("mkt")) or i18n.DEFAULT_LANG
    return JSONResponse({
        "user_code": user_code,
        "device_code": device_code,
        "verification_uri": verification_uri,
        "expires_in": int(s.device_code_lifetime_s),
        "interval": s.device_code_interval_s,
        "message": i18n.t("devicecode.message", lang, uri=verification_uri, code=user_code),
    }, headers={"Cache-Control": "no-store"})


def _grant_device_code(sb: Sandbox, app: App, form: dict[str, str], issuer: str) -> JSONResponse:
    code = form.get("device_code")
    if not code:
        raise err_missing("device_code")
    dc: DeviceCode | None = sb.device_codes.get(code)
    if dc is None or dc.client_id != app.client_id:
        raise IdentityErrorResponse("bad_verification_code", 70000,
                                    "The provided value for the input parameter 'device_code' is not valid.")
    now = time.time()
    if dc.status == "redeemed":
        raise IdentityErrorResponse("invalid_grant", 54005,
                                    "OAuth2 Authorization code was already redeemed, please retry "
                                    "with a new valid code or use an existing refresh token.")
    if now > dc.expires_at:
        raise IdentityErrorResponse(
            "expired_token", 70020,
            "The provided value for the input parameter 'device_code' is not valid. This device code "
            "has expired.")
    if dc.status == "declined":
        raise IdentityErrorResponse("authorization_declined", 70000,
                                    "The user has declined the authorization request on the sign-in page.")
    previous, dc.last_poll = dc.last_poll, now
    if dc.status == "pending":
        if previous is not None and now - previous < dc.interval * sb.settings.slow_down_factor:
            raise IdentityErrorResponse(
                "slow_down", 70016,
                "OAuth 2.0 device flow error. Polling too frequently; add 5 seconds to the interval.")
        raise IdentityErrorResponse("authorization_pending", 70016,
                                    "OAuth 2.0 device flow error. Authorization is pending. Continue polling.")
    # approved
    user = sb.state.user(dc.user_id or "")
    assert user is not None
    if not user.accountEnabled:
        raise err_disabled()
    scopes = parse_scopes(dc.scope, app, consented=consented_scopes(sb, app, user.id))
    if needs_consent(sb, app, user.id, scopes.graph):
        raise err_consent(app)
    dc.status = "redeemed"
    return _user_token_response(sb, user, app, scopes, issuer=issuer)


def _grant_password(sb: Sandbox, app: App, form: dict[str, str], tenant: str, issuer: str) -> JSONResponse:
    if tenant.lower() == "common":
        raise IdentityErrorResponse(
            "invalid_request", 90023,
            "The password grant is not supported over the /common or /consumers endpoints. Please use "
            "the /organizations or tenant-specific endpoint.")
    for p in ("username", "password"):
        if p not in form:
            raise err_missing(p)
    user = authenticate(sb, form["username"], form["password"], app, mfa_possible=False)
    scopes = parse_scopes(form.get("scope", ""), app, consented=consented_scopes(sb, app, user.id))
    if needs_consent(sb, app, user.id, scopes.graph):
        raise err_consent(app)
    return _user_token_response(sb, user, app, scopes, issuer=issuer)


def _grant_refresh(sb: Sandbox, app: App, form: dict[str, str], issuer: str) -> JSONResponse:
    token = form.get("refresh_token")
    if not token:
        raise err_missing("refresh_token")
    grant = sb.state.take_refresh_token(token)  # single use: rotation
    if grant is None or grant["client_id"] != app.client_id:
        raise IdentityErrorResponse(
            "invalid_grant", 70000,
            "Provided grant is invalid or malformed. The refresh token was already used or revoked.")
    if time.time() > grant["expires_at"]:
        raise IdentityErrorResponse(
            "invalid_grant", 700082,
            "The refresh token has expired due to inactivity. The token was issued on an earlier date "
            "and was inactive for the configured lifetime.")
    user = sb.state.user(grant["user_id"])
    if user is None:
        raise err_unknown_user(grant["user_id"])
    if not user.accountEnabled:
        raise err_disabled()
    scopes = parse_scopes(form.get("scope", ""), app, consented=consented_scopes(sb, app, user.id))
    if needs_consent(sb, app, user.id, scopes.graph):
        raise err_consent(app)
    scopes.oidc.add("offline_access")  # a refresh always returns the next refresh token
    return _user_token_response(sb, user, app, scopes, issuer=issuer)


def _grant_client_credentials(sb: Sandbox, app: App, form: dict[str, str]) -> JSONResponse:
    if app.kind != "confidential":
        raise IdentityErrorResponse("invalid_client", 7000218,
                                    "The request body must contain the following parameter: 'client_assertion' or "
                                    "'client_secret'.", status=401)
    _require_public_or_secret(app, form)
    scope = form.get("scope", "")
    if not scope.endswith("/.default") or len(scope.split()) != 1:
        raise IdentityErrorResponse(
            "invalid_scope", 1002012,
            f"The provided value for scope {scope} is not valid. Client credential flows must have a "
            "scope value with /.default suffixed to the resource identifier (application ID URI).")
    if not app.admin_consented:
        raise IdentityErrorResponse(
            "invalid_grant", 65001, f"The user or administrator has not consented to use the "
            f"application with ID '{app.client_id}' named '{app.name}'.", suberror="consent_required")
    lifetime = sb.settings.access_token_lifetime_s
    return JSONResponse({
        "token_type": "Bearer",
        "expires_in": int(lifetime),
        "ext_expires_in": int(lifetime),
        "access_token": app_access_token(sb.key, client_id=app.client_id, roles=list(app.app_roles),
                                         lifetime_s=lifetime),
    }, headers={"Cache-Control": "no-store"})


# -- authorization code (+ PKCE) ---------------------------------------------------------------
AUTH_CODE_LIFETIME_S = 600  # Entra's codes live about ten minutes


@dataclass
class AuthRequest:
    """One authorization request, as the sign-in page carries it between its steps (server side)."""

    client_id: str
    redirect_uri: str
    scope: str
    state: str | None = None
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str = "plain"
    response_mode: str = "query"
    prompt: str = ""
    login_hint: str = ""


@dataclass
class AuthCode:
    request: AuthRequest
    user_id: str
    expires_at: float
    redeemed: bool = False


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def redirect_uri_registered(app: App, redirect_uri: str) -> bool:
    """Whether ``redirect_uri`` is one the app registered: exactly, or for a public client a loopback URI
    on any port (Entra ignores the port of ``http://localhost``/``http://127.0.0.1`` for them). A
    registered loopback URI without a path covers every path (the sandbox's seeded registrations)."""
    from urllib.parse import urlsplit

    if redirect_uri in app.redirect_uris:
        return True
    if app.kind != "public":
        return False
    try:
        parts = urlsplit(redirect_uri)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.hostname not in _LOOPBACK_HOSTS or parts.fragment:
        return False
    for registered in app.redirect_uris:
        r = urlsplit(registered)
        if r.scheme != parts.scheme or r.hostname != parts.hostname:
            continue
        if r.path in ("", "/") and not r.query:
            return True
        if (r.path, r.query) == (parts.path, parts.query):
            return True
    return False


def err_redirect_uri(app: App, redirect_uri: str) -> IdentityErrorResponse:
    return IdentityErrorResponse("invalid_request", 50011,
                                 f"The redirect URI '{redirect_uri}' specified in the request "
                                 f"does not match the redirect URIs configured for the application '{app.client_id}'.",
                                 detail={"redirect_uri": redirect_uri, "client_id": app.client_id})


def authorization_client(sb: Sandbox, params: dict[str, str]) -> App:
    """The client and redirect URI of an authorize request; their errors are shown, never redirected."""
    app = request_client(sb, params)
    redirect_uri = params.get("redirect_uri", "")
    if not redirect_uri_registered(app, redirect_uri):
        raise err_redirect_uri(app, redirect_uri)
    return app


def authorization_request(app: App, params: dict[str, str]) -> AuthRequest:
    """The rest of an authorize request (after :func:`authorization_client`); its errors go back to the
    redirect URI."""
    redirect_uri = params.get("redirect_uri", "")
    mode = params.get("response_mode") or "query"
    method = params.get("code_challenge_method") or "plain"
    req = AuthRequest(app.client_id, redirect_uri, params.get("scope", ""), params.get("state"), params.get("nonce"),
                      params.get("code_challenge") or None, method,
                      mode if mode in ("query", "fragment", "form_post") else "query",
                      params.get("prompt", ""), params.get("login_hint", ""))
    if mode != req.response_mode:
        raise IdentityErrorResponse("invalid_request", 900144, f"The response_mode '{mode}' is not supported.")
    if params.get("response_type") != "code":
        raise IdentityErrorResponse(
            "unsupported_response_type", 700054,
            f"response_type '{params.get('response_type', '')}' is not enabled for the application.")
    if req.code_challenge and method not in ("S256", "plain"):
        raise IdentityErrorResponse("invalid_request", 501491, f"Invalid code_challenge_method '{method}'.")
    parse_scopes(req.scope, app, consented=set(app.delegated_scopes))  # invalid scopes go back as errors
    return req


def err_login_required() -> IdentityErrorResponse:
    return IdentityErrorResponse("login_required", 50058, "A silent sign-in request was sent but no user is signed in.")


def err_interaction_required(upn: str) -> IdentityErrorResponse:
    return IdentityErrorResponse("interaction_required", 16000,
                                 f"The account '{upn}' asked for is not the one signed in; "
                                 "the user must select the account to use.", detail={"upn": upn})


def issue_auth_code(sb: Sandbox, req: AuthRequest, user_id: str) -> str:
    now = time.time()
    for k in [k for k, v in sb.auth_codes.items() if v.expires_at < now - 3600]:
        del sb.auth_codes[k]
    code = "1.sbx." + secrets.token_urlsafe(48)
    sb.auth_codes[code] = AuthCode(req, user_id, now + AUTH_CODE_LIFETIME_S)
    return code


def _pkce_ok(ac: AuthCode, verifier: str) -> bool:
    import base64
    import hashlib

    if ac.request.code_challenge is None:
        return True
    if not verifier:
        return False
    if ac.request.code_challenge_method == "S256":
        verifier = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return hmac.compare_digest(verifier.encode(), ac.request.code_challenge.encode())


def _grant_auth_code(sb: Sandbox, app: App, form: dict[str, str], request: Request) -> JSONResponse:
    code = form.get("code")
    if not code:
        raise err_missing("code")
    ac: AuthCode | None = sb.auth_codes.get(code)
    if ac is None or ac.request.client_id != app.client_id:
        raise IdentityErrorResponse("invalid_grant", 70000, "Provided grant is invalid or malformed.")
    if ac.redeemed:
        raise IdentityErrorResponse("invalid_grant", 54005,
                                    "OAuth2 Authorization code was already redeemed, please retry "
                                    "with a new valid code or use an existing refresh token.")
    if time.time() > ac.expires_at:
        raise IdentityErrorResponse(
            "invalid_grant", 70008,
            "The provided authorization code or refresh token has expired "
            "due to inactivity. Send a new interactive authorization request for this user and resource.")
    if form.get("redirect_uri", "") != ac.request.redirect_uri:
        raise IdentityErrorResponse("invalid_grant", 500112,
                                    "The reply address does not match the reply address provided "
                                    "when requesting the authorization code.")
    if not _pkce_ok(ac, form.get("code_verifier", "")):
        raise IdentityErrorResponse("invalid_grant", 50148,
                                    "The code_verifier does not match the code_challenge supplied in "
                                    "the authorization request for PKCE.")
    ac.redeemed = True
    user = sb.state.user(ac.user_id)
    if user is None:
        raise err_unknown_user(ac.user_id)
    if not user.accountEnabled:
        raise err_disabled()
    scopes = parse_scopes(ac.request.scope, app, consented=consented_scopes(sb, app, user.id))
    if needs_consent(sb, app, user.id, scopes.graph):
        raise err_consent(app)
    return _user_token_response(sb, user, app, scopes, nonce=ac.request.nonce, issuer=discovery_issuer(request))


async def token(request: Request) -> Response:
    sb = sandbox_of(request)
    try:
        tenant = _check_tenant(request)
        form = await _form(request)
        # HTTP Basic client authentication, as Entra accepts it for confidential clients.
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            import base64

            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            form.setdefault("client_id", cid)
            form.setdefault("client_secret", secret)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise err_missing("grant_type")
        app = request_client(sb, form)
        if grant_type == "client_credentials":
            return _grant_client_credentials(sb, app, form)
        _require_public_or_secret(app, form)
        if grant_type == DEVICE_GRANT:
            return _grant_device_code(sb, app, form, discovery_issuer(request))
        if grant_type == "password":
            return _grant_password(sb, app, form, tenant, discovery_issuer(request))
        if grant_type == "refresh_token":
            return _grant_refresh(sb, app, form, discovery_issuer(request))
        if grant_type == "authorization_code":
            return _grant_auth_code(sb, app, form, request)
        raise IdentityErrorResponse("unsupported_grant_type", 70003,
                                    f"The app requested an unsupported grant type '{grant_type}'.")
    except IdentityErrorResponse as e:
        return e.response(request)


def new_ticket(sb: Sandbox, **data: Any) -> str:
    """Short-lived server-side state between the steps of a sign-in page (no password round-trips)."""
    cutoff = time.time() - 900
    for k in [k for k, v in sb.signin_tickets.items() if v["t"] < cutoff]:
        del sb.signin_tickets[k]
    ticket = str(uuid.uuid4())
    sb.signin_tickets[ticket] = {"t": time.time(), **data}
    return ticket


routes = [
    Route("/common/userrealm/{user:path}", user_realm, methods=["GET"]),
    Route("/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/{tenant}/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/{tenant}/discovery/v2.0/keys", jwks, methods=["GET"]),
    Route("/{tenant}/oauth2/v2.0/devicecode", device_authorization, methods=["POST"]),
    Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
]
