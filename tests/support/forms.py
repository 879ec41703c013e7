"""The sandbox's HTML forms (device code, sign-in, consent, form_post) submitted the way a browser does: the
page's one form, its action, hidden inputs and the pressed button's value. The one place tests fill them:
:class:`support.sandbox.Browser` and the sandbox handle's sign-in steps use it, and :func:`fill_sign_in` types the
same sign-in into Chromium for the browser tests."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin

import httpx

from crmkit.sandbox import SANDBOX_PASSWORD


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, Any]] = []
        self.alerts: list[str] = []
        self._in_alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                               "fields": {}, "inputs": [], "buttons": []})
        elif tag == "input" and self.forms:
            f = self.forms[-1]
            name = a.get("name")
            if not name:
                return
            f["inputs"].append((name, a.get("type", "text")))
            f["fields"][name] = a.get("value", "")  # browsers send empty inputs too
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))
        elif tag == "p" and a.get("role") == "alert":
            self._in_alert = True

    def handle_data(self, data: str) -> None:
        if self._in_alert:
            self.alerts.append(data)
            self._in_alert = False


def page_forms(html: str) -> _FormParser:
    """The page's forms (action, method, fields with their values, inputs, buttons) and its alerts."""
    p = _FormParser()
    p.feed(html)
    return p


def submit(client: httpx.Client, response: httpx.Response, fill: dict[str, str] | None = None,
           button: str | None = None) -> httpx.Response:
    """Fill the page's only form and press the button whose value is ``button``."""
    parsed = page_forms(response.text)
    assert len(parsed.forms) == 1, f"expected one form on {response.url}: {response.text[:500]}"
    form = parsed.forms[0]
    names = {n for n, _ in form["inputs"]}
    data = dict(form["fields"])
    for k, v in (fill or {}).items():
        assert k in names, f"the page has no input named {k!r} (inputs: {sorted(names)})"
        data[k] = v
    if button is not None:
        matches = [(n, v) for n, v in form["buttons"] if v == button]
        assert matches, f"no button with value {button!r}: {form['buttons']}"
        data[matches[0][0]] = matches[0][1]
    url = urljoin(str(response.url), form["action"])
    return client.post(url, data=data)


def enter_code(client: httpx.Client, page: httpx.Response, user_code: str) -> httpx.Response:
    """The device-code page (/devicelogin): type the code and continue."""
    return submit(client, page, {"otc": user_code})


def sign_in(client: httpx.Client, page: httpx.Response, upn: str | None, password: str = SANDBOX_PASSWORD,
            button: str = "signin") -> httpx.Response:
    """A sign-in or consent page: type the account (``None``: keep what the page holds, e.g. a login_hint) and
    password and press ``button`` (signin, cancel, accept …)."""
    fill = {"passwd": password} if upn is None else {"login": upn, "passwd": password}
    return submit(client, page, fill, button=button)


def fill_sign_in(page: Any, upn: str | None, password: str = SANDBOX_PASSWORD, button: str = "signin") -> None:
    """The same sign-in or consent page in Chromium (a Playwright page or tab): the account typed (``None``: leave
    what the page holds, e.g. a login_hint), the password typed, ``button`` clicked."""
    if upn is not None:
        page.locator("#login").fill(upn)
    page.locator("#passwd").fill(password)
    page.locator(f"button[value={button}]").click()


def alert(response: httpx.Response) -> str:
    """The text of the page's alerts (role=alert), joined."""
    return " ".join(page_forms(response.text).alerts)
