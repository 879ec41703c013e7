"""The addresses dashboard's record table in Chromium: how long paging actions take, as the user sees them.

Setup: a demo database of ``ctx.addresses`` addresses (``crmkit demo-data``; or an existing file named
by ``CRMKIT_BENCH_TABLE_DB``, since a million addresses take ~35 s to build), Voila over
``dashboards/`` with the committed ``voila.json`` (CRM user ``admin``), Debian's Chromium through
Playwright. The page opens once; then each action is timed from the browser event to the table showing
its result (the rows laid out and the page label updated):

* page size 25 → 100 (the first time: the table has shown 25 rows until then), 100 → 25, 25 → 100 again;
* next page, last page, first page (when the table has them), page 1 → the middle page by "go to page".

Run alone: ``python -m bench table_paging --addresses 1000 --out /tmp/bench``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from crmkit.voila_launch import dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

from .common import Context, Result, p50, say
from .dashboard import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 120_000
REPEATS = 3
# The table shows ``n`` laid-out rows and the page label reads ``label``.
SHOWN_JS = """([n, label]) => {
  const rows = [...document.querySelectorAll('.crmkit-row')].filter(r => r.getBoundingClientRect().height > 0);
  const text = (document.querySelector('.crmkit-page-label') || {}).textContent || '';
  return rows.length === n && text.trim().startsWith(label);
}"""


def _timed(page: object, act: object, n: int, label: str) -> float:
    started = time.perf_counter()
    act()  # type: ignore[operator]
    page.wait_for_function(SHOWN_JS, arg=[n, label], polling="raf", timeout=TIMEOUT_MS)  # type: ignore[attr-defined]
    return (time.perf_counter() - started) * 1000


def _german(n: int) -> str:
    return f"{n:,}".replace(",", ".")


def run(ctx: Context) -> list[Result]:
    from playwright.sync_api import sync_playwright

    work = ctx.workdir / "table_paging"
    work.mkdir(parents=True)
    given = os.environ.get("CRMKIT_BENCH_TABLE_DB")
    db = Path(given) if given else work / "crm.duckdb"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    if not given:
        subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(db), "demo-data", "--addresses",
                        str(ctx.addresses), "--quiet"], check=True, env={**clean, "PYTHONPATH": str(ROOT)},
                       stdout=subprocess.DEVNULL)
    samples: dict[str, list[float]] = {}
    port = free_port()
    with (work / "voila.log").open("wb") as log:
        proc = start_voila(port, {"CRMKIT_DB": str(db), "CRMKIT_USER": "admin"}, log=log)
        try:
            wait_until_up(server_url(port), timeout=120, proc=proc)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    for repeat in range(REPEATS):
                        _one_visit(browser, dashboard_url(port, "addresses.ipynb"), samples, repeat)
                finally:
                    browser.close()
        finally:
            stop_voila(proc)
    load = os.getloadavg()[0]
    out = []
    for name, values in samples.items():
        out.append(Result(f"record table at {ctx.addresses:,} addresses: {name}, median", round(p50(values), 1), "ms",
                          note=f"{len(values)} visits (fresh page each): " + ", ".join(f"{v:.0f}" for v in values)
                          + f" ms; load {load:.1f} at the end"))
    return out


def _one_visit(browser: object, url: str, samples: dict[str, list[float]], repeat: int) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="de-DE")  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
        page.wait_for_function(SHOWN_JS, arg=[25, "Seite 1 von"], polling="raf", timeout=TIMEOUT_MS)
        size = page.locator(".crmkit-page-size select")
        steps = [
            ("page size 25 → 100 (first time)", lambda: size.select_option("100"), 100, "Seite 1 von"),
            ("page size 100 → 25", lambda: size.select_option("25"), 25, "Seite 1 von"),
            ("page size 25 → 100 (again)", lambda: size.select_option("100"), 100, "Seite 1 von"),
            ("next page", lambda: page.locator(".crmkit-next").click(), 100, "Seite 2 von"),
        ]
        if page.locator(".crmkit-last").count():
            steps.append(("last page", lambda: page.locator(".crmkit-last").click(), -1, "Seite "))
            steps.append(("first page", lambda: page.locator(".crmkit-first").click(), 100, "Seite 1 von"))
        if page.locator(".crmkit-goto input").count():
            def go() -> None:
                box = page.locator(".crmkit-goto input")
                box.fill(_german(target[0]))
                box.press("Enter")
            target = [0]  # the middle page, known once the label shows the page count
            steps.append(("go to the middle page", go, 100, "Seite "))
        for name, act, n, label in steps:
            total = int(page.locator(".crmkit-page-label").inner_text().split("(")[1].split()[0].replace(".", ""))
            pages = -(-total // 100)
            if n < 0:  # the last page: however many rows it has
                n = total % 100 or 100
                label = f"Seite {_german(pages)} von"
            elif name.startswith("go to"):
                target[0] = max(1, pages // 2)
                label = f"Seite {_german(target[0])} von"
            ms = _timed(page, act, n, label)
            say(f"table_paging: visit {repeat}: {name}: {ms:.0f} ms")
            samples.setdefault(name, []).append(ms)
        size.select_option("25")  # leave the user setting as found
        page.wait_for_function(SHOWN_JS, arg=[25, "Seite 1 von"], polling="raf", timeout=TIMEOUT_MS)
    finally:
        context.close()
