"""crmkit hub: logout ends access, and the hub's tokens reach the person's server (one sign-in).

One real hub per module (``crmkit hub`` against the sandbox over https, tests/hub/support_hub.py). A person signs
in in Chromium; the cookies the browser got are copied and replayed with httpx after ``/hub/logout``: the old hub
cookie gets nothing at once, the old server cookie nothing once the server's short cache of the hub's answer ran
out (JupyterHub's defaults keep both working for minutes to days: STACK-NOTES-2 H).

One sign-in: with access tokens that live 12 s, a kernel in lukas's server gets a working Graph token from the hub
(crmkit.auth.hub_tokens, no device code), and after it expired Graph's 401 brings the hub's refreshed one. No token
is in the server's environment or the hub's log, and another person's server gets none of his.
"""

from __future__ import annotations

import json
import pwd
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.postgres import PgCluster

from crmkit.hub.config import SERVER_AUTH_CACHE_S
from crmkit.sandbox import SANDBOX_DOMAIN
from tests.hub import support_crm
from tests.hub.support_hub import RunningHub, hub_context, running_hub, server_pid, sign_in_to_lab
from tests.support import forms
from tests.support.secret_patterns import PATTERNS

pytestmark = pytest.mark.hub

# People no other hub test signs in: the OS users crmkit-<name> are the machine's, shared by hubs running at once
JONAS_UPN = f"jonas.becker@{SANDBOX_DOMAIN}"
LUKAS_UPN = f"lukas.weber@{SANDBOX_DOMAIN}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[RunningHub]:
    """The hub over a team CRM (tests/hub/support_crm.py) with Teams on, where lukas's account is the CRM user anna
    (a sales person) and jonas's is ben."""
    import crmkit

    with support_crm.team_crm_database(pg_cluster, {"anna": LUKAS_UPN, "ben": JONAS_UPN}) as crm_url:
        owner = crmkit.open(crm_url)
        owner.set_setting("teams.enabled", True)
        owner.store.close()
        with running_hub(tmp_path_factory.mktemp("hub-tokens"), ["--db", crm_url]) as h:
            h.crm_url = crm_url  # type: ignore[attr-defined]  # the owner's, for reading back what was sent
            yield h


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    with hub_context(browser) as ctx:
        yield ctx


def _replay(hub: RunningHub, cookies: dict[str, str], path: str) -> httpx.Response:
    """GET ``path`` with copies of the browser's cookies (all of them, whatever their path), no redirect followed."""
    header = "; ".join(f"{k}={v}" for k, v in cookies.items())
    return httpx.get(hub.url + path, headers={"Cookie": header}, follow_redirects=False, timeout=30)


def _refused(r: httpx.Response) -> bool:
    """Nothing for the request: 401/403, or a redirect to signing in (the hub's login or its OAuth authorize)."""
    if r.status_code in (401, 403):
        return True
    where = r.headers.get("location", "")
    return r.status_code in (302, 303) and ("/hub/login" in where or "/hub/api/oauth2/authorize" in where)


def test_after_logout_neither_the_old_hub_cookie_nor_the_old_server_cookie_gets_anything(
        hub: RunningHub, context: Any) -> None:
    sign_in_to_lab(context, hub, JONAS_UPN)
    name = "jonas.becker"
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    assert {"jupyterhub-hub-login", f"jupyterhub-user-{name}"} <= set(cookies), sorted(cookies)
    server_api = f"/user/{name}/api/contents"
    # the copies work while signed in: what the replay after logout proves is the logout's doing
    assert _replay(hub, cookies, "/hub/home").status_code == 200
    me = _replay(hub, cookies, "/hub/api/user")
    assert me.status_code == 200 and me.json()["name"] == name
    assert _replay(hub, cookies, server_api).status_code == 200

    page = context.new_page()
    page.goto(hub.url + "/hub/logout", wait_until="domcontentloaded")
    logged_out = time.monotonic()
    # and on to the tenant's end-session endpoint: the tenant forgets the browser too
    assert page.url.startswith(hub.sandbox_url) and "/oauth2/v2.0/logout" in page.url, page.url
    page.close()

    for path in ("/hub/home", "/hub/api/user", "/hub/token", f"/hub/api/users/{name}"):
        r = _replay(hub, cookies, path)
        assert _refused(r), (path, r.status_code, r.headers.get("location"))
    # the server asks the hub again once its cache of the answer (SERVER_AUTH_CACHE_S) is over
    deadline = logged_out + SERVER_AUTH_CACHE_S + 15
    while True:
        r = _replay(hub, cookies, server_api)
        if _refused(r):
            break
        assert r.status_code == 200, r.status_code
        assert time.monotonic() < deadline, f"the old server cookie still works {time.monotonic() - logged_out:.0f} s "
        time.sleep(1)
    took = time.monotonic() - logged_out
    print(f"old server cookie refused {took:.1f} s after logout (cache {SERVER_AUTH_CACHE_S} s)")
    assert _refused(_replay(hub, cookies, f"/user/{name}/lab"))
    # signing in again takes the password again (auto_login must not sign the next person at this browser in as
    # jonas), and gives new cookies
    page = context.new_page()
    page.goto(hub.url + "/hub/home", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=30_000)
    assert page.url.startswith(hub.sandbox_url), page.url
    forms.fill_sign_in(page, JONAS_UPN)
    page.wait_for_url(f"{hub.url}/hub/home*", timeout=60_000)
    again = {c["name"]: c["value"] for c in context.cookies()}
    assert again["jupyterhub-hub-login"] != cookies["jupyterhub-hub-login"]
    assert _replay(hub, again, "/hub/api/user").json()["name"] == name
    page.close()


