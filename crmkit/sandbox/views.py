"""Browser pages: device-code sign-in, admin consent, error pages and the read-only "Teams (sandbox)" view.

Plain server-rendered HTML.  Every value is escaped; message HTML is passed through a small
allow-list sanitiser, and adaptive cards are rendered as Teams shows them (the card markdown
subset, see :mod:`.card_markdown`; no remote images).

Every page speaks German or English: ``ui_locales`` where the flow carries it, else the browser's
Accept-Language, else English (rules in :mod:`.i18n`); the texts come from ``static/catalog.json``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from html import escape as _html_escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from . import SANDBOX_TENANT_ID, SANDBOX_TENANT_NAME, card_markdown, channels
from .core import Sandbox, sandbox_of
from .directory import SandboxUser
from .i18n import Lang, has, request_lang, t
from .identity import (
    AuthRequest,
    DeviceCode,
    IdentityErrorResponse,
    _check_tenant,
    authenticate,
    authorization_client,
    authorization_request,
    err_interaction_required,
    err_login_required,
    err_missing,
    err_redirect_uri,
    err_unknown_client,
    find_user_code,
    issue_auth_code,
    needs_consent,
    new_ticket,
    parse_scopes,
    redirect_uri_registered,
    request_client,
)
from .state import DELEGATED_SCOPES

# Control characters (but tab and line feed) and bidi embeddings, overrides and isolates in stored
# text are not shown: a message, a card value or a name cannot ring, cut off or reorder the page
# around it. The sandbox stands for Teams, so it keeps its own rule instead of crmkit's.
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape(text: str, quote: bool = True) -> str:
    """HTML-escaped ``text`` without control and bidi formatting characters."""
    return _html_escape(_UNSHOWN.sub("", str(text)), quote)


def _unshown(text: str) -> str:
    return _UNSHOWN.sub("", text)


_CSS = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f5f5f5;color:#242424}
.card{max-width:440px;margin:48px auto;background:#fff;padding:32px 40px;box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:24px;font-weight:600;margin:0 0 16px} label{display:block;margin:12px 0 4px}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:6px;font-size:15px}
button{margin:16px 8px 0 0;padding:6px 20px;font-size:15px;cursor:pointer}
button.primary{background:#0067b8;color:#fff;border:1px solid #0067b8}
.error{color:#e81123;margin:8px 0} .muted{color:#616161;font-size:13px}
.teams{display:flex;min-height:100vh} .side{width:300px;background:#ebebeb;border-right:1px solid #ddd}
.side a{display:block;padding:10px 14px;color:#242424;text-decoration:none;border-bottom:1px solid #ddd}
.side a.active{background:#fff;font-weight:600} .main{flex:1;padding:16px 24px}
.msg{background:#fff;border-radius:4px;padding:10px 14px;margin:10px 0;box-shadow:0 1px 2px rgba(0,0,0,.15)}
.meta{font-size:12px;color:#616161} .subject{font-weight:600;font-size:16px;margin:4px 0}
.importance-high{border-left:4px solid #c4314b} .importance-urgent{border-left:4px solid #e81123}
.flag{color:#c4314b;font-weight:700;font-size:12px;margin-left:6px}
.mention{color:#6264a7;font-weight:600} .acard{border:1px solid #ccc;border-radius:4px;padding:8px 12px;margin:6px 0}
.acard p{margin:4px 0} .acard ul,.acard ol{margin:4px 0;padding-left:22px}
.acard table{border-collapse:collapse} .acard th{text-align:left;padding-right:12px;color:#616161;font-weight:600}
.acard th p,.acard td p{margin:0}
.cols{display:flex;gap:12px} .btn{display:inline-block;border:1px solid #999;padding:2px 10px;margin:4px 4px 0 0}
.banner{background:#464775;color:#fff;padding:8px 16px;font-weight:600}
.side h3{font-size:13px;color:#616161;margin:12px 14px 4px} .side a.channel{padding-left:28px}
.replies{margin-left:32px} .quote{border-left:3px solid #6264a7;margin:4px 0;padding:2px 8px;color:#424242}
"""

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class Ui:
    """The language of one page, and the ``ui_locales`` the request asked for (kept through form posts)."""

    lang: Lang
    ui_locales: str = ""

    @classmethod
    def of(cls, request: Request, form: dict[str, str] | None = None) -> Ui:
        asked = (form or {}).get("ui_locales") or request.query_params.get("ui_locales") or ""
        return cls(request_lang(request, asked or None), asked)

    def t(self, key: str, **values: object) -> str:
        return t(key, self.lang, **values)

    def hidden(self) -> dict[str, str]:
        return {"ui_locales": self.ui_locales} if self.ui_locales else {}


def _page(ui: Ui, title: str, body: str, *, status: int = 200, refresh: int | None = None) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    doc = (f"<!doctype html><html lang={ui.lang}><head><meta charset=utf-8>{meta}<title>{escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>{body}</body></html>")
    return HTMLResponse(doc, status_code=status, headers={**_HEADERS, "Content-Language": ui.lang})


def _card(ui: Ui, title: str, inner: str, error: str | None = None) -> str:
    err = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (f'<div class="card"><p class="muted">{escape(ui.t("page.tenant_line", tenant=SANDBOX_TENANT_NAME))}</p>'
            f"<h1>{escape(title)}</h1>{err}{inner}</div>")


