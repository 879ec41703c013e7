"""No visible label, button, tab title or checkbox label is cut off, in German or English.

Every dashboard under ``dashboards/`` (by glob, so new ones are covered) opens in Chromium, first in
German, then in English (picked with the page's language switch, which stores the user's choice), and
every tab of every tab bar is shown in turn. An element whose text is wider than its box
(``scrollWidth > clientWidth``: cut, or ended with an ellipsis by ``text-overflow``) fails the test.
ipywidgets sizes buttons (148 px), tabs (144 px) and descriptions (80 px) for short English words:
»Per Teams sen…«, »Administratorzusti…«. The German pass saves a screenshot of each dashboard and
tab under ``test-output/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crmkit.i18n import LANGUAGES
from crmkit.voila_launch import DASHBOARDS, free_port, server_url, start_voila, stop_voila, wait_until_up

from .conftest import build_demo_db

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
DASHBOARD_NAMES = sorted(p.name for p in DASHBOARDS.glob("*.ipynb"))
TAB = ".lm-TabBar-tab, .p-TabBar-tab"

# Elements that show a label's text in their own box. Inline elements have no box of their own
# (clientWidth 0) and are skipped; their block or flex parent is in the list.
CLIPPED_JS = """() => {
  const selector = ['button', 'label', '.widget-label', '.widget-label-basic', '.widget-label-basic span',
                    '.lm-TabBar-tabLabel', '.p-TabBar-tabLabel', '.lm-TabBar-tab', '.widget-toggle-button',
                    '.widget-checkbox span'].join(',');
  const cut = [];
  for (const el of document.querySelectorAll(selector)) {
    const text = (el.innerText || '').trim();
    if (!text) continue;
    const style = getComputedStyle(el);
    if (style.display === 'inline' || style.visibility === 'hidden') continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    if (el.scrollWidth > el.clientWidth + 1) {
      cut.push(`${el.tagName.toLowerCase()}.${[...el.classList].join('.')} "${text}" `
               + `(${el.scrollWidth} px text in ${el.clientWidth} px)`);
    }
  }
  return [...new Set(cut)];
}"""

# Every tab widget's shown pane has a widget with a size in it (not just the empty pane box).
PANE_FILLED_JS = """() => [...document.querySelectorAll('.jupyter-widget-tab > .widget-tab-contents')].every(panel =>
  [...panel.children].filter(c => c.getBoundingClientRect().height > 0).every(pane =>
    [...pane.querySelectorAll('.jupyter-widgets')].some(w => w.getBoundingClientRect().height > 0)))"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[str]:
    """Voila over ``dashboards/`` on its own database: the English pass stores admin's language."""
    demo = build_demo_db(tmp_path_factory.mktemp("clipped") / "crm.duckdb", n=200)
    port = free_port()
    with (output_dir / "voila-clipped.log").open("wb") as log:
        proc = start_voila(port, {"CRMKIT_DB": str(demo.path), "CRMKIT_USER": "admin"}, log=log)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            yield server_url(port).rstrip("/")
        finally:
            stop_voila(proc)


def _open(page: Any, url: str) -> None:
    page.goto(url, wait_until="commit")
    page.locator("#rendered_cells").wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".jupyter-widgets").first.wait_for(state="visible", timeout=WIDGETS_UP)
    _settled(page)


def _settled(page: Any) -> None:
    """Wait until the widget tree stops changing (views render after their models arrive) and fonts are in."""
    page.evaluate("document.fonts.ready.then(() => true)")
    page.wait_for_function("""() => new Promise(done => {
        const count = () => document.querySelectorAll('.jupyter-widgets').length
                            + document.body.innerText.length;
        const before = count();
        setTimeout(() => done(before === count()), 600);
    })""", timeout=60_000, polling=100)


def _set_language(page: Any, lang: str) -> None:
    switch = page.locator(".crmkit-language select").first
    index = LANGUAGES.index(lang)  # ipywidgets' options carry their labels, not the values
    if page.locator(".crmkit-language select").count() and switch.evaluate("el => el.selectedIndex") != index:
        switch.select_option(index=index)
        page.wait_for_timeout(1500)  # the view rebuilds its labels in the new language
        _settled(page)


def _check_page(page: Any, where: str, shots: Path | None, cut: list[str]) -> None:
    found = page.evaluate(CLIPPED_JS)
    cut.extend(f"{where}: {item}" for item in found)
    if shots is not None:
        page.screenshot(path=str(shots / f"{where.replace(' ', '-').replace('/', '-')}.png"), full_page=True)


@pytest.mark.parametrize("lang", ["de", "en"])
def test_no_label_is_cut(page: Any, site: str, output_dir: Path, lang: str) -> None:
    shots = output_dir / "screenshots" if lang == "de" else None
    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    cut: list[str] = []
    # The first dashboard with a language switch stores the language for the rest.
    order = sorted(DASHBOARD_NAMES, key=lambda name: name != "settings.ipynb")
    for notebook in order:
        _open(page, f"{site}/voila/render/{notebook}")
        _set_language(page, lang)
        name = notebook.removesuffix(".ipynb")
        assert page.locator("html").count()
        _check_page(page, f"{name}-{lang}", shots, cut)
        tabs = page.locator(TAB)
        for index in range(tabs.count()):
            tab = page.locator(TAB).nth(index)
            if not tab.is_visible():
                continue
            tab.click()
            # The kernel builds a tab's view when it is first shown: wait for it to arrive.
            page.wait_for_function(PANE_FILLED_JS, timeout=60_000)
            _settled(page)
            _check_page(page, f"{name}-{lang}-tab{index + 1}", shots, cut)
    assert cut == [], "labels cut off:\n" + "\n".join(cut)
