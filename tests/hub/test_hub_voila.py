"""crmkit hub: a person's own server serves the dashboards as crmkit's Voila does (crmkit/hub/singleuser.py).

One real hub per module (``crmkit hub --db`` against the sandbox over https, tests/hub/support_hub.py; the team's
demo CRM on the session's PostgreSQL, tests/hub/support_crm.py, with the CRM user anna linked to paul's account).
paul signs in in Chromium and opens a dashboard through the hub,
``/user/paul.wagner/voila/render/dashboards/addresses.ipynb``: the page is rendered with crmkit's template (its
stylesheet, the loading text in the user's language from the ``crmkit_lang`` cookie), the addresses dashboard
appears in team mode with the CRM's addresses, and the page asks no host but loopback for anything — stock Voila's
template linked Font Awesome from a public CDN. A dashboard kernel dies with its page (PageKernelManager), or when
idle if no browser ever connected (voila.json's culling); a kernel started from JupyterLab does neither. The
addresses dashboard is served from the server's preheated pool (hub/singleuser.py HUB_POOLS): a kernel started before
the page was asked for, showing the signed-in person's CRM.
"""

from __future__ import annotations

import json
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.postgres import PgCluster

from crmkit.addresses import add_address, count_addresses
from crmkit.sandbox import SANDBOX_DOMAIN
from crmkit.store import Store
from tests.hub import support_crm
from tests.hub.support_hub import RunningHub, hub_context, pids_of_uid, running_hub, server_pid, sign_in_to_lab
from tests.support.network import is_loopback_url

pytestmark = pytest.mark.hub

PAUL_UPN = f"paul.wagner@{SANDBOX_DOMAIN}"  # a person of the sandbox's directory no other hub test signs in
NAME = "paul.wagner"
WIDGETS_UP = 120_000  # ms: the first kernel of a fresh server on a busy 2-core box
PAGE_GONE_S = 10  # dashboards/voila.json PageKernelManager.page_gone_after
CULL_IDLE_S, CULL_INTERVAL_S = 30, 5  # its MappingKernelManager culling


@pytest.fixture(scope="module")
def crm_url(pg_cluster: PgCluster) -> Iterator[str]:
    with support_crm.team_crm_database(pg_cluster, {"anna": PAUL_UPN}) as url:  # paul's account is anna here
        yield url


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, crm_url: str) -> Iterator[RunningHub]:
    with running_hub(tmp_path_factory.mktemp("hub-voila"), ["--db", crm_url]) as h:
        yield h


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    with hub_context(browser) as ctx:
        yield ctx


def _record(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url))
    page.on("websocket", lambda ws: seen.append(ws.url))
    return seen


