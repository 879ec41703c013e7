"""A dashboard through ``crmkit hub``: sign-in to the first dashboard (spawn included), and its time to interactive
through the hub against crmkit's own Voila.

Setup: the team's demo CRM on the bench run's throwaway PostgreSQL (tests/hub/support_crm.py's ``make_team_crm``:
``crmkit init``, 200 demo addresses, the demo users, a database login each; the CRM users anna, tom and kai linked
to the accounts of ``PEOPLE``), ``crmkit hub --db`` (a subprocess, as root: it creates an OS user per person)
against the sandbox over https, its state and the people's homes in temporary folders. Debian's Chromium headless
(the browser tier's flags) drives it; the dashboard is the addresses dashboard, interactive when its »next page«
button is visible and enabled.

1. Sign-in to dashboard: for each of ``PEOPLE`` (never signed in before, so the hub creates the OS user, rotates
   the CRM login into the home and spawns the server), a fresh context opens
   ``/hub/user-redirect/voila/render/dashboards/addresses.ipynb``, is sent to the sandbox's sign-in page
   (auto_login), and the time runs from submitting the password to the dashboard interactive: token exchange,
   spawn, Voila's render and kernel included. Goal ≤ 15 s for the slowest.
2. Time to interactive: then crmkit's Voila (``crmkit.voila_launch.start_voila``, the committed
   ``dashboards/voila.json``, a preheated pool of three for this dashboard) runs beside the hub in team mode with
   the first person's own CRM login (the hub's ``CRMKIT_DB`` and a copy of the passfile it wrote), so both show the
   same user's same page. ``VISITS`` page visits each, interleaved, in one context per side, from ``page.goto`` to
   interactive; each page closes with its unload (its kernel ends), then ``PAUSE_S`` lets the pool refill.
   Figure: median through the hub / median on crmkit's Voila; goal ≤ 1.3×.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from crmkit.sandbox import SANDBOX_DOMAIN, SANDBOX_PASSWORD
from crmkit.voila_launch import dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

from .common import Context, Result, p50, say
from .dashboard import CHROMIUM, CHROMIUM_ARGS, READY_JS

ROOT = Path(__file__).resolve().parent.parent
PEOPLE = ("sophie.meyer", "felix.schulz", "noah.richter")  # sandbox directory accounts no hub test signs in
CRM_USERS = ("anna", "tom", "kai")  # demo CRM users the people are linked to
VISITS = 5
PAUSE_S = 8.0
TIMEOUT_MS = 120_000
NOTEBOOK = "addresses.ipynb"
READY = ".crmkit-next"  # the addresses dashboard's next-page button


def _sign_in_to_dashboard(browser: Any, hub: str, person: str) -> tuple[Any, float | None]:
    """A fresh context signed in as ``person`` via the dashboard's hub link; seconds from the password's submit to
    the dashboard's widget (None: not within the timeout). Returns the context (its cookies are the person's)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    page.goto(f"{hub}/hub/user-redirect/voila/render/dashboards/{NOTEBOOK}", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=60_000)
    page.locator("#login").fill(f"{person}@{SANDBOX_DOMAIN}")
    page.locator("#passwd").fill(SANDBOX_PASSWORD)
    started = time.perf_counter()
    page.locator("button[value=signin]").click()
    try:
        page.wait_for_function(READY_JS, arg=READY, polling="raf", timeout=TIMEOUT_MS)
        took: float | None = time.perf_counter() - started
    except PlaywrightTimeout:
        took = None
    page.close(run_before_unload=True)
    return ctx, took


