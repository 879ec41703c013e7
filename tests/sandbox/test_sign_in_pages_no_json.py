"""No raw JSON for a person: every endpoint a browser opens answers bad input with a page in the person's
language (``ui_locales`` or Accept-Language), carrying Microsoft's AADSTS code — or, for the errors OAuth
sends back to a client whose redirect URI is registered, a redirect there; never a JSON body.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import httpx
import pytest

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_TENANT_ID
from crmkit.sandbox.i18n import t
from tests.support.sandbox import SandboxProc

pytestmark = pytest.mark.sandbox

T = SANDBOX_TENANT_ID
R = "http://127.0.0.1:8765/callback"
UNKNOWN = "11111111-2222-3333-4444-555555555555"
GOOD = {"client_id": SANDBOX_CLIENT_ID, "response_type": "code", "redirect_uri": R, "scope": "User.Read"}


def _without(d: dict[str, str], key: str) -> dict[str, str]:
    return {k: v for k, v in d.items() if k != key}


# (case, method, path, query, expected AADSTS code for a page, or "redirect" for an error sent to R)
CASES: list[tuple[str, str, str, dict[str, str], int | str | None]] = [
    ("authorize: no client_id", "GET", f"/{T}/oauth2/v2.0/authorize", _without(GOOD, "client_id"), 900144),
    ("authorize: unknown client_id", "GET", f"/{T}/oauth2/v2.0/authorize", {**GOOD, "client_id": UNKNOWN}, 700016),
    ("authorize: bad redirect_uri", "GET", f"/{T}/oauth2/v2.0/authorize",
     {**GOOD, "redirect_uri": "https://evil.example/cb"}, 50011),
    ("authorize: no redirect_uri", "GET", f"/{T}/oauth2/v2.0/authorize", _without(GOOD, "redirect_uri"), 50011),
    ("authorize: unknown tenant", "GET", "/nosuch.example/oauth2/v2.0/authorize", GOOD, 90002),
    ("authorize: no response_type", "GET", f"/{T}/oauth2/v2.0/authorize", _without(GOOD, "response_type"),
     900144),
    ("authorize: response_type token", "GET", f"/{T}/oauth2/v2.0/authorize", {**GOOD, "response_type": "token"},
     "redirect"),
    ("authorize: bad code_challenge_method", "GET", f"/{T}/oauth2/v2.0/authorize",
     {**GOOD, "code_challenge": "abc", "code_challenge_method": "S512"}, "redirect"),
    ("authorize: bad scope", "GET", f"/{T}/oauth2/v2.0/authorize", {**GOOD, "scope": "Nope.Nothing"}, "redirect"),
    ("authorize: bad response_mode", "GET", f"/{T}/oauth2/v2.0/authorize", {**GOOD, "response_mode": "jwt"},
     "redirect"),
    ("authorize: stale sign-in step", "POST", f"/{T}/oauth2/v2.0/authorize",
     {"ticket": "nope", "step": "signin", "login": "x", "passwd": "y"}, None),
    ("adminconsent v2: /common", "GET", "/common/v2.0/adminconsent",
     {"client_id": SANDBOX_CLIENT_ID, "redirect_uri": R, "scope": "https://graph.crmkit.localhost/.default"}, 90130),
    ("adminconsent v2: unknown tenant", "GET", "/nosuch.example/v2.0/adminconsent",
     {"client_id": SANDBOX_CLIENT_ID, "redirect_uri": R}, 90002),
    ("adminconsent v2: no client_id", "GET", f"/{T}/v2.0/adminconsent", {"redirect_uri": R}, 900144),
    ("adminconsent v2: unknown client", "GET", f"/{T}/v2.0/adminconsent", {"client_id": UNKNOWN, "redirect_uri": R},
     700016),
    ("adminconsent v2: bad redirect_uri", "GET", f"/{T}/v2.0/adminconsent",
     {"client_id": SANDBOX_CLIENT_ID, "redirect_uri": "https://evil.example/cb"}, 50011),
    ("adminconsent v2: no redirect_uri", "GET", f"/{T}/v2.0/adminconsent", {"client_id": SANDBOX_CLIENT_ID}, 50011),
    ("adminconsent: /common", "GET", "/common/adminconsent", {"client_id": SANDBOX_CLIENT_ID}, 90130),
    ("adminconsent: unknown tenant", "GET", "/nosuch.example/adminconsent", {"client_id": SANDBOX_CLIENT_ID}, 90002),
    ("adminconsent: no client_id", "GET", "/organizations/adminconsent", {}, 900144),
    ("adminconsent: unknown client", "GET", "/organizations/adminconsent", {"client_id": UNKNOWN}, 700016),
    ("adminconsent: bad redirect_uri", "GET", "/organizations/adminconsent",
     {"client_id": SANDBOX_CLIENT_ID, "redirect_uri": "https://evil.example/cb"}, 50011),
    ("devicelogin: wrong code", "POST", "/devicelogin", {"step": "code", "otc": "NOPE12345"}, None),
    ("devicelogin: stale sign-in step", "POST", "/devicelogin", {"step": "signin", "ticket": "nope"}, None),
    ("error page: odd code", "GET", "/error", {"code": "<b>x</b>"}, None),
    ("logout: unknown tenant", "GET", "/nosuch.example/oauth2/v2.0/logout", {}, 90002),
    ("logout: unknown client", "GET", f"/{T}/oauth2/v2.0/logout",
     {"client_id": UNKNOWN, "post_logout_redirect_uri": R}, 700016),
    ("logout: bad post_logout_redirect_uri", "GET", f"/{T}/oauth2/v2.0/logout",
     {"client_id": SANDBOX_CLIENT_ID, "post_logout_redirect_uri": "https://evil.example/"}, 50011),
    ("token endpoint opened in a browser", "GET", f"/{T}/oauth2/v2.0/token", {}, 900561),
    ("v1 authorize (not served)", "GET", f"/{T}/oauth2/authorize", GOOD, None),
]

# Words of the person's language on the page (the heading of an error page or of the page shown).
_LANG_WORDS = {"de": re.compile(r"Anmeld|Code|Fehler|Seite|Sandbox-Mandant"),
               "en": re.compile(r"Sign|sign|code|Error|page|sandbox tenant")}


@pytest.mark.parametrize("how", ["ui_locales", "accept-language"])
@pytest.mark.parametrize("lang", ["de", "en"])
@pytest.mark.parametrize(("case", "method", "path", "query", "code"), CASES, ids=[c[0] for c in CASES])
def test_a_person_never_gets_json(sp: SandboxProc, case: str, method: str, path: str, query: dict[str, str],
                                  code: int | str | None, lang: str, how: str) -> None:
    headers = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    params = dict(query)
    if how == "ui_locales":
        params["ui_locales"] = lang
        headers["Accept-Language"] = "fr-FR" if lang == "en" else "en-US"  # ui_locales wins over the browser
    else:
        headers["Accept-Language"] = {"de": "de-DE,de;q=0.9", "en": "en-GB,en;q=0.9"}[lang]
    if method == "GET":
        r = httpx.get(f"{sp.url}{path}?{urlencode(params)}", headers=headers)
    else:
        r = httpx.post(f"{sp.url}{path}", data=params, headers=headers)
    assert not r.headers.get("content-type", "").startswith("application/json"), (case, r.text[:300])
    if code == "redirect":
        assert r.status_code == 302 and r.headers["location"].startswith(R + "?"), (case, r.status_code, r.text[:300])
        assert "error=" in r.headers["location"] and "AADSTS" in r.headers["location"]
        return
    assert "location" not in r.headers, (case, r.headers.get("location"))
    assert r.headers["content-type"].startswith("text/html"), (case, r.headers["content-type"], r.text[:300])
    assert r.headers.get("content-language") == lang, (case, r.headers.get("content-language"))
    text = html.unescape(r.text)
    assert f"<html lang={lang}>" in r.text
    assert _LANG_WORDS[lang].search(text), (case, text[:400])
    if isinstance(code, int):
        assert f"AADSTS{code}" in text, (case, text[:600])
        key = f"aadsts.{code}"
        from crmkit.sandbox.i18n import has

        assert has(key), f"no {lang} text for AADSTS{code} in the sandbox catalog"
        fixed = re.split(r"\{\w+\}", t(key, lang))  # the catalog text around its placeholders
        assert all(part.strip() in text for part in fixed if part.strip()), (case, lang, text[:600])
        assert t("error.heading", lang) in text, (case, text[:600])