KERNEL_CODE = '''
import json, time
from crmkit.auth.hub_tokens import hub_tokens_from_env
from crmkit.graph import GraphClient
source = hub_tokens_from_env()
graph = GraphClient(source.provider(), base_url={graph!r})
first_me = graph.me()["userPrincipalName"]
first = source._last
time.sleep({wait})  # the token the hub handed out expires meanwhile; Graph's client keeps using it
second_me = graph.me()["userPrincipalName"]  # 401 -> asks the hub again -> the hub's refreshed token
print(json.dumps({{"first": first_me, "second": second_me, "refreshed": source._last != first,
                  "fetches": graph.aio.stats.get("token_fetches"), "statuses": graph.aio.stats}}))
graph.close()
'''


def _run_in_a_kernel(context: Any, hub: RunningHub, name: str, code: str) -> str:
    """Start a kernel in ``name``'s server (its REST API, with the browser's cookies) and run ``code`` in it
    (over the kernel's own channels: the hub runs as root and reads the connection file); returns its stdout."""
    from jupyter_client import BlockingKernelClient

    xsrf = next(c["value"] for c in context.cookies() if c["name"] == "_xsrf")
    r = context.request.post(f"{hub.url}/user/{name}/api/kernels", headers={"X-XSRFToken": xsrf},
                             data={"name": "python3"})
    assert r.status == 201, (r.status, r.text())
    kernel_id = r.json()["id"]
    home = Path(pwd.getpwnam(f"crmkit-{name}").pw_dir)
    deadline = time.monotonic() + 30
    while not (found := list(home.rglob(f"kernel-{kernel_id}.json"))):
        assert time.monotonic() < deadline, "no connection file"
        time.sleep(0.2)
    client = BlockingKernelClient(connection_file=str(found[0]))
    client.load_connection_file()
    client.start_channels(hb=False)  # no heartbeat: the client counts the kernel dead until its first beat
    out: list[str] = []
    errors: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            errors.append("\n".join(msg["content"]["traceback"]))

    try:
        client.wait_for_ready(timeout=60)
        client.execute_interactive(code, timeout=150, output_hook=hook)
    finally:
        client.stop_channels()
        context.request.delete(f"{hub.url}/user/{name}/api/kernels/{kernel_id}", headers={"X-XSRFToken": xsrf})
    assert not errors, errors[0][-3000:]
    return "".join(out)


def _hub_api_get(hub: RunningHub, token: str, path: str) -> httpx.Response:
    return httpx.get(f"{hub.url}/hub/api{path}", headers={"Authorization": f"token {token}"}, timeout=30)