def _form_page(ui: Ui, title_key: str, inner: str, error: str | None = None) -> HTMLResponse:
    """A sign-in step's page: its card titled like the page, 400 when it shows an error (the step again)."""
    title = ui.t(title_key)
    return _page(ui, title, _card(ui, title, inner, error), status=400 if error else 200)


def _hidden(**fields: str) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


def _buttons(ui: Ui, primary: tuple[str, str] | None, cancel: bool = True) -> str:
    out = ""
    if primary:
        value, label_key = primary
        out += f'<button class="primary" type="submit" name="action" value="{value}">{escape(ui.t(label_key))}</button>'
    if cancel:
        out += f'<button type="submit" name="action" value="cancel">{escape(ui.t("common.cancel"))}</button>'
    return out


def _error_page(ui: Ui, error: IdentityErrorResponse, status: int = 400) -> HTMLResponse:
    """Entra's "we're having trouble signing you in" page, for errors a redirect cannot carry."""
    return _page(ui, ui.t("error.title"), _card(ui, ui.t("error.heading"), "", error.text(ui.lang)), status=status)


# -- device code sign-in ---------------------------------------------------------------------
def _device_form(ui: Ui, step: str, inner: str, action: str = "/devicelogin", **fields: str) -> str:
    # action: the authorize endpoint's pages post the same steps back to it
    return (f'<form method="post" action="{escape(action)}">' + _hidden(step=step, **fields, **ui.hidden()) + inner
            + "</form>")


def _code_form(ui: Ui, error: str | None = None) -> HTMLResponse:
    inner = _device_form(ui, "code",
                         f"<p>{escape(ui.t('code.prompt'))}</p>"
                         f'<label for="otc">{escape(ui.t("code.label"))}</label>'
                         '<input type="text" id="otc" name="otc" autocomplete="off" autofocus>'
                         f'<button class="primary" type="submit">{escape(ui.t("common.next"))}</button>')
    return _form_page(ui, "code.title", inner, error)


def _signin_form(ui: Ui, sb: Sandbox, ticket: str, dc: DeviceCode | AuthRequest, error: str | None = None,
                 login: str = "", action: str = "/devicelogin") -> HTMLResponse:
    app = sb.state.app(dc.client_id)
    name = app.name if app else dc.client_id
    inner = _device_form(ui, "signin",
                         f"<p>{escape(ui.t('signin.prompt', app=name))}</p>"
                         f'<label for="login">{escape(ui.t("signin.login"))}</label>'
                         f'<input type="text" id="login" name="login" value="{escape(login)}" autocomplete="username">'
                         f'<label for="passwd">{escape(ui.t("common.password"))}</label>'
                         '<input type="password" id="passwd" name="passwd" autocomplete="current-password">'
                         + _buttons(ui, ("signin", "signin.submit")), action, ticket=ticket)
    return _form_page(ui, "signin.title", inner, error)


def _mfa_form(ui: Ui, ticket: str, error: str | None = None, action: str = "/devicelogin") -> HTMLResponse:
    inner = _device_form(ui, "mfa",
                         f"<p>{escape(ui.t('mfa.prompt'))}</p>"
                         f'<label for="mfa_code">{escape(ui.t("mfa.label"))}</label>'
                         '<input type="text" id="mfa_code" name="mfa_code" autocomplete="one-time-code">'
                         + _buttons(ui, ("verify", "mfa.submit")), action, ticket=ticket)
    return _form_page(ui, "mfa.title", inner, error)


def _consent_form(ui: Ui, sb: Sandbox, ticket: str, dc: DeviceCode | AuthRequest,
                  action: str = "/devicelogin") -> HTMLResponse:
    app = sb.state.app(dc.client_id)
    assert app is not None
    scopes = parse_scopes(dc.scope, app, consented=set(app.delegated_scopes)).graph
    items = "".join(f"<li>{escape(s)}</li>" for s in scopes)
    inner = _device_form(ui, "consent",
                         f"<p>{escape(ui.t('consent.needs', app=app.name))}</p><ul>{items}</ul>"
                         f"<p class=muted>{escape(ui.t('consent.note'))}</p>"
                         + _buttons(ui, ("accept", "common.accept")), action, ticket=ticket)
    return _form_page(ui, "consent.title", inner)


def _done(ui: Ui, title: str, text: str) -> HTMLResponse:
    return _page(ui, title, _card(ui, title, f"<p>{escape(text)}</p>"))


def _approve(ui: Ui, sb: Sandbox, dc: DeviceCode, user_id: str) -> HTMLResponse:
    dc.status, dc.user_id = "approved", user_id
    app = sb.state.app(dc.client_id)
    return _done(ui, ui.t("done.signed_in.title"),
                 ui.t("done.signed_in.text", app=app.name if app else dc.client_id))


def _after_auth(ui: Ui, sb: Sandbox, ticket: str, dc: DeviceCode, user_id: str) -> HTMLResponse:
    app = sb.state.app(dc.client_id)
    assert app is not None
    scopes = parse_scopes(dc.scope, app, consented=set(app.delegated_scopes)).graph
    if needs_consent(sb, app, user_id, scopes):
        sb.signin_tickets[ticket].update(stage="consent", user_id=user_id)
        return _consent_form(ui, sb, ticket, dc)
    return _approve(ui, sb, dc, user_id)


async def devicelogin_get(request: Request) -> Response:
    return _code_form(Ui.of(request))