def _visit(ctx: Any, url: str) -> float | None:
    """Milliseconds from ``page.goto`` to the dashboard's widget visible, in a new page of ``ctx``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = ctx.new_page()
    try:
        started = time.perf_counter()
        page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
        page.wait_for_function(READY_JS, arg=READY, polling="raf", timeout=TIMEOUT_MS)
        return (time.perf_counter() - started) * 1000
    except PlaywrightTimeout:
        return None
    finally:
        page.close(run_before_unload=True)  # the unload request ends the page's kernel


def _server_env(person: str) -> dict[str, str]:
    """The environment of the single-user server the hub runs for ``person`` (from /proc; we are root)."""
    from tests.hub.support_hub import server_pid

    env = Path(f"/proc/{server_pid(person)}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in env if b"=" in e)


def _direct_voila(work: Path, person: str, log: Any) -> tuple[Any, int]:
    """crmkit's Voila in team mode with ``person``'s CRM login (their server's CRMKIT_DB, a copy of the passfile)."""
    env = _server_env(person)
    passfile = work / "pgpass"
    passfile.write_bytes(Path(env["PGPASSFILE"]).read_bytes())
    passfile.chmod(0o600)
    port = free_port()
    proc = start_voila(port, {"CRMKIT_MODE": "team", "CRMKIT_DB": env["CRMKIT_DB"], "PGPASSFILE": str(passfile),
                              "CRMKIT_HOME": str(work / "home")}, log=log)
    wait_until_up(server_url(port), timeout=120, proc=proc)
    return proc, port


def run(ctx: Context) -> list[Result]:
    from playwright.sync_api import sync_playwright

    from . import common_pg

    if os.geteuid() != 0 or not common_pg.have_postgres():
        say("hub_dashboard: skipped (crmkit hub runs as root, over a PostgreSQL CRM)")
        return []
    sys.path.insert(0, str(ROOT))  # tests/hub/support_crm.py: the team CRM as the hub tier makes it
    from crmkit.store import Store
    from crmkit.store.pg_roles import drop_database_roles
    from tests.hub.support_crm import make_team_crm
    from tests.hub.support_hub import running_hub

    people = PEOPLE if not ctx.quick else PEOPLE[:1]
    visits = VISITS if not ctx.quick else 2
    work = ctx.workdir / "hub_dashboard"
    work.mkdir(parents=True)
    pg = common_pg.cluster(ctx)
    crm_url = pg.url(pg.create_database(pg.unique_name("hub_dashboard")))
    links = {user: f"{person}@{SANDBOX_DOMAIN}" for user, person in zip(CRM_USERS, people, strict=False)}
    make_team_crm(crm_url, links)
    voila_log = (work / "voila.log").open("wb")
    direct = None
    sign_in: list[float] = []
    sign_in_failed = 0
    times: dict[str, list[float]] = {"hub": [], "direct": []}
    failed = {"hub": 0, "direct": 0}
    try:
        with running_hub(work, ("--db", crm_url)) as running, sync_playwright() as p:
            hub = running.url
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                first = None
                for person in people:
                    context, took = _sign_in_to_dashboard(browser, hub, person)
                    say(f"hub_dashboard: {person}: password submitted -> dashboard interactive "
                        f"{'FAILED' if took is None else f'{took:.1f} s'} (load {os.getloadavg()[0]:.2f})")
                    if took is None:
                        sign_in_failed += 1
                    else:
                        sign_in.append(took)
                    if first is None:
                        first = context
                    else:
                        context.close()
                assert first is not None
                direct, port = _direct_voila(work, people[0], voila_log)
                time.sleep(PAUSE_S)  # its pool heats
                urls = {"hub": f"{hub}/user/{people[0]}/voila/render/dashboards/{NOTEBOOK}",
                        "direct": dashboard_url(port, NOTEBOOK)}
                direct_ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                for visit in range(visits + 1):  # visit 0: warm-up
                    for name, url in urls.items():
                        ms = _visit(first if name == "hub" else direct_ctx, url)
                        say(f"hub_dashboard: {name} visit {visit}{' (warm-up)' if visit == 0 else ''}: "
                            f"{'FAILED' if ms is None else f'{ms:.0f} ms'} (load {os.getloadavg()[0]:.2f})")
                        if visit and ms is None:
                            failed[name] += 1
                        elif visit and ms is not None:
                            times[name].append(ms)
                        time.sleep(PAUSE_S)
                direct_ctx.close()
                first.close()
            finally:
                browser.close()
    finally:
        if direct is not None:
            stop_voila(direct)
        voila_log.close()
        store = Store(crm_url)
        drop_database_roles(store)  # roles are the cluster's, not the database's
        store.close()

    nan = float("nan")
    worst = max(sign_in) if sign_in else nan
    hub_ms = p50(times["hub"]) if times["hub"] else nan
    direct_ms = p50(times["direct"]) if times["direct"] else nan
    ratio = hub_ms / direct_ms
    setup = ("crmkit hub --db against the sandbox over https, the team's demo CRM (200 addresses) on PostgreSQL; "
             "the addresses dashboard interactive (its next-page button visible and enabled); Debian Chromium "
             "headless.")
    return [
        Result("hub: password submitted -> first dashboard interactive, spawn included (slowest person)",
               round(worst, 1), "s", "≤ 15 s", worst <= 15 and not sign_in_failed,
               note=f"{setup} {len(people)} people never signed in before (OS user created, CRM login rotated, "
                    "server spawned): " + ", ".join(f"{t:.1f}" for t in sign_in) + " s"
                    + (f"; {sign_in_failed} did not reach the dashboard within {TIMEOUT_MS // 1000} s"
                       if sign_in_failed else ""),
               samples=[round(t, 2) for t in sign_in]),
        Result("addresses dashboard through the hub: time to interactive, median", round(hub_ms, 1), "ms",
               note=f"{visits} visits each after one warm-up, interleaved with crmkit's Voila (team mode, the same "
                    f"person's CRM login), {PAUSE_S:.0f} s pause after each; through the hub Voila is a server "
                    "extension with a preheated pool of 1 for this dashboard (crmkit.hub.singleuser.HUB_POOLS), "
                    "crmkit's Voila has one of 3. "
                    "hub: " + ", ".join(f"{t:.0f}" for t in times["hub"]) + " ms; direct: "
                    + ", ".join(f"{t:.0f}" for t in times["direct"]) + " ms"
                    + "".join(f"; {n}: {k} failed visit(s)" for n, k in failed.items() if k),
               samples=[round(t, 1) for t in times["hub"]]),
        Result("addresses dashboard on crmkit's Voila: time to interactive, median", round(direct_ms, 1), "ms",
               samples=[round(t, 1) for t in times["direct"]]),
        Result("ratio hub / crmkit's Voila, dashboard time to interactive", round(ratio, 2), "×", "≤ 1.3×",
               ratio <= 1.3 and not any(failed.values())),
    ]
