"""Every page the sandbox tenant shows a person speaks the browser's language, German or English.

A real Chromium (Playwright, locale de-DE or en-US, so it sends that Accept-Language) walks the
sign-in by device code (code entry, wrong code, expired and used codes, sign-in with each refusal,
multi-factor, user consent, cancel, success), admin consent (refusal, decline, grant and its error
pages), the authorize endpoint, the error-code page, the start page and the Teams view. On each page
no visible text of the *other* language's catalog may appear, and ``<html lang>`` names the
language. ``ui_locales`` (OIDC) wins over Accept-Language and is kept through the form posts.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crmkit.sandbox import (
    SANDBOX_ADMIN_UPN,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_DISABLED_UPN,
    SANDBOX_MFA_CODE,
    SANDBOX_MFA_UPN,
    SANDBOX_PASSWORD,
    SANDBOX_PERSONAL_ACCOUNT,
    SANDBOX_TENANT_ID,
    SANDBOX_UNCONSENTED_CLIENT_ID,
)

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

CATALOG = json.loads((Path(__file__).resolve().parents[2] / "crmkit" / "sandbox" / "static" /
                      "catalog.json").read_text(encoding="utf-8"))
SCOPES = ["User.Read", "ChatMessage.Send", "Chat.Create"]
BOB = "jonas.becker@contoso.example"
LOCALES = {"de": "de-DE", "en": "en-US"}


def foreign_fragments(lang: str) -> list[str]:
    """Pieces (between placeholders) of the other language's strings that this language never uses."""
    other = "en" if lang == "de" else "de"
    own = [entry[lang] for entry in CATALOG.values()]
    pieces: set[str] = set()
    for entry in CATALOG.values():
        if entry[other] == entry[lang]:
            continue
        for piece in re.split(r"\{[^}]+\}", entry[other]):
            piece = piece.strip(" '.,:;")
            if len(piece) >= 5 and re.search(r"[A-Za-zÄÖÜäöüß]{3}", piece) and not any(piece in s for s in own):
                pieces.add(piece)
    return sorted(pieces)


def test_fragments_cover_both_languages() -> None:
    # The check below is only as good as its lists: most strings must contribute a fragment.
    assert len(foreign_fragments("de")) > 60 and len(foreign_fragments("en")) > 60


def test_catalog_has_both_languages_with_the_same_placeholders() -> None:
    for key, entry in CATALOG.items():
        assert set(entry) == {"de", "en"}, key
        assert sorted(re.findall(r"\{(\w+)\}", entry["de"])) == sorted(re.findall(r"\{(\w+)\}", entry["en"])), key


@pytest.mark.parametrize(("header", "ui_locales", "lang"), [
    ("de-DE,de;q=0.9,en;q=0.8", None, "de"),
    ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7", None, "en"),
    ("en;q=0, de-AT", None, "de"),
    ("fr", None, "en"),  # neither language: English, as Microsoft's sign-in falls back
    ("de", "fr en-GB", "en"),  # ui_locales wins, its first German or English tag
    ("en-US", "de", "de"),
])
def test_language_choice(header: str, ui_locales: str | None, lang: str) -> None:
    from starlette.requests import Request

    from crmkit.sandbox.i18n import request_lang

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "headers": [(b"accept-language", header.encode())]}
    assert request_lang(Request(scope), ui_locales) == lang


class Walk:
    """Visits pages in one browser context and keeps each page's visible text for the check."""

    def __init__(self, page: Any, lang: str) -> None:
        self.page, self.lang = page, lang
        self.seen: list[tuple[str, str, str]] = []  # (name, html lang, visible text)

    def record(self, name: str) -> str:
        text = self.page.inner_text("body")
        self.seen.append((name, self.page.get_attribute("html", "lang") or "", text))
        return text

    def goto(self, name: str, url: str) -> str:
        self.page.goto(url, wait_until="domcontentloaded")
        return self.record(name)

    def submit(self, name: str, fill: dict[str, str] | None = None, button: str | None = None) -> str:
        for field, value in (fill or {}).items():
            self.page.fill(f"[name={field}]", value)
        target = f"button[value={button}]" if button else "button[type=submit]"
        with self.page.expect_navigation(wait_until="domcontentloaded"):
            self.page.click(target)
        return self.record(name)

    def problems(self) -> list[str]:
        foreign = foreign_fragments(self.lang)
        out = []
        for name, html_lang, text in self.seen:
            if html_lang != self.lang:
                out.append(f"{name}: <html lang={html_lang!r}>")
            hits = [f for f in foreign if f in text]
            if hits:
                out.append(f"{name}: {hits[:4]}")
        return out