def _settle(page: Any) -> None:
    """Let late requests happen: web fonts are fetched only once a glyph needs them."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.evaluate("document.fonts.ready.then(() => true)")
    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except PlaywrightTimeout:
        pass  # a kernel socket may keep the page from idling; what was requested is recorded anyway


def _kernels(context: Any, hub: RunningHub) -> set[str]:
    r = context.request.get(f"{hub.url}/user/{NAME}/api/kernels")
    assert r.status == 200, r.status
    return {k["id"] for k in r.json()}


def _page_kernel(html: str) -> str:
    """The kernel a Voila page runs on (its page config's kernelId)."""
    found = re.search(r'"kernelId":\s*"([0-9a-f-]{36})"', html)
    assert found, html[:500]
    return found.group(1)


def _kernel_rss_mb(kernel_id: str) -> float | None:
    """Resident memory of a kernel's process (found by its connection file's name), once it stops growing."""
    pid = next((int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()
                and f"kernel-{kernel_id}.json".encode() in _read(d / "cmdline")), None)
    if pid is None:
        return None
    rss, deadline = 0.0, time.monotonic() + 30
    while time.monotonic() < deadline:
        now = next((int(line.split()[1]) / 1024 for line in _read(Path(f"/proc/{pid}/status")).decode().splitlines()
                    if line.startswith("VmRSS:")), 0.0)
        if now and abs(now - rss) < 0.02 * now:
            return now
        rss = now
        time.sleep(2)
    return rss


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _wait_kernels(context: Any, hub: RunningHub, done: Any, timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = _kernels(context, hub)
        if done(ids) or time.monotonic() > deadline:
            return ids
        time.sleep(1)


@pytest.fixture(scope="module")
def signed_in(hub: RunningHub, browser: Any) -> Iterator[Any]:
    """paul's browser context, signed in at the hub with his server running (Lab reached)."""
    with hub_context(browser) as ctx:
        took = sign_in_to_lab(ctx, hub, PAUL_UPN)
        print(f"paul: password submitted -> JupyterLab {took:.1f} s")
        yield ctx


def test_a_dashboard_through_the_hub_renders_with_crmkits_template_and_asks_nothing_outside(
        hub: RunningHub, signed_in: Any) -> None:
    page = signed_in.new_page()
    seen = _record(page)
    url = f"{hub.url}/user/{NAME}/voila/render/dashboards/addresses.ipynb"
    page.goto(url, wait_until="commit")
    page.locator("#rendered_cells").wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".jupyter-widgets").first.wait_for(state="visible", timeout=WIDGETS_UP)
    _settle(page)
    # crmkit's template: its stylesheet inlined, the loading text's words from the catalog, the language cookie
    styles = page.evaluate("() => [...document.querySelectorAll('style')].map(s => s.textContent).join('\\n')")
    assert "crmkit's stylesheet for every dashboard page" in styles
    assert "crmkit_loading" not in page.content()  # rendered into the script, not left as a name
    assert page.evaluate("() => /(?:^|;\\s*)crmkit_lang=(de|en)/.test(document.cookie)")
    assert not page.locator("#loading_text", has_text="Running").count()
    # The widgets: the addresses dashboard in team mode, as the CRM user of paul's sign-in, over the team's CRM
    table = page.locator(".crmkit-record-table")
    table.wait_for(state="visible", timeout=WIDGETS_UP)
    assert not page.locator(".crmkit-open-error").count()
    assert "Teammodus" in page.locator(".crmkit-mode-line").inner_text()
    shown = re.search(r"\((\d+) Adressen\)", table.inner_text())
    assert shown and int(shown.group(1)) > 0, table.inner_text()[-300:]
    assert "Traceback" not in page.content()  # voila.json's show_tracebacks=false, strip_sources=true
    assert "teams_address_dashboard" not in page.content()
    assert any(u.startswith(f"{hub.url}/user/{NAME}/voila/") for u in seen)
    assert [u for u in dict.fromkeys(seen) if not is_loopback_url(u)] == []
    page.close(run_before_unload=True)


POOLED = "dashboards/addresses.ipynb"  # the dashboard hub/singleuser.py HUB_POOLS keeps one kernel heated for


def test_a_dashboard_is_served_from_the_servers_preheated_pool_with_the_persons_crm(
        hub: RunningHub, signed_in: Any, crm_url: str) -> None:
    """Once the pool has a kernel waiting (heated at the server's start, or again after the visit above took that
    one), it serves the page: its kernel was running before the page was asked for (its imports done), and the page
    shows the signed-in person's CRM in team mode as it is when asked for: an address added after the kernel was
    heated is counted (the kernel waited for its request on the server's query socket)."""
    filled = f"Kernel pool of {POOLED} is filled"
    log = hub.state / "hub.log"  # the people's servers log there too
    deadline = time.monotonic() + 120  # heating a kernel on a busy 2-core box
    while time.monotonic() < deadline:  # heated once more than kernels were taken from it: one is waiting
        text = log.read_text()
        if text.count(filled) > len(re.findall(rf"Using pre-heated kernel: \S+ for {re.escape(POOLED)}", text)):
            break
        time.sleep(1)
    heated = _kernels(signed_in, hub)
    print("kernels waiting, RSS (MB):", {k: _kernel_rss_mb(k) for k in heated})  # the pool's (the last page's ended)
    store = Store(crm_url)  # the owner's
    try:
        add_address(store, "admin", company="Nachzügler GmbH")
        total = count_addresses(store)
    finally:
        store.close()
    page = signed_in.new_page()
    page.goto(f"{hub.url}/user/{NAME}/voila/render/{POOLED}", wait_until="commit")
    table = page.locator(".crmkit-record-table")
    table.wait_for(state="visible", timeout=WIDGETS_UP)
    kernel = _page_kernel(page.content())
    assert kernel in heated, f"the page's kernel {kernel} was started for it, not taken from the pool ({heated})"
    assert f"Using pre-heated kernel: {kernel} for {POOLED}" in log.read_text()
    assert not page.locator(".crmkit-open-error").count()
    assert "Teammodus · angemeldet als Anna Berger" in page.locator(".crmkit-mode-line").inner_text()  # anna's name
    shown = re.search(r"\((\d+) Adressen\)", table.inner_text())
    assert shown and int(shown.group(1)) == total, (total, table.inner_text()[-300:])
    assert not re.search(rf"404 GET \S*/voila/query/{kernel}", log.read_text())  # (it found the socket)
    page.close(run_before_unload=True)


def test_the_dashboard_listing_through_the_hub_asks_nothing_outside(hub: RunningHub, signed_in: Any) -> None:
    page = signed_in.new_page()
    seen = _record(page)
    page.goto(f"{hub.url}/user/{NAME}/voila/tree", wait_until="load")
    page.get_by_text("dashboards", exact=True).first.dblclick(timeout=60_000)  # the listing is drawn by script
    page.get_by_text("addresses.ipynb", exact=True).first.wait_for(state="visible", timeout=60_000)
    _settle(page)
    assert [u for u in dict.fromkeys(seen) if not is_loopback_url(u)] == []
    page.close(run_before_unload=True)


def test_a_dashboards_kernel_ends_with_its_page_and_a_lab_kernel_does_not(hub: RunningHub, signed_in: Any) -> None:
    # A kernel as JupyterLab starts one (REST, with the _xsrf cookie Lab set), connected once and left.
    xsrf = next(c["value"] for c in signed_in.cookies() if c["name"] == "_xsrf")
    r = signed_in.request.post(f"{hub.url}/user/{NAME}/api/kernels", data=json.dumps({"name": "python3"}),
                               headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"})
    assert r.status == 201, (r.status, r.text())
    lab_kernel = r.json()["id"]
    lab = signed_in.new_page()
    lab.goto(f"{hub.url}/user/{NAME}/lab", wait_until="domcontentloaded")
    opened = lab.evaluate("""(url) => new Promise((ok) => {
        const ws = new WebSocket(url);
        ws.onopen = () => { ws.close(); ok(true); };
        ws.onerror = () => ok(false);
    })""", f"{hub.url.replace('http', 'ws', 1)}/user/{NAME}/api/kernels/{lab_kernel}/channels")
    assert opened
    lab.close(run_before_unload=True)

    # A dashboard page that goes away without its unload request (a crashed tab): nothing tells the server.
    page = signed_in.new_page()
    page.goto(f"{hub.url}/user/{NAME}/voila/render/dashboards/addresses.ipynb", wait_until="commit")
    page.locator(".crmkit-record-table").wait_for(state="visible", timeout=WIDGETS_UP)
    page_kernels = {_page_kernel(page.content())}  # (a kernel of the pool, started before: not a new one)
    assert page_kernels <= _kernels(signed_in, hub)
    page.close(run_before_unload=False)

    after = _wait_kernels(signed_in, hub, lambda ids: not (ids & page_kernels), PAGE_GONE_S + 30)
    assert not (after & page_kernels), f"the dashboard's kernel outlived its page: {after}"
    # its connection closed before the page's did, so page_gone_after has passed for it too
    assert lab_kernel in _kernels(signed_in, hub)  # Lab's kernel lives as Lab keeps it
    r = signed_in.request.delete(f"{hub.url}/user/{NAME}/api/kernels/{lab_kernel}", headers={"X-XSRFToken": xsrf})
    assert r.status == 204, r.status


def test_a_dashboard_fetched_without_a_browser_leaves_no_kernel_and_an_idle_lab_kernel_stays(
        hub: RunningHub, signed_in: Any) -> None:
    """A page no browser shows (a script's GET) never connects to its kernel: voila.json's culling ends it; a Lab
    kernel nobody is connected to, idle as long, is not culled."""
    xsrf = next(c["value"] for c in signed_in.cookies() if c["name"] == "_xsrf")
    r = signed_in.request.post(f"{hub.url}/user/{NAME}/api/kernels", data=json.dumps({"name": "python3"}),
                               headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"})
    assert r.status == 201, (r.status, r.text())
    lab_kernel = r.json()["id"]
    page = signed_in.request.get(f"{hub.url}/user/{NAME}/voila/render/dashboards/addresses.ipynb", timeout=120_000)
    assert page.status == 200 and "application/vnd.jupyter.widget-view+json" in page.text(), page.status
    page_kernels = {_page_kernel(page.text())}
    assert page_kernels <= _kernels(signed_in, hub) and lab_kernel not in page_kernels
    culled_after = CULL_IDLE_S + CULL_INTERVAL_S
    after = _wait_kernels(signed_in, hub, lambda ids: not (ids & page_kernels), culled_after + 40)
    assert not (after & page_kernels), f"the fetched page's kernel was never ended: {after}"
    assert lab_kernel in _kernels(signed_in, hub)  # as idle and unconnected as long, and kept
    r = signed_in.request.delete(f"{hub.url}/user/{NAME}/api/kernels/{lab_kernel}", headers={"X-XSRFToken": xsrf})
    assert r.status == 204, r.status


def test_stopping_a_server_while_its_pool_refills_leaves_no_process_of_its_person(
        hub: RunningHub, signed_in: Any) -> None:
    """Last in this module (it stops paul's server). A page holds the pooled kernel and the pool refills behind it:
    a pooled kernel waiting for its page does not answer a shutdown request, and kernels run in sessions of their
    own, so one not killed outlives the server (the hub's bench saw 1-3 at the hub's shutdown). Neither that nor a
    process paul's notebook left running survives his server (hub/spawner.py ``CrmkitSpawner.stop``)."""
    page = signed_in.new_page()
    page.goto(f"{hub.url}/user/{NAME}/voila/render/{POOLED}", wait_until="commit")
    page.locator(".crmkit-record-table").wait_for(state="visible", timeout=WIDGETS_UP)
    server = Path(f"/proc/{server_pid(NAME)}")
    uid = pwd.getpwnam(f"crmkit-{NAME}").pw_uid
    # what a notebook or terminal of paul's may leave running, in a session of its own as kernels are
    detached = subprocess.Popen(["sleep", "600"], user=uid, start_new_session=True)
    home = signed_in.new_page()
    home.goto(f"{hub.url}/hub/home", wait_until="domcontentloaded")
    stopping = home.evaluate("""async (name) => (await fetch(`${jhdata.base_url}api/users/${name}/server`,
        {method: 'DELETE', headers: {'X-XSRFToken': jhdata.xsrf_token}})).status""", NAME)  # as its stop button
    assert stopping in (202, 204), stopping  # the hub stops it as at its own shutdown (SIGINT, then SIGTERM, ...)
    deadline = time.monotonic() + 60
    while server.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not server.exists(), "paul's server did not stop within 60 s"
    assert detached.wait(5) == -signal.SIGKILL  # (reaped here, its parent: else a zombie of paul's stays listed)
    deadline = time.monotonic() + 5  # a killed process takes a moment to leave /proc
    while (left := pids_of_uid(uid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of paul's OS user outlived his server: {_cmdlines(left)}"
    page.close(run_before_unload=False)


def _cmdlines(pids: list[int]) -> list[str]:
    return [_read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").decode(errors="replace")[:160] for pid in pids]