async def devicelogin_post(request: Request) -> Response:
    sb = sandbox_of(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    ui = Ui.of(request, form)
    step = form.get("step", "code")
    if step == "code":
        dc = find_user_code(sb, form.get("otc", ""))
        if dc is None:
            return _code_form(ui, ui.t("code.error.invalid"))
        if time.time() > dc.expires_at:
            return _code_form(ui, ui.t("code.error.expired"))
        if dc.status != "pending":
            return _code_form(ui, ui.t("code.error.used"))
        return _signin_form(ui, sb, new_ticket(sb, stage="signin", device_code=dc.device_code), dc)

    ticket = form.get("ticket", "")
    tk = sb.signin_tickets.get(ticket)
    dc = sb.device_codes.get(tk["device_code"]) if tk else None
    if tk is None or dc is None or tk.get("stage") != step:
        return _code_form(ui, ui.t("code.error.session"))
    if time.time() > dc.expires_at or dc.status != "pending":
        sb.signin_tickets.pop(ticket, None)
        return _code_form(ui, ui.t("code.error.gone"))
    if form.get("action") == "cancel":
        dc.status = "declined"
        sb.signin_tickets.pop(ticket, None)
        return _done(ui, ui.t("done.cancelled.title"), ui.t("done.cancelled.text"))
    app = sb.state.app(dc.client_id)
    if step == "signin":
        try:
            user = authenticate(sb, form.get("login", ""), form.get("passwd", ""), app, mfa_possible=True)
        except IdentityErrorResponse as e:
            return _signin_form(ui, sb, ticket, dc, e.text(ui.lang), form.get("login", ""))
        if user.mfa_required:
            tk.update(stage="mfa", user_id=user.id)
            return _mfa_form(ui, ticket)
        return _after_auth(ui, sb, ticket, dc, user.id)
    if step == "mfa":
        from . import SANDBOX_MFA_CODE

        if form.get("mfa_code", "").strip() != SANDBOX_MFA_CODE:
            wrong = IdentityErrorResponse("invalid_grant", 50074, "The verification code is not correct. Try again.")
            return _mfa_form(ui, ticket, wrong.text(ui.lang))
        return _after_auth(ui, sb, ticket, dc, tk["user_id"])
    if step == "consent" and form.get("action") == "accept" and app is not None:
        scopes = parse_scopes(dc.scope, app, consented=set(app.delegated_scopes)).graph
        sb.state.grant_user_consent(tk["user_id"], app.client_id, scopes)
        sb.signin_tickets.pop(ticket, None)
        return _approve(ui, sb, dc, tk["user_id"])
    return _code_form(ui, ui.t("code.error.unexpected"))


# -- authorize, error codes ------------------------------------------------------------------
def _authorize_reply(ui: Ui, req: AuthRequest, params: dict[str, str]) -> Response:
    """Send the result (code or error, and the state unchanged) to the redirect URI as response_mode says."""
    if req.state is not None:
        params = {**params, "state": req.state}
    if req.response_mode == "form_post":
        # A form the page submits by itself (a nonce'd script; without scripts the person presses the button).
        nonce = secrets.token_urlsafe(16)
        inner = (f'<form method="post" action="{escape(req.redirect_uri)}" id="reply">' + _hidden(**params)
                 + f'<button class="primary" type="submit">{escape(ui.t("common.next"))}</button></form>'
                 f'<script nonce="{nonce}">document.getElementById("reply").submit()</script>')
        title = ui.t("done.signed_in.title") if "code" in params else ui.t("error.title")
        page = _page(ui, title, _card(ui, title, inner))
        page.headers["Content-Security-Policy"] = (f"default-src 'none'; style-src 'unsafe-inline'; "
                                                   f"script-src 'nonce-{nonce}'; frame-ancestors 'none'")
        return page
    if req.response_mode == "fragment":
        return RedirectResponse(req.redirect_uri + "#" + urlencode(params, quote_via=quote), status_code=302)
    return _redirect_with(req.redirect_uri, params)


def _authorize_error(ui: Ui, req: AuthRequest, e: IdentityErrorResponse) -> Response:
    return _authorize_reply(ui, req, {"error": e.error, "error_description": str(e)})


def _authorize_done(ui: Ui, sb: Sandbox, ticket: str, req: AuthRequest, user_id: str) -> Response:
    sb.signin_tickets.pop(ticket, None)
    return _authorize_reply(ui, req, {"code": issue_auth_code(sb, req, user_id)})


# The sign-in page's browser session: the cookie holds only a random id, the server keeps the session under
# the id's sha256 (state.browser_sessions). Entra names its cookie ESTSAUTH; cookies do not tell ports apart,
# so the listener's port is part of the name and two sandboxes on 127.0.0.1 do not overwrite each other's.
SESSION_COOKIE = "ESTSAUTH"
SESSION_LIFETIME_S = 12 * 3600


def session_cookie_name(request: Request) -> str:
    server = request.scope.get("server") or ("", 0)
    return f"{SESSION_COOKIE}_{server[1]}"


def _session_user(sb: Sandbox, request: Request) -> SandboxUser | None:
    sid = request.cookies.get(session_cookie_name(request), "")
    user_id = sb.state.browser_session(sid) if 16 <= len(sid) <= 128 else None
    user = sb.state.user(user_id) if user_id else None
    return user if user is not None and user.accountEnabled else None


def _start_session(sb: Sandbox, request: Request, response: Response, user_id: str) -> Response:
    """The person signed in with their password (and MFA): a new session replaces the browser's old one."""
    old = request.cookies.get(session_cookie_name(request))
    if old:
        sb.state.end_browser_session(old)
    sid = secrets.token_urlsafe(32)
    sb.state.start_browser_session(sid, user_id, SESSION_LIFETIME_S)
    response.set_cookie(session_cookie_name(request), sid, path="/", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    return response


def _picker(ui: Ui, sb: Sandbox, ticket: str, req: AuthRequest, user: SandboxUser, action: str) -> HTMLResponse:
    """``prompt=select_account`` with a session: the session's account, or another one."""
    app = sb.state.app(req.client_id)
    inner = _device_form(ui, "pick",
                         f"<p>{escape(ui.t('picker.prompt', app=app.name if app else req.client_id))}</p>"
                         '<button class="primary" type="submit" name="action" value="account">'
                         f"{escape(user.displayName)}<br><span>{escape(user.userPrincipalName)} · "
                         f"{escape(ui.t('picker.signed_in'))}</span></button>"
                         f'<button type="submit" name="action" value="other">{escape(ui.t("picker.other"))}</button>',
                         action, ticket=ticket)
    return _form_page(ui, "picker.title", inner)


def _authorize_after_auth(ui: Ui, sb: Sandbox, ticket: str, req: AuthRequest, user_id: str,
                          action: str) -> Response:
    app = sb.state.app(req.client_id)
    assert app is not None
    scopes = parse_scopes(req.scope, app, consented=set(app.delegated_scopes)).graph
    if req.prompt == "consent" or needs_consent(sb, app, user_id, scopes):
        sb.signin_tickets[ticket].update(stage="consent", user_id=user_id)
        return _consent_form(ui, sb, ticket, req, action)
    return _authorize_done(ui, sb, ticket, req, user_id)


async def authorize(request: Request) -> Response:
    """The authorization endpoint: code flow with PKCE, sign-in (and MFA, consent) pages, then the redirect.

    Errors about the client or its redirect URI are a page (nothing to redirect to safely); the others go
    back to the redirect URI with ``error`` and the ``state``, as Entra's do.
    """
    sb = sandbox_of(request)
    form = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
    ui = Ui.of(request, form)
    action = str(request.url.path)
    if "ticket" in form:  # a step of the sign-in page
        ticket = form["ticket"]
        tk = sb.signin_tickets.get(ticket)
        if tk is None or "authorize" not in tk or tk.get("stage") != form.get("step"):
            title = ui.t("error.title")
            return _page(ui, title, _card(ui, ui.t("error.heading"), "", ui.t("authorize.error.session")), status=400)
        req: AuthRequest = tk["authorize"]
        step = tk["stage"]
        if form.get("action") == "cancel":
            sb.signin_tickets.pop(ticket, None)
            return _authorize_error(ui, req, IdentityErrorResponse("access_denied", 65004,
                                                                   "User declined to consent to access the app."))
        app = sb.state.app(req.client_id)
        if step == "signin":
            try:
                user = authenticate(sb, form.get("login", ""), form.get("passwd", ""), app, mfa_possible=True)
            except IdentityErrorResponse as e:
                return _signin_form(ui, sb, ticket, req, e.text(ui.lang), form.get("login", ""), action)
            if user.mfa_required:
                tk.update(stage="mfa", user_id=user.id)
                return _mfa_form(ui, ticket, action=action)
            return _start_session(sb, request, _authorize_after_auth(ui, sb, ticket, req, user.id, action), user.id)
        if step == "mfa":
            from . import SANDBOX_MFA_CODE

            if form.get("mfa_code", "").strip() != SANDBOX_MFA_CODE:
                wrong = IdentityErrorResponse("invalid_grant", 50074,
                                              "The verification code is not correct. Try again.")
                return _mfa_form(ui, ticket, wrong.text(ui.lang), action)
            return _start_session(sb, request, _authorize_after_auth(ui, sb, ticket, req, tk["user_id"], action),
                                  tk["user_id"])
        if step == "pick":
            session_user = _session_user(sb, request)
            if form.get("action") == "account" and session_user is not None and session_user.id == tk["user_id"]:
                return _authorize_after_auth(ui, sb, ticket, req, session_user.id, action)
            tk.update(stage="signin")  # another account (or the session ended meanwhile): the password
            return _signin_form(ui, sb, ticket, req, action=action)
        if step == "consent" and form.get("action") == "accept" and app is not None:
            scopes = parse_scopes(req.scope, app, consented=set(app.delegated_scopes)).graph
            sb.state.grant_user_consent(tk["user_id"], app.client_id, scopes)
            return _authorize_done(ui, sb, ticket, req, tk["user_id"])
        title = ui.t("error.title")
        return _page(ui, title, _card(ui, ui.t("error.heading"), "", ui.t("authorize.error.session")), status=400)
    params = {**dict(request.query_params), **form}
    try:
        _check_tenant(request)
        app = authorization_client(sb, params)
        if not params.get("response_type"):  # not an OAuth request at all: nothing to send back
            raise err_missing("response_type")
    except IdentityErrorResponse as e:
        return _error_page(ui, e)
    try:
        req = authorization_request(app, params)
    except IdentityErrorResponse as e:
        mode = params.get("response_mode")
        fallback = AuthRequest(app.client_id, params.get("redirect_uri", ""), "", params.get("state"),
                               response_mode=mode if mode in ("query", "fragment", "form_post") else "query")
        return _authorize_error(ui, fallback, e)
    user = _session_user(sb, request)
    hint = req.login_hint.strip().lower()
    same = user is not None and (not hint or hint == user.userPrincipalName.lower())
    if req.prompt == "none":  # silent: a code from the session, or an error; never a page
        if user is None:
            return _authorize_error(ui, req, err_login_required())
        if not same:
            return _authorize_error(ui, req, err_interaction_required(req.login_hint))
        if needs_consent(sb, app, user.id, parse_scopes(req.scope, app, consented=set(app.delegated_scopes)).graph):
            return _authorize_error(ui, req, IdentityErrorResponse(
                "consent_required", 65001, f"The user or administrator has not consented to use the application "
                f"with ID '{app.client_id}' named '{app.name}'. Send an interactive authorization request for this "
                "user and resource."))
        return _authorize_reply(ui, req, {"code": issue_auth_code(sb, req, user.id)})
    if req.prompt == "select_account" and user is not None:
        return _picker(ui, sb, new_ticket(sb, stage="pick", authorize=req, user_id=user.id), req, user, action)
    ticket = new_ticket(sb, stage="signin", authorize=req)
    if req.prompt != "login" and same and user is not None:  # the session stands for the password
        return _authorize_after_auth(ui, sb, ticket, req, user.id, action)
    return _signin_form(ui, sb, ticket, req, login=req.login_hint, action=action)


async def logout(request: Request) -> Response:
    """The end-session endpoint discovery names: ends the browser session, then back to the app's registered
    ``post_logout_redirect_uri`` (with ``state``) or a signed-out page."""
    sb = sandbox_of(request)
    form = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
    params = {**dict(request.query_params), **form}
    ui = Ui.of(request, form)
    target = params.get("post_logout_redirect_uri", "")
    try:
        _check_tenant(request)
        if target:
            app = sb.state.app(params.get("client_id", ""))
            if app is None:
                raise err_unknown_client(params.get("client_id", ""))
            if not redirect_uri_registered(app, target):
                raise err_redirect_uri(app, target)
    except IdentityErrorResponse as e:
        return _error_page(ui, e)
    sid = request.cookies.get(session_cookie_name(request))
    if sid:
        sb.state.end_browser_session(sid)
    if target:
        response: Response = _redirect_with(target, {"state": params["state"]} if "state" in params else {})
    else:
        response = _done(ui, ui.t("logout.title"), ui.t("logout.text"))
    response.delete_cookie(session_cookie_name(request), path="/", httponly=True, samesite="lax")
    return response


async def post_only(request: Request) -> Response:
    """The token and device-code endpoints opened in a browser: Entra's AADSTS900561 page, not JSON."""
    try:
        _check_tenant(request)
        e = IdentityErrorResponse("invalid_request", 900561, f"The endpoint only accepts POST requests. Received a "
                                  f"{request.method} request.", detail={"method": request.method})
    except IdentityErrorResponse as bad_tenant:
        e = bad_tenant
    return _error_page(Ui.of(request), e, status=400)


def not_found_page(request: Request) -> Response:
    """A 404 for a browser (it asked for HTML): a page in the person's language instead of the JSON body."""
    ui = Ui.of(request)
    title = ui.t("notfound.title")
    return _page(ui, title, _card(ui, title, f"<p>{escape(ui.t('notfound.text'))}</p>"), status=404)


async def error_code_page(request: Request) -> Response:
    """The page behind an error response's ``error_uri`` (``/error?code=50126``)."""
    ui = Ui.of(request)
    code = request.query_params.get("code", "")
    code = code if code.isdigit() and len(code) <= 9 else "?"
    title = ui.t("error.code_title", code=f"AADSTS{code}")
    return _page(ui, title, _card(ui, title, f"<p>{escape(ui.t('error.code_text'))}</p>"))


# -- admin consent ---------------------------------------------------------------------------
def _redirect_with(uri: str, params: dict[str, str]) -> RedirectResponse:
    if not params:
        return RedirectResponse(uri, status_code=302)
    sep = "&" if "?" in uri else "?"
    return RedirectResponse(uri + sep + urlencode(params, quote_via=quote), status_code=302)


async def admin_consent(request: Request) -> Response:
    sb = sandbox_of(request)
    ui = Ui.of(request)  # the form posts back to the same URL, ui_locales included
    q = request.query_params
    v2 = "/v2.0/" in request.url.path
    try:
        tenant = _check_tenant(request)
        if tenant.lower() == "common":
            raise IdentityErrorResponse("invalid_request", 90130, "Admin consent cannot use the /common endpoint; use "
                                        "/organizations or the tenant.")
        app = request_client(sb, dict(q))
        redirect_uri = q.get("redirect_uri", "")
        if (v2 or redirect_uri) and not redirect_uri_registered(app, redirect_uri):
            raise err_redirect_uri(app, redirect_uri)
    except IdentityErrorResponse as e:
        return _error_page(ui, e)
    scope = q.get("scope", "") if v2 else " ".join(app.delegated_scopes)
    state = q.get("state")
    form: dict[str, str] = {}
    error = None
    if request.method == "POST":
        form = {k: str(v) for k, v in (await request.form()).items()}
        if form.get("action") == "cancel":
            params = {"admin_consent": "True", "error": "consent_required",
                      "error_description": "AADSTS65004: User declined to consent to access the app."}
            if state is not None:
                params["state"] = state
            if redirect_uri:
                return _redirect_with(redirect_uri, params)
            return _done(ui, ui.t("admin.declined.title"), ui.t("admin.declined.text"))
        try:
            user = authenticate(sb, form.get("login", ""), form.get("passwd", ""), app, mfa_possible=True)
            if not user.can_admin_consent:
                raise IdentityErrorResponse("access_denied", 90094,
                                            "The grant requires admin permission. Sign in with a "
                                            "Global Administrator or Privileged Role Administrator account.")
        except IdentityErrorResponse as e:
            error = e.text(ui.lang)
        else:
            sb.state.set_admin_consent(app.client_id, True)
            params = {"admin_consent": "True", "tenant": SANDBOX_TENANT_ID}
            if v2:
                params["scope"] = scope
            if state is not None:
                params["state"] = state
            if redirect_uri:
                return _redirect_with(redirect_uri, params)
            return _done(ui, ui.t("admin.granted.title"),
                         ui.t("admin.granted.text", app=app.name, tenant=SANDBOX_TENANT_NAME))
    requested = [s.rsplit("/", 1)[-1] for s in scope.split()] or list(DELEGATED_SCOPES)
    items = "".join(f"<li>{escape(s)}</li>" for s in requested)
    inner = (f'<form method="post" action="{escape(str(request.url.path))}?{escape(request.url.query)}">'
             f"<p>{escape(ui.t('admin.requests', app=app.name))}</p>"
             f"<ul>{items}</ul>"
             f'<label for="login">{escape(ui.t("admin.login"))}</label>'
             f'<input type="text" id="login" name="login" value="{escape(form.get("login", ""))}">'
             f'<label for="passwd">{escape(ui.t("common.password"))}</label>'
             '<input type="password" id="passwd" name="passwd">'
             + _buttons(ui, ("accept", "common.accept")) + "</form>")
    return _page(ui, ui.t("consent.title"), _card(ui, ui.t("admin.title"), inner, error),
                 status=400 if error else 200)


# -- Teams view ------------------------------------------------------------------------------
_ALLOWED_TAGS = {"p", "div", "span", "b", "strong", "i", "em", "u", "s", "br", "ul", "ol", "li", "table", "thead",
                 "tbody", "tr", "td", "th", "h1", "h2", "h3", "h4", "pre", "code", "blockquote", "hr", "a"}
_VOID = {"br", "hr"}
_DROP_CONTENT = {"script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math"}


class _Sanitiser(HTMLParser):
    def __init__(self, cards: dict[str, str], missing: str) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.cards = cards
        self.missing = missing
        self.stack: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in _DROP_CONTENT:
            self.skip += 1
            return
        if self.skip:
            return
        if tag == "attachment":
            self.out.append(self.cards.get(a.get("id") or "", self.missing))
            self.stack.append("attachment")
            return
        if tag == "at":
            self.out.append('<span class="mention">')
            self.stack.append("span")
            return
        if tag not in _ALLOWED_TAGS:
            return
        if tag == "a":
            href = (a.get("href") or "").strip()
            ok = href.lower().startswith(("http://", "https://", "mailto:"))
            self.out.append(f'<a href="{escape(href)}" rel="noopener noreferrer">' if ok else "<a>")
        else:
            self.out.append(f"<{tag}>")
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_CONTENT:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        want = {"at": "span"}.get(tag, tag)
        if want in self.stack:
            while self.stack:
                top = self.stack.pop()
                if top != "attachment":
                    self.out.append(f"</{top}>")
                if top == want:
                    break

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(escape(data))

    def result(self) -> str:
        self.close()
        while self.stack:
            top = self.stack.pop()
            if top != "attachment":
                self.out.append(f"</{top}>")
        return "".join(self.out)


def sanitise_html(content: str, cards: dict[str, str] | None = None, lang: Lang = "en") -> str:
    s = _Sanitiser(cards or {}, f'<div class=acard>{escape(t("teams.attachment", lang))}</div>')
    s.feed(content)
    return s.result()


def card_text(text: Any) -> str:
    """Card text (TextBlock, Fact title/value) as Teams shows it: its markdown subset, escapes resolved."""
    return card_markdown.render(str(text), _unshown)


def _card_element(el: Any, lang: Lang, depth: int = 0) -> str:
    if not isinstance(el, dict) or depth > 8:
        return ""
    kind = el.get("type")
    if kind == "TextBlock":
        style = ""
        if el.get("weight") == "Bolder":
            style += "font-weight:600;"
        size = {"Large": "18px", "ExtraLarge": "22px", "Medium": "16px", "Small": "12px"}.get(el.get("size", ""))
        if size:
            style += f"font-size:{size};"
        return f'<div class="textblock" style="{style}">{card_text(el.get("text", ""))}</div>'
    if kind == "RichTextBlock":  # no markdown here: TextRuns carry their own formatting
        runs = "".join(escape(str(r.get("text", ""))) if isinstance(r, dict) else escape(str(r))
                       for r in el.get("inlines", []))
        return f"<p>{runs}</p>"
    if kind == "FactSet":
        rows = "".join(f"<tr><th>{card_text(f.get('title', ''))}</th><td>{card_text(f.get('value', ''))}</td></tr>"
                       for f in el.get("facts", []) if isinstance(f, dict))
        return f"<table>{rows}</table>"
    if kind == "ColumnSet":
        cols = "".join(f"<div>{''.join(_card_element(i, lang, depth + 1) for i in c.get('items', []))}</div>"
                       for c in el.get("columns", []) if isinstance(c, dict))
        return f'<div class="cols">{cols}</div>'
    if kind == "Container":
        return f"<div>{''.join(_card_element(i, lang, depth + 1) for i in el.get('items', []))}</div>"
    if kind == "Image":
        alt = str(el.get("altText") or t("teams.image_default", lang))
        return f'<span class="muted">{escape(t("teams.image", lang, alt=alt))}</span>'
    if kind == "ActionSet":
        return "".join(_card_action(a) for a in el.get("actions", []))
    return f'<span class="muted">{escape(t("teams.unknown_element", lang, type=kind))}</span>'


def _card_action(a: Any) -> str:
    if not isinstance(a, dict):
        return ""
    title = escape(str(a.get("title", "")))
    url = str(a.get("url", ""))
    if a.get("type") == "Action.OpenUrl" and url.lower().startswith(("http://", "https://")):
        return f'<a class="btn" href="{escape(url)}" rel="noopener noreferrer">{title}</a>'
    return f'<span class="btn">{title}</span>'


def render_card(content: str, lang: Lang = "en") -> str:
    try:
        card = json.loads(content)
    except (ValueError, TypeError):
        card = None
    if not isinstance(card, dict):
        return f'<div class="acard">{escape(t("teams.unreadable_card", lang))}</div>'
    body = "".join(_card_element(e, lang) for e in card.get("body", []))
    actions = "".join(_card_action(a) for a in card.get("actions", []))
    return f'<div class="acard" data-testid="adaptive-card">{body}{actions}</div>'


def render_message_body(message: dict[str, Any], lang: Lang = "en") -> str:
    cards = {a["id"]: render_card(a.get("content") or "", lang) for a in message.get("attachments", [])
             if a.get("contentType") == "application/vnd.microsoft.card.adaptive"}
    # A file (reference attachment) shows as its name, as Teams shows a file chip; no link to follow here.
    cards.update({a["id"]: f'<div class="acard afile" data-testid="file-attachment">'
                           f'{escape(t("teams.file", lang, name=str(a.get("name") or "")))}</div>'
                  for a in message.get("attachments", []) if a.get("contentType") == "reference"})
    cards.update(_quotes(message))
    body = message.get("body") or {}
    if body.get("contentType") == "html":
        return sanitise_html(body.get("content", ""), cards, lang)
    return escape(body.get("content", "")).replace("\n", "<br>")


def _quotes(message: dict[str, Any]) -> dict[str, str]:
    """A reply's quoted message (``messageReference`` attachment) as Teams shows it: sender and preview."""
    out = {}
    for a in message.get("attachments", []):
        if a.get("contentType") != "messageReference":
            continue
        try:
            ref = json.loads(a.get("content") or "")
        except (ValueError, TypeError):
            ref = None
        ref = ref if isinstance(ref, dict) else {}
        sender = (((ref.get("messageSender") or {}).get("user")) or {}).get("displayName") or "?"
        out[a["id"]] = (f'<blockquote class="quote" data-testid="quoted-message"><div class="meta">'
                        f'{escape(str(sender))}</div>{escape(str(ref.get("messagePreview") or ""))}</blockquote>')
    return out


def _chat_title(ui: Ui, sb: Sandbox, chat: dict[str, Any], viewer_id: str | None) -> str:
    if chat["topic"]:
        return chat["topic"]
    names = []
    for m in sb.state.chat_members(chat["id"]):
        if m["user_id"] == viewer_id:
            continue
        u = sb.state.user(m["user_id"])
        names.append(u.displayName if u else m["user_id"])
    return ", ".join(names) or ui.t("teams.untitled")


def _chat_type(ui: Ui, kind: str) -> str:
    key = f"teams.chat_type.{kind}"
    return ui.t(key) if has(key) else kind


def _when(ui: Ui, stamp: str) -> str:
    """``2026-12-01T13:24:41.123Z`` as 01.12.2026 13:24 (de) or 2026-12-01 13:24 (en), UTC."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)", stamp or "")
    if not m:
        return stamp
    y, mo, d, hh, mm = m.groups()
    day = f"{d}.{mo}.{y}" if ui.lang == "de" else f"{y}-{mo}-{d}"
    return f"{day} {hh}:{mm} UTC"


def _message(ui: Ui, m: dict[str, Any]) -> str:
    # Teams shows the subject as the message's heading line, above the body, and marks
    # high/urgent messages with "IMPORTANT!"/"URGENT!" ("WICHTIG!"/"DRINGEND!").
    sender = ((m.get("from") or {}).get("user") or {}).get("displayName") or "?"
    subject = f'<div class="subject" role="heading">{escape(m["subject"])}</div>' if m.get("subject") else ""
    imp = m.get("importance", "normal")
    imp = imp if imp in ("normal", "high", "urgent") else "normal"
    flag = f'<span class="flag">{escape(ui.t(f"teams.importance.{imp}"))}</span>' if imp != "normal" else ""
    return (f'<div class="msg importance-{imp}" data-testid="message" data-message-id="{escape(m["id"])}">'
            f'<div class="meta">{escape(sender)} · {escape(_when(ui, m["createdDateTime"]))}{flag}</div>{subject}'
            f'<div class="content">{render_message_body(m, ui.lang)}</div></div>')


def _team_side(ui: Ui, sb: Sandbox, as_upn: str, viewer_id: str | None, selected: tuple[str, str]) -> str:
    """The side bar's teams and their channels (a viewer's own; private channels only as a member)."""
    teams = channels.TEAMS if viewer_id is None else channels.joined_teams(sb.state, viewer_id)
    out = [f"<h3>{escape(ui.t('teams.section.teams'))}</h3>"] if teams else []
    for team in teams:
        out.append(f'<div class="meta" style="padding:6px 14px">{escape(team.displayName)}</div>')
        for c in channels.visible_channels(sb.state, team, viewer_id):
            qs = urlencode({k: v for k, v in (("team", team.id), ("channel", c.id), ("as", as_upn),
                                               ("ui_locales", ui.ui_locales)) if v})
            cls = "channel active" if selected == (team.id, c.id) else "channel"
            kind = f'<br><span class="muted">{escape(ui.t("teams.channel.private"))}</span>' if (
                c.membershipType == "private") else ""
            out.append(f'<a class="{cls}" href="/teams?{escape(qs)}" data-testid="channel-link">'
                       f"{escape(c.displayName)}{kind}</a>")
    return "".join(out)


def _channel_main(ui: Ui, sb: Sandbox, team_id: str, channel_id: str, viewer_id: str | None) -> list[str]:
    team = channels.team(team_id)
    c = channels.channel(team_id, channel_id)
    if team is None or c is None or (viewer_id is not None
                                     and not channels.is_channel_member(sb.state, team, c, viewer_id)):
        return [f'<p class="muted">{escape(ui.t("teams.channel.not_found"))}</p>']
    out = [f"<h2>{escape(team.displayName)} › {escape(c.displayName)}</h2>"]
    posts = channels.thread(sb.state, c)
    if not posts:
        out.append(f'<p class="muted">{escape(ui.t("teams.channel.no_posts"))}</p>')
    for root, replies in posts:
        out.append(_message(ui, root))
        if replies:
            out.append(f'<div class="replies" data-testid="replies"><div class="meta">'
                       f'{escape(ui.t("teams.channel.replies", n=len(replies)))}</div>'
                       + "".join(_message(ui, r) for r in replies) + "</div>")
    return out


async def teams_view(request: Request) -> Response:
    sb = sandbox_of(request)
    ui = Ui.of(request)
    as_upn = request.query_params.get("as", "")
    viewer = sb.state.user(as_upn) if as_upn else None
    viewer_id = viewer.id if viewer else None
    chats = sb.state.chats(viewer_id)
    team_id, channel_id = request.query_params.get("team", ""), request.query_params.get("channel", "")
    selected = request.query_params.get("chat") or ("" if channel_id else (chats[0]["id"] if chats else ""))
    side = []
    for ch in chats:
        qs = urlencode({k: v for k, v in (("chat", ch["id"]), ("as", as_upn), ("ui_locales", ui.ui_locales)) if v})
        cls = ' class="active"' if ch["id"] == selected else ""
        side.append(f'<a{cls} href="/teams?{escape(qs)}" data-testid="chat-link">'
                    f"{escape(_chat_title(ui, sb, ch, viewer_id))}"
                    f'<br><span class="muted">{escape(_chat_type(ui, ch["chat_type"]))}</span></a>')
    side.append(_team_side(ui, sb, as_upn, viewer_id, (team_id, channel_id)))
    main = [f'<p class="muted">{escape(ui.t("teams.no_chats"))}</p>'] if not chats and not channel_id else []
    if channel_id and not request.query_params.get("chat"):
        main += _channel_main(ui, sb, team_id, channel_id, viewer_id)
    chat = sb.state.chat(selected) if selected else None
    if chat is not None and (viewer is None or sb.state.is_member(chat["id"], viewer.id)):
        main.append(f"<h2>{escape(_chat_title(ui, sb, chat, viewer_id))}</h2>")
        msgs = sb.state.messages(chat["id"], newest_first=False)
        if not msgs:
            main.append(f'<p class="muted">{escape(ui.t("teams.no_messages"))}</p>')
        main += [_message(ui, m) for m in msgs]
    viewing = ui.t("teams.viewing_as", name=viewer.displayName) if viewer else ui.t("teams.all_chats")
    title = ui.t("teams.title")
    body = (f'<div class="banner">{escape(title)} — {escape(viewing)}</div><div class="teams"><nav class="side">'
            f'{"".join(side)}</nav><main class="main">{"".join(main)}</main></div>')
    refresh = request.query_params.get("refresh", "5")
    return _page(ui, title, body, refresh=int(refresh) if refresh.isdigit() and int(refresh) > 0 else None)


async def index(request: Request) -> Response:
    ui = Ui.of(request)
    links = (f'<ul><li><a href="/teams">{escape(ui.t("teams.title"))}</a></li>'
             f'<li><a href="/devicelogin">{escape(ui.t("index.devicelogin"))}</a></li>'
             f'<li><a href="/_sandbox/info">{escape(ui.t("index.info"))}</a></li></ul>')
    title = ui.t("index.title")
    return _page(ui, title, _card(ui, title, links))


routes = [
    Route("/", index, methods=["GET"]),
    Route("/devicelogin", devicelogin_get, methods=["GET"]),
    Route("/devicelogin", devicelogin_post, methods=["POST"]),
    Route("/teams", teams_view, methods=["GET"]),
    Route("/error", error_code_page, methods=["GET"]),
    Route("/{tenant}/v2.0/adminconsent", admin_consent, methods=["GET", "POST"]),
    Route("/{tenant}/adminconsent", admin_consent, methods=["GET", "POST"]),
    Route("/{tenant}/oauth2/v2.0/authorize", authorize, methods=["GET", "POST"]),
    Route("/{tenant}/oauth2/v2.0/logout", logout, methods=["GET", "POST"]),
    Route("/{tenant}/oauth2/v2.0/token", post_only, methods=["GET"]),
    Route("/{tenant}/oauth2/v2.0/devicecode", post_only, methods=["GET"]),
]