@pytest.fixture
def context_for(browser: Any) -> Iterator[Any]:
    made: list[Any] = []

    def make(lang: str) -> Any:
        ctx = browser.new_context(locale=LOCALES[lang], viewport={"width": 1200, "height": 900})
        made.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in made:
        ctx.close()


def _device_pages(walk: Walk, sandbox_admin: Any) -> None:
    url = sandbox_admin.url
    walk.goto("start page", f"{url}/")
    walk.goto("code entry", f"{url}/devicelogin")
    walk.submit("wrong code", {"otc": "XXXXXXXXX"})

    app = sandbox_admin.msal_app()
    flow = app.initiate_device_flow(scopes=SCOPES)
    walk.goto("code entry (flow)", flow["verification_uri"])
    walk.submit("sign-in page", {"otc": flow["user_code"]})
    for who, password, name in ((SANDBOX_DEFAULT_UPN, "wrong", "bad password"),
                                ("nobody@contoso.example", SANDBOX_PASSWORD, "unknown user"),
                                (SANDBOX_PERSONAL_ACCOUNT, SANDBOX_PASSWORD, "personal account"),
                                (SANDBOX_DISABLED_UPN, SANDBOX_PASSWORD, "disabled user")):
        walk.submit(name, {"login": who, "passwd": password}, button="signin")
    walk.submit("signed in", {"login": SANDBOX_DEFAULT_UPN, "passwd": SANDBOX_PASSWORD}, button="signin")
    walk.goto("code entry (again)", flow["verification_uri"])
    walk.submit("code already used", {"otc": flow["user_code"]})

    cancel = app.initiate_device_flow(scopes=SCOPES)
    walk.goto("code entry (cancel)", cancel["verification_uri"])
    walk.submit("sign-in page (cancel)", {"otc": cancel["user_code"]})
    walk.submit("cancelled", button="cancel")

    mfa = app.initiate_device_flow(scopes=SCOPES)
    walk.goto("code entry (mfa)", mfa["verification_uri"])
    walk.submit("sign-in page (mfa)", {"otc": mfa["user_code"]})
    walk.submit("mfa page", {"login": SANDBOX_MFA_UPN, "passwd": SANDBOX_PASSWORD}, button="signin")
    walk.submit("mfa wrong code", {"mfa_code": "000000"}, button="verify")
    walk.submit("mfa signed in", {"mfa_code": SANDBOX_MFA_CODE}, button="verify")

    consent = sandbox_admin.msal_app(SANDBOX_UNCONSENTED_CLIENT_ID).initiate_device_flow(scopes=SCOPES)
    walk.goto("code entry (consent)", consent["verification_uri"])
    walk.submit("sign-in page (consent)", {"otc": consent["user_code"]})
    walk.submit("user consent", {"login": SANDBOX_DEFAULT_UPN, "passwd": SANDBOX_PASSWORD}, button="signin")
    walk.submit("consented", button="accept")

    sandbox_admin.put("config", {"device_code_lifetime_s": 1})
    expired = app.initiate_device_flow(scopes=SCOPES)
    time.sleep(1.3)
    walk.goto("code entry (expired)", expired["verification_uri"])
    walk.submit("code expired", {"otc": expired["user_code"]})


def _consent_and_error_pages(walk: Walk, sandbox_admin: Any) -> None:
    url = sandbox_admin.url
    sandbox_admin.put("consent", {"client_id": SANDBOX_UNCONSENTED_CLIENT_ID, "admin_consented": False})
    consent = f"{url}/organizations/adminconsent?client_id={SANDBOX_UNCONSENTED_CLIENT_ID}"
    walk.goto("admin consent", consent)
    walk.submit("admin consent refused", {"login": SANDBOX_DEFAULT_UPN, "passwd": SANDBOX_PASSWORD},
                button="accept")
    walk.submit("admin consent declined", button="cancel")
    walk.goto("admin consent (again)", consent)
    walk.submit("admin consent granted", {"login": SANDBOX_ADMIN_UPN, "passwd": SANDBOX_PASSWORD}, button="accept")
    walk.goto("error: unknown tenant", f"{url}/nosuchtenant.example/adminconsent?client_id=x")
    walk.goto("error: common", f"{url}/common/adminconsent?client_id={SANDBOX_UNCONSENTED_CLIENT_ID}")
    walk.goto("error: unknown client", f"{url}/organizations/adminconsent?client_id=11111111-2222-3333-4444-5555")
    walk.goto("error: redirect", f"{url}/{SANDBOX_TENANT_ID}/v2.0/adminconsent?client_id="
              f"{SANDBOX_UNCONSENTED_CLIENT_ID}&redirect_uri=https://evil.example/cb")
    walk.goto("error: authorize", f"{url}/organizations/oauth2/v2.0/authorize?client_id=x&response_type=code")
    walk.goto("error code page", f"{url}/error?code=50126")


