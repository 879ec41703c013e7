"""Browser pages: device-code sign-in, admin consent, and the read-only "Teams (sandbox)" view.

Plain server-rendered HTML.  Every value is escaped; message HTML is passed through a small
allow-list sanitiser, and adaptive cards are rendered as simple HTML (no remote images).
"""

from __future__ import annotations

import json
import re
import time
from html import escape as _html_escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from . import SANDBOX_TENANT_ID, SANDBOX_TENANT_NAME
from .core import Sandbox, sandbox_of
from .identity import (
    AuthError,
    DeviceCode,
    _check_tenant,
    admin_consent_redirect_ok,
    authenticate,
    err_unknown_client,
    find_user_code,
    needs_consent,
    new_ticket,
    parse_scopes,
)
from .state import DELEGATED_SCOPES

# Control characters (but tab and line feed) and bidi embeddings, overrides and isolates in stored
# text are not shown: a message, a card value or a name cannot ring, cut off or reorder the page
# around it. The sandbox stands for Teams, so it keeps its own rule instead of crmkit's.
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape(text: str, quote: bool = True) -> str:
    """HTML-escaped ``text`` without control and bidi formatting characters."""
    return _html_escape(_UNSHOWN.sub("", str(text)), quote)


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
.meta{font-size:12px;color:#616161} .subject{font-weight:600;font-size:15px;margin:4px 0}
.importance-high{border-left:4px solid #c4314b} .importance-urgent{border-left:4px solid #e81123}
.mention{color:#6264a7;font-weight:600} .acard{border:1px solid #ccc;border-radius:4px;padding:8px 12px;margin:6px 0}
.acard table{border-collapse:collapse} .acard th{text-align:left;padding-right:12px;color:#616161}
.cols{display:flex;gap:12px} .btn{display:inline-block;border:1px solid #999;padding:2px 10px;margin:4px 4px 0 0}
.banner{background:#464775;color:#fff;padding:8px 16px;font-weight:600}
"""

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def _page(title: str, body: str, *, status: int = 200, refresh: int | None = None) -> HTMLResponse:
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}<title>{escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>{body}</body></html>")
    return HTMLResponse(doc, status_code=status, headers=_HEADERS)


def _card(title: str, inner: str, error: str | None = None) -> str:
    err = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return (f'<div class="card"><p class="muted">{escape(SANDBOX_TENANT_NAME)} · sandbox tenant</p>'
            f"<h1>{escape(title)}</h1>{err}{inner}</div>")


def _hidden(**fields: str) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items())


# -- device code sign-in ---------------------------------------------------------------------
def _code_form(error: str | None = None) -> HTMLResponse:
    inner = ('<form method="post" action="/devicelogin">' + _hidden(step="code") +
             '<p>Enter the code displayed on your app or device.</p>'
             '<label for="otc">Code</label><input type="text" id="otc" name="otc" autocomplete="off" autofocus>'
             '<button class="primary" type="submit">Next</button></form>')
    return _page("Enter code", _card("Enter code", inner, error), status=400 if error else 200)


def _signin_form(sb: Sandbox, ticket: str, dc: DeviceCode, error: str | None = None, login: str = "") -> HTMLResponse:
    app = sb.state.app(dc.client_id)
    name = app.name if app else dc.client_id
    inner = ('<form method="post" action="/devicelogin">' + _hidden(step="signin", ticket=ticket) +
             f"<p>Sign in to <b>{escape(name)}</b>. Are you trying to sign in to {escape(name)}? Only continue "
             "if you downloaded the app from a store or website that you trust.</p>"
             '<label for="login">Email or username</label>'
             f'<input type="text" id="login" name="login" value="{escape(login)}" autocomplete="username">'
             '<label for="passwd">Password</label>'
             '<input type="password" id="passwd" name="passwd" autocomplete="current-password">'
             '<button class="primary" type="submit" name="action" value="signin">Sign in</button>'
             '<button type="submit" name="action" value="cancel">Cancel</button></form>')
    return _page("Sign in", _card("Sign in", inner, error), status=400 if error else 200)


def _mfa_form(ticket: str, error: str | None = None) -> HTMLResponse:
    inner = ('<form method="post" action="/devicelogin">' + _hidden(step="mfa", ticket=ticket) +
             "<p>Your organisation requires multi-factor authentication. Enter the code from your "
             "authenticator app (the sandbox's code is documented as SANDBOX_MFA_CODE).</p>"
             '<label for="mfa_code">Verification code</label>'
             '<input type="text" id="mfa_code" name="mfa_code" autocomplete="one-time-code">'
             '<button class="primary" type="submit" name="action" value="verify">Verify</button>'
             '<button type="submit" name="action" value="cancel">Cancel</button></form>')
    return _page("Verify your identity", _card("Verify your identity", inner, error), status=400 if error else 200)


def _consent_form(sb: Sandbox, ticket: str, dc: DeviceCode) -> HTMLResponse:
    app = sb.state.app(dc.client_id)
    assert app is not None
    scopes = parse_scopes(dc.scope, app, consented=set(app.delegated_scopes)).graph
    items = "".join(f"<li>{escape(s)}</li>" for s in scopes)
    inner = ('<form method="post" action="/devicelogin">' + _hidden(step="consent", ticket=ticket) +
             f"<p><b>{escape(app.name)}</b> needs permission to:</p><ul>{items}</ul>"
             "<p class=muted>Accepting lets this app use the data as described. Nobody in your organisation "
             "has consented to this app yet.</p>"
             '<button class="primary" type="submit" name="action" value="accept">Accept</button>'
             '<button type="submit" name="action" value="cancel">Cancel</button></form>')
    return _page("Permissions requested", _card("Permissions requested", inner))


def _done(title: str, text: str) -> HTMLResponse:
    return _page(title, _card(title, f"<p>{escape(text)}</p>"))


def _approve(sb: Sandbox, dc: DeviceCode, user_id: str) -> HTMLResponse:
    dc.status, dc.user_id = "approved", user_id
    app = sb.state.app(dc.client_id)
    return _done("You're signed in", f"You have signed in to the {app.name if app else dc.client_id} application "
                 "on your device. You may now close this window.")


def _after_auth(sb: Sandbox, ticket: str, dc: DeviceCode, user_id: str) -> HTMLResponse:
    app = sb.state.app(dc.client_id)
    assert app is not None
    scopes = parse_scopes(dc.scope, app, consented=set(app.delegated_scopes)).graph
    if needs_consent(sb, app, user_id, scopes):
        sb.signin_tickets[ticket].update(stage="consent", user_id=user_id)
        return _consent_form(sb, ticket, dc)
    return _approve(sb, dc, user_id)


async def devicelogin_get(request: Request) -> Response:
    return _code_form()


async def devicelogin_post(request: Request) -> Response:
    sb = sandbox_of(request)
    form = {k: str(v) for k, v in (await request.form()).items()}
    step = form.get("step", "code")
    if step == "code":
        dc = find_user_code(sb, form.get("otc", ""))
        if dc is None:
            return _code_form("That code didn't work. Check the code and try again.")
        if time.time() > dc.expires_at:
            return _code_form("The code you entered has expired. Get a new code from the app and try again.")
        if dc.status != "pending":
            return _code_form("That code has already been used. Get a new code from the app and try again.")
        return _signin_form(sb, new_ticket(sb, stage="signin", device_code=dc.device_code), dc)

    ticket = form.get("ticket", "")
    t = sb.signin_tickets.get(ticket)
    dc = sb.device_codes.get(t["device_code"]) if t else None
    if t is None or dc is None or t.get("stage") != step:
        return _code_form("Your sign-in session has expired. Enter the code again.")
    if time.time() > dc.expires_at or dc.status != "pending":
        sb.signin_tickets.pop(ticket, None)
        return _code_form("The code has expired or was already used. Get a new code from the app and try again.")
    if form.get("action") == "cancel":
        dc.status = "declined"
        sb.signin_tickets.pop(ticket, None)
        return _done("Sign-in cancelled", "You declined to sign in to the application. You can close this window.")
    app = sb.state.app(dc.client_id)
    if step == "signin":
        try:
            user = authenticate(sb, form.get("login", ""), form.get("passwd", ""), app, mfa_possible=True)
        except AuthError as e:
            return _signin_form(sb, ticket, dc, str(e), form.get("login", ""))
        if user.mfa_required:
            t.update(stage="mfa", user_id=user.id)
            return _mfa_form(ticket)
        return _after_auth(sb, ticket, dc, user.id)
    if step == "mfa":
        from . import SANDBOX_MFA_CODE

        if form.get("mfa_code", "").strip() != SANDBOX_MFA_CODE:
            return _mfa_form(ticket, "AADSTS50074: The verification code is not correct. Try again.")
        return _after_auth(sb, ticket, dc, t["user_id"])
    if step == "consent" and form.get("action") == "accept" and app is not None:
        scopes = parse_scopes(dc.scope, app, consented=set(app.delegated_scopes)).graph
        sb.state.grant_user_consent(t["user_id"], app.client_id, scopes)
        sb.signin_tickets.pop(ticket, None)
        return _approve(sb, dc, t["user_id"])
    return _code_form("Unexpected request. Enter the code again.")


# -- admin consent ---------------------------------------------------------------------------
def _redirect_with(uri: str, params: dict[str, str]) -> RedirectResponse:
    sep = "&" if "?" in uri else "?"
    return RedirectResponse(uri + sep + urlencode(params, quote_via=quote), status_code=302)


async def admin_consent(request: Request) -> Response:
    sb = sandbox_of(request)
    q = request.query_params
    v2 = "/v2.0/" in request.url.path
    try:
        tenant = _check_tenant(request)
        if tenant.lower() == "common":
            raise AuthError("invalid_request", 90130, "Admin consent cannot use the /common endpoint; use "
                            "/organizations or the tenant.")
        client_id = q.get("client_id", "")
        app = sb.state.app(client_id)
        if app is None:
            raise err_unknown_client(client_id)
        redirect_uri = q.get("redirect_uri", "")
        if (v2 or redirect_uri) and not admin_consent_redirect_ok(redirect_uri):
            raise AuthError("invalid_request", 50011, f"The redirect URI '{redirect_uri}' specified in the request "
                            f"does not match the redirect URIs configured for the application '{client_id}'.")
    except AuthError as e:
        return _page("Sign in error", _card("Sorry, but we're having trouble signing you in.", "", str(e)),
                     status=400)
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
            return _done("Consent declined", "No permissions were granted.")
        try:
            user = authenticate(sb, form.get("login", ""), form.get("passwd", ""), app, mfa_possible=True)
            if not user.can_admin_consent:
                raise AuthError("access_denied", 90094, "The grant requires admin permission. Sign in with a "
                                "Global Administrator or Privileged Role Administrator account.")
        except AuthError as e:
            error = str(e)
        else:
            sb.state.set_admin_consent(app.client_id, True)
            params = {"admin_consent": "True", "tenant": SANDBOX_TENANT_ID}
            if v2:
                params["scope"] = scope
            if state is not None:
                params["state"] = state
            if redirect_uri:
                return _redirect_with(redirect_uri, params)
            return _done("Permissions granted", f"{app.name} may now be used by everyone in {SANDBOX_TENANT_NAME}.")
    requested = [s.rsplit("/", 1)[-1] for s in scope.split()] or list(DELEGATED_SCOPES)
    items = "".join(f"<li>{escape(s)}</li>" for s in requested)
    inner = (f'<form method="post" action="{escape(str(request.url.path))}?{escape(request.url.query)}">'
             f"<p><b>{escape(app.name)}</b> requests these permissions for your whole organisation:</p>"
             f"<ul>{items}</ul>"
             '<label for="login">Administrator account</label>'
             f'<input type="text" id="login" name="login" value="{escape(form.get("login", ""))}">'
             '<label for="passwd">Password</label><input type="password" id="passwd" name="passwd">'
             '<button class="primary" type="submit" name="action" value="accept">Accept</button>'
             '<button type="submit" name="action" value="cancel">Cancel</button></form>')
    return _page("Permissions requested", _card("Permissions requested – accept for your organisation", inner,
                                                   error), status=400 if error else 200)


# -- Teams view ------------------------------------------------------------------------------
_ALLOWED_TAGS = {"p", "div", "span", "b", "strong", "i", "em", "u", "s", "br", "ul", "ol", "li", "table", "thead",
                 "tbody", "tr", "td", "th", "h1", "h2", "h3", "h4", "pre", "code", "blockquote", "hr", "a"}
_VOID = {"br", "hr"}
_DROP_CONTENT = {"script", "style", "iframe", "object", "embed", "template", "noscript", "svg", "math"}


class _Sanitiser(HTMLParser):
    def __init__(self, cards: dict[str, str]) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.cards = cards
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
            self.out.append(self.cards.get(a.get("id") or "", "<div class=acard>[attachment]</div>"))
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


def sanitise_html(content: str, cards: dict[str, str] | None = None) -> str:
    s = _Sanitiser(cards or {})
    s.feed(content)
    return s.result()


def _card_element(el: Any, depth: int = 0) -> str:
    if not isinstance(el, dict) or depth > 8:
        return ""
    t = el.get("type")
    if t == "TextBlock":
        style = ""
        if el.get("weight") == "Bolder":
            style += "font-weight:600;"
        size = {"Large": "18px", "ExtraLarge": "22px", "Medium": "16px", "Small": "12px"}.get(el.get("size", ""))
        if size:
            style += f"font-size:{size};"
        return f'<p style="{style}margin:4px 0">{escape(str(el.get("text", "")))}</p>'
    if t == "RichTextBlock":
        runs = "".join(escape(str(r.get("text", ""))) if isinstance(r, dict) else escape(str(r))
                       for r in el.get("inlines", []))
        return f"<p>{runs}</p>"
    if t == "FactSet":
        rows = "".join(f"<tr><th>{escape(str(f.get('title', '')))}</th><td>{escape(str(f.get('value', '')))}</td></tr>"
                       for f in el.get("facts", []) if isinstance(f, dict))
        return f"<table>{rows}</table>"
    if t == "ColumnSet":
        cols = "".join(f"<div>{''.join(_card_element(i, depth + 1) for i in c.get('items', []))}</div>"
                       for c in el.get("columns", []) if isinstance(c, dict))
        return f'<div class="cols">{cols}</div>'
    if t == "Container":
        return f"<div>{''.join(_card_element(i, depth + 1) for i in el.get('items', []))}</div>"
    if t == "Image":
        return f'<span class="muted">[image: {escape(str(el.get("altText") or "image"))}]</span>'
    if t == "ActionSet":
        return "".join(_card_action(a) for a in el.get("actions", []))
    return f'<span class="muted">[{escape(str(t))}]</span>'


def _card_action(a: Any) -> str:
    if not isinstance(a, dict):
        return ""
    title = escape(str(a.get("title", "")))
    url = str(a.get("url", ""))
    if a.get("type") == "Action.OpenUrl" and url.lower().startswith(("http://", "https://")):
        return f'<a class="btn" href="{escape(url)}" rel="noopener noreferrer">{title}</a>'
    return f'<span class="btn">{title}</span>'


def render_card(content: str) -> str:
    try:
        card = json.loads(content)
    except (ValueError, TypeError):
        return '<div class="acard">[unreadable card]</div>'
    body = "".join(_card_element(e) for e in card.get("body", []))
    actions = "".join(_card_action(a) for a in card.get("actions", []))
    return f'<div class="acard" data-testid="adaptive-card">{body}{actions}</div>'


def render_message_body(message: dict[str, Any]) -> str:
    cards = {a["id"]: render_card(a.get("content") or "") for a in message.get("attachments", [])
             if a.get("contentType") == "application/vnd.microsoft.card.adaptive"}
    body = message.get("body") or {}
    if body.get("contentType") == "html":
        return sanitise_html(body.get("content", ""), cards)
    return escape(body.get("content", "")).replace("\n", "<br>")


def _chat_title(sb: Sandbox, chat: dict[str, Any], viewer_id: str | None) -> str:
    if chat["topic"]:
        return chat["topic"]
    names = []
    for m in sb.state.chat_members(chat["id"]):
        if m["user_id"] == viewer_id:
            continue
        u = sb.state.user(m["user_id"])
        names.append(u.displayName if u else m["user_id"])
    return ", ".join(names) or "(chat)"


async def teams_view(request: Request) -> Response:
    sb = sandbox_of(request)
    as_upn = request.query_params.get("as", "")
    viewer = sb.state.user(as_upn) if as_upn else None
    chats = sb.state.chats(viewer.id if viewer else None)
    selected = request.query_params.get("chat") or (chats[0]["id"] if chats else "")
    side = []
    for ch in chats:
        qs = urlencode({k: v for k, v in (("chat", ch["id"]), ("as", as_upn)) if v})
        cls = ' class="active"' if ch["id"] == selected else ""
        side.append(f'<a{cls} href="/teams?{escape(qs)}" data-testid="chat-link">'
                    f"{escape(_chat_title(sb, ch, viewer.id if viewer else None))}"
                    f'<br><span class="muted">{escape(ch["chat_type"])}</span></a>')
    main = ['<p class="muted">No chats yet. Messages sent by crmkit appear here.</p>'] if not chats else []
    chat = sb.state.chat(selected) if selected else None
    if chat is not None and (viewer is None or sb.state.is_member(chat["id"], viewer.id)):
        main.append(f"<h2>{escape(_chat_title(sb, chat, viewer.id if viewer else None))}</h2>")
        msgs = sb.state.messages(chat["id"], newest_first=False)
        if not msgs:
            main.append('<p class="muted">No messages in this chat yet.</p>')
        for m in msgs:
            sender = ((m.get("from") or {}).get("user") or {}).get("displayName") or "?"
            subject = f'<div class="subject">{escape(m["subject"])}</div>' if m.get("subject") else ""
            imp = m.get("importance", "normal")
            flag = f' <b>{escape(imp.upper())}</b>' if imp != "normal" else ""
            main.append(f'<div class="msg importance-{escape(imp)}" data-testid="message" '
                        f'data-message-id="{escape(m["id"])}"><div class="meta">{escape(sender)} · '
                        f'{escape(m["createdDateTime"])}{flag}</div>{subject}'
                        f'<div class="content">{render_message_body(m)}</div></div>')
    viewing = f" — viewing as {escape(viewer.displayName)}" if viewer else " — all chats"
    body = (f'<div class="banner">Teams (sandbox){viewing}</div><div class="teams"><nav class="side">'
            f'{"".join(side)}</nav><main class="main">{"".join(main)}</main></div>')
    refresh = request.query_params.get("refresh", "5")
    return _page("Teams (sandbox)", body, refresh=int(refresh) if refresh.isdigit() and int(refresh) > 0 else None)


async def index(request: Request) -> Response:
    links = ('<ul><li><a href="/teams">Teams (sandbox)</a></li><li><a href="/devicelogin">Device sign-in</a>'
             '</li><li><a href="/_sandbox/info">Sandbox info (JSON)</a></li></ul>')
    return _page("crmkit sandbox tenant", _card("crmkit sandbox tenant", links))


routes = [
    Route("/", index, methods=["GET"]),
    Route("/devicelogin", devicelogin_get, methods=["GET"]),
    Route("/devicelogin", devicelogin_post, methods=["POST"]),
    Route("/teams", teams_view, methods=["GET"]),
    Route("/{tenant}/v2.0/adminconsent", admin_consent, methods=["GET", "POST"]),
    Route("/{tenant}/adminconsent", admin_consent, methods=["GET", "POST"]),
]
