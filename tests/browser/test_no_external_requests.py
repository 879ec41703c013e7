"""No page the product shows asks a host other than this machine for anything.

Every dashboard under ``dashboards/`` (found by glob, so a new one is covered), Voila's listing and
error page, and the sandbox's pages (the Teams view among them) load in Chromium; each request and
websocket the page opens is recorded. Stock Voila 0.5's lab template linked Font Awesome from a public
CDN on every dashboard: offline the icons were missing (``ERR_NAME_NOT_RESOLVED``), online each page view
told a third party who was looking at personal data. The page fixture (tests/conftest.py) also aborts
such requests for every browser test; this test names the pages and asserts on what they asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.network import is_loopback_url
from support.sandbox import SandboxProc

from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.voila_launch import DASHBOARDS

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
DASHBOARD_NAMES = sorted(p.name for p in DASHBOARDS.glob("*.ipynb"))


def _record(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.on("websocket", lambda ws: seen.append(ws.url))
    return seen


def _settle(page: Any) -> None:
    """Let late requests happen: web fonts are fetched only once a glyph needs them."""
    page.evaluate("document.fonts.ready.then(() => true)")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except PlaywrightTimeout:
        return  # a busy kernel socket may keep the page from idling; what was requested is recorded anyway


def _external(seen: list[str]) -> list[str]:
    return list(dict.fromkeys(url for url in seen if not is_loopback_url(url)))


@pytest.mark.parametrize("notebook", DASHBOARD_NAMES)
def test_a_dashboard_loads_nothing_from_outside(page: Any, voila_url: str, notebook: str) -> None:
    seen = _record(page)
    page.goto(f"{voila_url}/voila/render/{notebook}", wait_until="commit")
    page.locator("#rendered_cells").wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".jupyter-widgets").first.wait_for(state="visible", timeout=WIDGETS_UP)
    _settle(page)
    assert any(url.startswith(voila_url) for url in seen)
    assert _external(seen) == []


@pytest.mark.parametrize("path", ["/", "/voila/render/no-such-dashboard.ipynb"])
def test_voilas_own_pages_load_nothing_from_outside(page: Any, voila_url: str, path: str) -> None:
    seen = _record(page)
    page.goto(voila_url + path, wait_until="load")
    _settle(page)
    assert _external(seen) == []


def test_the_dashboards_use_icons_served_here(page: Any, voila_url: str, output_dir: Path) -> None:
    """The icon font is there (from this server), not just the CDN link gone: a button's Font Awesome
    glyph is drawn in the Font Awesome face."""
    page.goto(f"{voila_url}/voila/render/addresses.ipynb", wait_until="commit")
    icon = page.locator(".crmkit-next i.fa").first
    icon.wait_for(state="visible", timeout=WIDGETS_UP)
    _settle(page)
    family = icon.evaluate("el => getComputedStyle(el, '::before').fontFamily")
    assert "Font Awesome" in family
    loaded = page.evaluate("""() => [...document.fonts].filter(f => f.family.includes('Font Awesome')
                                                            && f.status === 'loaded').length""")
    assert loaded >= 1


def test_sandbox_pages_load_nothing_from_outside(page: Any, sandbox_proc: SandboxProc) -> None:
    for path in (f"/teams?as={SANDBOX_DEFAULT_UPN}&refresh=0", "/teams?refresh=0", "/", "/devicelogin"):
        seen = _record(page)
        page.goto(sandbox_proc.url.rstrip("/") + path, wait_until="load")
        _settle(page)
        assert _external(seen) == [], path