def _teams_pages(walk: Walk, sandbox_admin: Any) -> None:
    url = sandbox_admin.url
    walk.goto("teams: no chats", f"{url}/teams?refresh=0")
    sandbox_admin.put("limits", {"enabled": False})  # Teams' per-chat posting limit is not under test here
    g = sandbox_admin.graph()

    def chat(kind: str, upns: tuple[str, ...]) -> str:
        members = [{"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": ["owner"],
                    "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{u}')"} for u in upns]
        r = g.post("chats", json={"chatType": kind, "members": members})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    one = chat("oneOnOne", (SANDBOX_DEFAULT_UPN, BOB))
    group = chat("group", (SANDBOX_DEFAULT_UPN, BOB, SANDBOX_ADMIN_UPN))
    card = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "TextBlock", "text": "ACME GmbH", "weight": "Bolder"},
        {"type": "Image", "url": "https://example.invalid/x.png"},
        {"type": "Media"}]}
    for importance in ("high", "urgent"):
        r = g.post(f"chats/{one}/messages", json={
            "subject": "cobra CRM - Lead", "importance": importance,
            "body": {"contentType": "html", "content": '<p>Hallo</p><attachment id="c1"></attachment>'},
            "attachments": [{"id": "c1", "contentType": "application/vnd.microsoft.card.adaptive",
                             "content": json.dumps(card)}]})
        assert r.status_code == 201, r.text
    walk.goto("teams: all chats", f"{url}/teams?chat={one}&refresh=0")
    walk.goto("teams: viewing as", f"{url}/teams?chat={one}&as={BOB}&refresh=0")
    walk.goto("teams: empty group chat", f"{url}/teams?chat={group}&as={BOB}&refresh=0")


@pytest.mark.parametrize("lang", ["de", "en"])
def test_every_sandbox_page_speaks_the_browsers_language(sandbox_admin: Any, context_for: Any, lang: str) -> None:
    walk = Walk(context_for(lang), lang)
    _device_pages(walk, sandbox_admin)
    _consent_and_error_pages(walk, sandbox_admin)
    _teams_pages(walk, sandbox_admin)
    assert len(walk.seen) >= 40
    assert not walk.problems(), "\n".join(walk.problems())


@pytest.mark.parametrize(("browser_lang", "ui_locales"), [("en", "de-DE en"), ("de", "en-US")])
def test_ui_locales_wins_over_the_browser_and_is_kept(sandbox_admin: Any, context_for: Any, browser_lang: str,
                                                     ui_locales: str) -> None:
    lang = ui_locales[:2]
    walk = Walk(context_for(browser_lang), lang)
    flow = sandbox_admin.msal_app().initiate_device_flow(scopes=SCOPES)
    walk.goto("code entry", f"{flow['verification_uri']}?ui_locales={ui_locales.replace(' ', '+')}")
    walk.submit("sign-in page", {"otc": flow["user_code"]})
    walk.submit("bad password", {"login": SANDBOX_DEFAULT_UPN, "passwd": "wrong"}, button="signin")
    text = walk.submit("signed in", {"login": SANDBOX_DEFAULT_UPN, "passwd": SANDBOX_PASSWORD}, button="signin")
    assert CATALOG["done.signed_in.title"][lang] in text
    walk.goto("authorize", f"{sandbox_admin.url}/organizations/oauth2/v2.0/authorize?client_id=x&ui_locales={lang}")
    assert not walk.problems(), "\n".join(walk.problems())


def test_device_code_message_follows_mkt(sandbox_admin: Any) -> None:
    # Entra localises the device-code response's message with ?mkt=xx-XX on the request.
    app = sandbox_admin.msal_app()
    german = app.initiate_device_flow(scopes=SCOPES, params={"mkt": "de-DE"})
    assert german["message"].startswith("Um sich anzumelden, öffnen Sie die Seite "), german["message"]
    assert german["user_code"] in german["message"]
    english = app.initiate_device_flow(scopes=SCOPES)
    assert english["message"].startswith("To sign in, use a web browser"), english["message"]