def test_a_kernel_sends_on_the_hubs_tokens_and_a_token_that_expired_is_refreshed(
        hub: RunningHub, context: Any, browser: Any) -> None:
    lifetime = 12
    with httpx.Client(base_url=hub.sandbox_url, verify=ssl.create_default_context(cafile=hub.ca_file),
                      timeout=30) as sb:
        # short-lived access tokens from now on, so one expires during the session
        assert sb.put("/_sandbox/config", json={"access_token_lifetime_s": lifetime}).status_code == 200
        try:
            sign_in_to_lab(context, hub, LUKAS_UPN)
            signed_in = time.monotonic()
            stdout = _run_in_a_kernel(context, hub, "lukas.weber", KERNEL_CODE.format(
                graph=hub.sandbox_url + "/v1.0", wait=lifetime + 3))
        finally:
            sb.put("/_sandbox/config", json={"access_token_lifetime_s": 3599})
    print(f"kernel done {time.monotonic() - signed_in:.1f} s after sign-in: {stdout.strip()}")
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["first"] == result["second"] == LUKAS_UPN
    # the token expired at least once (a 401 from Graph); each time the hub handed out its refreshed one
    assert result["refreshed"] is True and result["fetches"] >= 2 and result["statuses"].get("status_401", 0) >= 1
    assert result["fetches"] == result["statuses"]["status_401"] + 1, result

    # the server's environment holds the hub's API token for its own user only, no Microsoft token
    pid = server_pid("lukas.weber")
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert not PATTERNS["JWT"].search(environ) and not PATTERNS["refresh token"].search(environ)
    env = dict(line.split(b"=", 1) for line in environ.split(b"\0") if b"=" in line)
    own = _hub_api_get(hub, env[b"JUPYTERHUB_API_TOKEN"].decode(), "/users/lukas.weber")
    assert own.status_code == 200 and own.json()["auth_state"]["access_token"]
    # another person's server asks for lukas's tokens: nothing (jonas, signed in again by the logout test)
    try:
        server_pid("jonas.becker")
    except AssertionError:
        with hub_context(browser) as other_context:
            sign_in_to_lab(other_context, hub, JONAS_UPN)
    jonas_env = dict(line.split(b"=", 1) for line in
                     Path(f"/proc/{server_pid('jonas.becker')}/environ").read_bytes().split(b"\0") if b"=" in line)
    other = _hub_api_get(hub, jonas_env[b"JUPYTERHUB_API_TOKEN"].decode(), "/users/lukas.weber")
    assert other.status_code in (403, 404) and "access_token" not in other.text
    # no token in the hub's log, where the servers' output goes too
    log = (hub.state / "hub.log").read_bytes()
    for kind in ("JWT", "refresh token"):
        assert not PATTERNS[kind].search(log), f"a {kind} in the hub's log"


SEND_CODE = '''
import json
import crmkit
crm = crmkit.open()  # team mode: the server's own CRM login, i.e. the CRM user of the hub's sign-in
address = crm.store.read(lambda tx: tx.one("SELECT min(id) FROM addresses"))
sent = crm.teams.send([address], to=[{to!r}], subject="One sign-in")
print(json.dumps({{"user": crm.user.name, "address": int(address), "status": [str(s) for s in sent["status"]],
                  "error": [str(e) for e in sent["error"]]}}))
'''


def test_a_sales_person_sends_a_record_via_teams_without_a_second_sign_in(hub: RunningHub, context: Any) -> None:
    import crmkit

    sign_in_to_lab(context, hub, LUKAS_UPN)  # his server may run already (the token test): then no spawn
    stdout = _run_in_a_kernel(context, hub, "lukas.weber", SEND_CODE.format(to=JONAS_UPN))
    print(f"send: {stdout.strip()}")
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["user"] == "anna" and result["status"] == ["sent"], result
    owner = crmkit.open(hub.crm_url)  # type: ignore[attr-defined]
    try:
        rows = owner.store.read(lambda tx: tx.rows(
            "SELECT user_name, ms_account, outcome, address_id FROM transfer_log ORDER BY id DESC LIMIT 1"))
        assert [tuple(r) for r in rows] == [("anna", LUKAS_UPN, "sent", result["address"])]
        dump = "".join(str(r) for table in ("m365_accounts", "audit", "transfer_log", "outbox")
                       for r in owner.store.read(lambda tx, t=table: tx.rows(f"SELECT * FROM {t}")))
    finally:
        owner.store.close()
    for kind in ("JWT", "refresh token"):
        assert not PATTERNS[kind].search(dump.encode()), f"a {kind} in the CRM database"
    with httpx.Client(base_url=hub.sandbox_url, verify=ssl.create_default_context(cafile=hub.ca_file),
                      timeout=30) as sb:
        counters = sb.get("/_sandbox/counters").json()
    device = {k: n for k, n in counters.items() if "devicecode" in k.lower()}
    assert not any(device.values()), device  # nobody signed in a second time, by device code
