"""Time to interactive of the settings dashboard in Chromium, against a one-button Voila notebook.

Setup: a crmkit database with demo data (``crmkit demo-data --addresses 1000``), a sandbox tenant
(the settings dashboard's account tabs talk to it, as in ``crmkit demo``), and two Voila servers
started by :func:`crmkit.voila_launch.start_voila` with the committed ``dashboards/voila.json``
(preheated kernel pool of one, one second fill delay):

* A serves ``dashboards/`` → ``settings.ipynb`` (CRM user ``admin``);
* B serves a temporary folder holding a copy of that ``voila.json`` and ``bench/one_button.ipynb``.

Playwright's sync API drives Debian's Chromium (``/usr/bin/chromium``, the browser tier's flags).
Each visit gets a fresh browser context; the time runs from ``page.goto`` to the known widget being
visible and enabled: the Teams activation checkbox (``.crmkit-teams-enable input``) on A, the button
on B. Visits alternate A, B, A, B …; after each visit the benchmark pauses ``PAUSE_S`` so that
server's pool refills its preheated kernel before its next visit. One untimed warm-up visit each.

Figure: median time per dashboard over ``VISITS`` visits; goal: settings ≤ 1.3× the one-button page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from crmkit.sandbox.process import SandboxProcess
from crmkit.voila_launch import DASHBOARDS, dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

from .common import Context, Result, p50, say

VISITS = 5
PAUSE_S = 10.0  # the pool refills its preheated kernel within a few seconds
TIMEOUT_MS = 120_000  # a visit whose widget is not up by then counts as failed
CHROMIUM = "/usr/bin/chromium"
# The browser tier's flags (tests/conftest.py CHROMIUM_ARGS).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server"]
ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "one_button.ipynb"
# Present, laid out (visible) and not disabled: what a user can click.
READY_JS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el || el.disabled) return false;
  const box = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  return box.width > 0 && box.height > 0 && style.visibility !== 'hidden' && style.display !== 'none';
}"""


# When the page's HTML had fully arrived, from the navigation's start: Voila streams the page and ends
# it after the notebook ran, so this is the server's and the kernel's share; the rest is the browser's
# (scripts, widget manager, widget views).
HTML_DONE_JS = "() => performance.getEntriesByType('navigation')[0].responseEnd"


def _visit(browser: object, url: str, selector: str) -> tuple[float, float] | None:
    """Milliseconds from ``page.goto`` to ``selector`` being visible and enabled, in a fresh context, and
    to the page's HTML complete; None when the widget was not up within ``TIMEOUT_MS``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="de-DE")  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        started = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
        try:
            page.wait_for_function(READY_JS, arg=selector, polling="raf", timeout=TIMEOUT_MS)
        except PlaywrightTimeout:
            return None
        ready = (time.perf_counter() - started) * 1000
        return ready, float(page.evaluate(HTML_DONE_JS))
    finally:
        context.close()


def run(ctx: Context) -> list[Result]:
    from playwright.sync_api import sync_playwright

    visits = VISITS if not ctx.quick else 2
    work = ctx.workdir / "dashboard"
    reference_dir = work / "reference"
    reference_dir.mkdir(parents=True)
    shutil.copy(DASHBOARDS / "voila.json", reference_dir / "voila.json")
    shutil.copy(REFERENCE, reference_dir / REFERENCE.name)
    db = work / "crm.duckdb"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(db), "demo-data", "--addresses", "1000",
                    "--quiet"], check=True, env={**clean, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)

    procs = []
    sandbox_log = (work / "sandbox.log").open("w")
    voila_log = (work / "voila.log").open("wb")
    sandbox = SandboxProcess(work / "sandbox-state", log=sandbox_log, extra=["--reset"])
    try:
        env = {"CRMKIT_DB": str(db), "CRMKIT_USER": "admin", "CRMKIT_SANDBOX_URL": sandbox.url,
               "CRMKIT_HOME": str(work / "home")}
        ports = {"settings": free_port(), "one_button": free_port()}
        for name, folder in (("settings", DASHBOARDS), ("one_button", reference_dir)):
            procs.append(start_voila(ports[name], env, dashboards_dir=folder, log=voila_log))
            wait_until_up(server_url(ports[name]), timeout=120, proc=procs[-1])
        targets = {
            "settings": (dashboard_url(ports["settings"], "settings.ipynb"), ".crmkit-teams-enable input"),
            "one_button": (dashboard_url(ports["one_button"], REFERENCE.name), "button.bench-one-button"),
        }
        times: dict[str, list[float]] = {name: [] for name in targets}
        failed: dict[str, int] = {name: 0 for name in targets}
        html_done: dict[str, list[float]] = {name: [] for name in targets}
        time.sleep(PAUSE_S)  # both pools heat their first kernel
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                for visit in range(visits + 1):  # visit 0: warm-up, not counted
                    for name, (url, selector) in targets.items():
                        visit_ms = _visit(browser, url, selector)
                        ms = None if visit_ms is None else visit_ms[0]
                        load = os.getloadavg()[0]
                        shown = ("FAILED (widget not up within the timeout)" if visit_ms is None
                                 else f"{visit_ms[0]:.0f} ms (HTML complete at {visit_ms[1]:.0f} ms)")
                        if visit and visit_ms is not None:
                            html_done[name].append(visit_ms[1])
                        say(f"dashboard: {name} visit {visit}{' (warm-up)' if visit == 0 else ''}: {shown} "
                            f"(load {load:.2f})")
                        if visit and ms is None:
                            failed[name] += 1
                        elif visit and ms is not None:
                            times[name].append(ms)
                        time.sleep(PAUSE_S)
            finally:
                browser.close()
    finally:
        for proc in procs:
            stop_voila(proc)
        sandbox.stop()
        sandbox_log.close()
        voila_log.close()

    nan = float("nan")
    settings = p50(times["settings"]) if times["settings"] else nan
    reference = p50(times["one_button"]) if times["one_button"] else nan
    ratio = settings / reference
    detail = "; ".join(f"{name}: " + ", ".join(f"{t:.0f}" for t in ts) + " ms"
                       + (f" and {failed[name]} failed visit(s) (no widget within {TIMEOUT_MS // 1000} s)"
                          if failed[name] else "") for name, ts in times.items())
    detail += "; page HTML complete (server and kernel share), median: " + ", ".join(
        f"{name} {p50(ts):.0f} ms" for name, ts in html_done.items() if ts)
    setup = (f"Debian Chromium headless, fresh context per visit, from page.goto to the widget visible and enabled; "
             f"{visits} visits each after one warm-up, interleaved, {PAUSE_S:.0f} s pause after each so the "
             f"preheated kernel pool refills; both servers with the committed voila.json.")
    return [
        Result("settings dashboard: time to interactive (Teams activation checkbox), median", round(settings, 1),
               "ms", note=f"{setup} {detail}", samples=[round(t, 1) for t in times["settings"]]),
        Result("one-button Voila notebook (bench/one_button.ipynb): time to interactive, median", round(reference, 1),
               "ms", samples=[round(t, 1) for t in times["one_button"]]),
        Result("ratio settings dashboard / one-button notebook, time to interactive", round(ratio, 2), "×",
               "≤ 1.3×", ratio <= 1.3 and not any(failed.values())),
    ]
