"""``crmkit hub``: a real JupyterHub with its proxy, against the sandbox over https, driven in Chromium.

One hub per module (``hub`` fixture: ``crmkit hub`` as a subprocess, its state in a tmp folder, the people's
homes in a fresh 0711 folder). tom (the CRM's teams admin; his directory account is lea.hoffmann) signs in with
his sandbox password and lands in his own JupyterLab, whose server runs as his own OS user, created by the hub:
not root, no other person's uid, home 0700. anna signs in too and gets another OS user that cannot read tom's
home. The hub's state folder is 0700 with 0600 files, and no secret of it is in its config or logs. SIGTERM stops
hub, proxy, servers and sandbox; the OS users the hub made are removed at the end.

The hub serves a team CRM (``crmkit hub --db``: the demo CRM on the session's throwaway PostgreSQL, tests/hub/
support_crm.py, every login but the owner's needing its password): tom's kernel is CRM user tom; vera (a viewer,
directory account marie.fischer) is vera, cannot open as tom nor log in as tom's role, and holds no other login; an
account linked to no CRM user (emma.koch) gets no server and is told to ask an administrator; kai's account
(hannah.neumann), disabled in the tenant after he signed in, gets no new server.
"""

from __future__ import annotations

import os
import pwd
import re
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.postgres import PgCluster

from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_DOMAIN
from crmkit.store.pg_roles import user_role
from tests.hub import support_crm
from tests.hub.support_hub import hub_context, running_hub, server_pid
from tests.support import forms

pytestmark = pytest.mark.hub

TOM_UPN = f"lea.hoffmann@{SANDBOX_DOMAIN}"  # tom's directory account (README: "The demo's users")
VERA_UPN, KAI_UPN = f"marie.fischer@{SANDBOX_DOMAIN}", f"hannah.neumann@{SANDBOX_DOMAIN}"
UNLINKED_UPN = f"emma.koch@{SANDBOX_DOMAIN}"
LINKS = {"tom": TOM_UPN, "anna": SANDBOX_DEFAULT_UPN, "vera": VERA_UPN, "kai": KAI_UPN}  # CRM user -> account


@dataclass
class Hub:
    url: str
    state: Path
    homes: Path
    proc: subprocess.Popen[str]
    output: list[str]
    started_s: float
    crm_url: str  # the owner's
    sandbox_url: str
    ca_file: str


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[Hub]:
    if os.geteuid() != 0:
        pytest.skip("crmkit hub runs as root (it creates an OS user per person)")
    with support_crm.team_crm_database(pg_cluster, LINKS) as crm_url:
        yield from _run_hub(tmp_path_factory, crm_url)


def _run_hub(tmp_path_factory: pytest.TempPathFactory, crm_url: str) -> Iterator[Hub]:
    t0 = time.monotonic()
    with running_hub(tmp_path_factory.mktemp("hub"), ("--db", crm_url)) as h:
        yield Hub(h.url, h.state, h.homes, h.proc, h.output, time.monotonic() - t0, crm_url, h.sandbox_url, h.ca_file)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A Chromium context that trusts the sandbox's https page and lets nothing leave loopback."""
    with hub_context(browser) as ctx:
        yield ctx


def _sign_in_to_lab(context: Any, hub: Hub, upn: str) -> tuple[str, float]:
    """Open the hub, sign in at the sandbox as ``upn``, wait for JupyterLab; returns its URL and the seconds from
    submitting the password to Lab's shell."""
    page = context.new_page()
    page.goto(hub.url + "/", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=30_000)  # auto_login: straight to the tenant's sign-in page
    assert page.url.startswith("https://127.0.0.1:"), page.url
    t0 = time.monotonic()
    forms.fill_sign_in(page, upn)
    page.wait_for_selector(".jp-LabShell", timeout=90_000)
    took = time.monotonic() - t0
    url = page.url
    page.close(run_before_unload=True)
    return url, took


def _server_uid(hub_name: str) -> int:
    """The real uid of the single-user server process JupyterHub started for ``hub_name`` (from /proc)."""
    status = Path(f"/proc/{server_pid(hub_name)}/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("Uid:")).split()[1])  # real, then effective, ...


def test_tom_signs_in_and_reaches_his_own_lab_running_as_his_own_os_user(hub: Hub, context: Any) -> None:
    url, took = _sign_in_to_lab(context, hub, TOM_UPN)
    print(f"hub start {hub.started_s:.1f} s; tom: password submitted -> JupyterLab {took:.1f} s")
    assert url.startswith(f"{hub.url}/user/lea.hoffmann/lab"), url

    uid = _server_uid("lea.hoffmann")
    entry = pwd.getpwnam("crmkit-lea.hoffmann")
    assert uid == entry.pw_uid and uid != 0 and uid != os.geteuid()
    assert [p.pw_name for p in pwd.getpwall() if p.pw_uid == uid] == ["crmkit-lea.hoffmann"]  # nobody else's
    home = Path(entry.pw_dir)
    assert home.parent == hub.homes and home.stat().st_uid == uid
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "notebooks").is_dir() and (home / "notebooks").stat().st_uid == uid  # his copy to edit

    # Voila is served by the same server (its tree page answers; the listing itself is drawn by script) and the
    # dashboards are in his home on that server. Fetched with the browser's hub cookies, not rendered: Voila's stock
    # tree page would ask a CDN for font-awesome (crmkit's own Voila template is not used there yet).
    voila = context.request.get(f"{hub.url}/user/lea.hoffmann/voila/tree/dashboards")
    assert voila.status == 200 and 'data-voila="voila"' in voila.text(), voila.status
    listing = context.request.get(f"{hub.url}/user/lea.hoffmann/api/contents/dashboards")
    assert listing.status == 200, listing.status
    assert {"addresses.ipynb", "settings.ipynb"} <= {f["name"] for f in listing.json()["content"]}


def test_anna_gets_another_os_user_that_cannot_read_toms_home(hub: Hub, context: Any) -> None:
    url, took = _sign_in_to_lab(context, hub, SANDBOX_DEFAULT_UPN)
    print(f"anna: password submitted -> JupyterLab {took:.1f} s")
    assert url.startswith(f"{hub.url}/user/anna.schmidt/lab"), url
    anna, tom = pwd.getpwnam("crmkit-anna.schmidt"), pwd.getpwnam("crmkit-lea.hoffmann")
    assert _server_uid("anna.schmidt") == anna.pw_uid != tom.pw_uid
    peek = subprocess.run(["ls", tom.pw_dir], user=anna.pw_uid, group=anna.pw_gid, extra_groups=[],
                          capture_output=True, text=True, check=False)
    assert peek.returncode != 0 and "Permission denied" in peek.stderr, (peek.returncode, peek.stdout)


def test_the_hub_state_is_private_and_no_secret_reaches_its_config_or_logs(hub: Hub) -> None:
    state = hub.state
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = {f.name: stat.S_IMODE(f.stat().st_mode) for f in state.iterdir() if f.is_file()}
    for name in ("jupyterhub_cookie_secret", "crypt_key", "client_secret", "jupyterhub.sqlite",
                 "jupyterhub_config.py", "hub.log"):
        assert name in files, sorted(files)
    assert {n: m for n, m in files.items() if m != 0o600} == {}
    secrets = [(state / n).read_text().strip() for n in ("jupyterhub_cookie_secret", "crypt_key", "client_secret")]
    assert all(len(s) >= 32 for s in secrets)
    assert len(bytes.fromhex(secrets[1])) == 32  # JUPYTERHUB_CRYPT_KEY: 32 random bytes, hex
    # the CRM logins the hub handed over (tom's and anna's so far): their passwords are in their passfiles only
    logins = [line.rsplit(":", 1)[1] for f in sorted(hub.homes.glob("*/.crmkit/pgpass"))
              for line in f.read_text().splitlines()]
    assert len(logins) >= 2 and all(len(p) >= 32 for p in logins), len(logins)
    secrets += logins
    texts = {n: (state / n).read_text(errors="replace") for n in ("jupyterhub_config.py", "hub.log", "sandbox.log")}
    texts["crmkit hub's output"] = "".join(hub.output)
    for where, text in texts.items():
        for i, s in enumerate(secrets):
            assert s not in text, f"secret #{i} in {where}"
        for kind, pattern in (("JWT", r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."),
                              ("refresh token", r"0\.sbx\.[A-Za-z0-9_-]{20,}"),
                              ("authorization code", r"1\.sbx\.[A-Za-z0-9_-]{20,}")):
            assert not re.search(pattern, text), f"a {kind} in {where}"


# Run code in a new kernel of the signed-in person's own server, as their notebook would: the Jupyter REST and
# websocket APIs from their Lab page (its cookies and XSRF token); the kernel's stdout comes back.
_RUN_IN_KERNEL = """async ([base, code]) => {
  const xsrf = (document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '').slice(6);
  const headers = {'X-XSRFToken': decodeURIComponent(xsrf), 'Content-Type': 'application/json'};
  const started = await fetch(base + 'api/kernels', {method: 'POST', headers, body: '{"name":"python3"}'});
  const kernel = await started.json();
  const ws = new WebSocket(base.replace(/^http/, 'ws') + 'api/kernels/' + kernel.id + '/channels');
  const out = await new Promise((resolve, reject) => {
    let text = '';
    ws.onerror = () => reject(new Error('kernel websocket failed'));
    ws.onopen = () => ws.send(JSON.stringify({
      header: {msg_id: 'crmkit-test', username: 'test', session: 'crmkit-test', msg_type: 'execute_request',
               version: '5.3', date: new Date().toISOString()},
      parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
      content: {code, silent: false, store_history: false, user_expressions: {}, allow_stdin: false,
                stop_on_error: true}}));
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      if (msg.parent_header.msg_id !== 'crmkit-test') return;
      if (msg.msg_type === 'stream') text += msg.content.text;
      if (msg.msg_type === 'error') text += 'ERROR ' + msg.content.ename + ': ' + msg.content.evalue + '\\n';
      if (msg.msg_type === 'status' && msg.content.execution_state === 'idle') resolve(text);
    };
  });
  ws.close();
  await fetch(base + 'api/kernels/' + kernel.id, {method: 'DELETE', headers});
  return out;
}"""


def _lab_page(context: Any, hub: Hub, upn: str) -> Any:
    page = context.new_page()
    page.goto(hub.url + "/", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=30_000)
    forms.fill_sign_in(page, upn)
    page.wait_for_selector(".jp-LabShell", timeout=90_000)
    return page


def _kernel_says(page: Any, hub: Hub, hub_name: str, code: str) -> dict[str, str]:
    out = page.evaluate(_RUN_IN_KERNEL, [f"{hub.url}/user/{hub_name}/", code])
    assert "ERROR" not in out, out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


_WHO = """
import os, crmkit
print("USER=" + crmkit.open().user.name)
print("MODE=" + os.environ["CRMKIT_MODE"])
print("DB=" + os.environ["CRMKIT_DB"])
print("PASSFILE=" + os.environ["PGPASSFILE"])
"""


def test_toms_kernel_opens_the_crm_as_tom_with_his_own_login(hub: Hub, context: Any) -> None:
    page = _lab_page(context, hub, TOM_UPN)
    said = _kernel_says(page, hub, "lea.hoffmann", _WHO)
    page.close(run_before_unload=True)
    database = hub.crm_url.rsplit("/", 1)[1]
    assert said["USER"] == "tom" and said["MODE"] == "team"
    assert said["DB"] == hub.crm_url.replace("postgres@", f"{user_role(database, 'tom')}@", 1)  # no password
    home = Path(pwd.getpwnam("crmkit-lea.hoffmann").pw_dir)
    assert said["PASSFILE"] == str(home / ".crmkit" / "pgpass")


def test_vera_is_vera_cannot_become_tom_and_holds_no_other_login(hub: Hub, context: Any) -> None:
    tom_pid = server_pid("lea.hoffmann")  # tom's server (his test signed him in): what vera must not read
    tom_home = pwd.getpwnam("crmkit-lea.hoffmann").pw_dir
    page = _lab_page(context, hub, VERA_UPN)
    said = _kernel_says(page, hub, "marie.fischer", _WHO + f'''
tom_pid, tom_home = {tom_pid}, {tom_home!r}
''' + '''
import psycopg
from pathlib import Path
try:
    crmkit.open(user="tom")
    print("AS_TOM=opened")
except Exception as e:
    print("AS_TOM=" + type(e).__name__)
os.environ["CRMKIT_USER"] = "tom"  # the single-user way to name a user
try:
    crmkit.open()
    print("ENV_TOM=opened")
except Exception as e:
    print("ENV_TOM=" + type(e).__name__)
del os.environ["CRMKIT_USER"]
with psycopg.connect(os.environ["CRMKIT_DB"], connect_timeout=10) as c:  # more than a viewer, in raw SQL
    for name, stmt in (("ADDR", "UPDATE addresses SET company = 'x' WHERE id = 1"),
                       ("SETTING", "UPDATE system_settings SET value = value"),
                       ("LOG", "DELETE FROM transfer_log")):
        try:
            c.execute(stmt)
            print(f"RAW_{name}=done")
        except psycopg.errors.InsufficientPrivilege:
            print(f"RAW_{name}=refused")
        c.rollback()
for name, path in (("PROC", f"/proc/{tom_pid}/environ"), ("HOME", tom_home)):
    try:
        Path(path).read_bytes() if name == "PROC" else list(Path(path).iterdir())
        print(f"TOM_{name}=read")
    except PermissionError:
        print(f"TOM_{name}=refused")
mine = os.environ["CRMKIT_DB"]
with psycopg.connect(mine, connect_timeout=10) as c:
    print("RAW_ME=" + c.execute("SELECT crmkit_user()").fetchone()[0])
try:
    psycopg.connect(mine.replace("_u_vera@", "_u_tom@"), connect_timeout=10).close()
    print("RAW_TOM=connected")
except psycopg.OperationalError as e:
    print("RAW_TOM=refused " + ("password" in str(e)) * "password")
print("PGPASS=" + ";".join(line.split(":")[3] for line in Path(os.environ["PGPASSFILE"]).read_text().splitlines()))
print("OTHER_ENV=" + ",".join(k for k, v in os.environ.items() if "_u_tom" in v or "postgres@" in v))
files = [p for p in Path.home().rglob("*") if p.is_file() and not p.is_symlink()]
print("OTHER_FILES=" + ",".join(str(p) for p in files if "_u_tom" in p.read_text(errors="replace")))
''')
    page.close(run_before_unload=True)
    database = hub.crm_url.rsplit("/", 1)[1]
    assert said["USER"] == "vera" and said["MODE"] == "team"
    assert said["AS_TOM"] == said["ENV_TOM"] == "TeamSignInRequired", said
    assert said["RAW_ADDR"] == said["RAW_SETTING"] == said["RAW_LOG"] == "refused", said  # a viewer's grants
    assert said["TOM_PROC"] == said["TOM_HOME"] == "refused", said  # another uid's process and 0700 home
    assert said["RAW_ME"] == "vera"
    assert said["RAW_TOM"] == "refused password", said  # tom's role needs tom's password, which vera never gets
    assert said["PGPASS"] == user_role(database, "vera")
    assert said["OTHER_ENV"] == "" and said["OTHER_FILES"] == "", said


def _spawn_page_text(page: Any) -> str:
    page.wait_for_function("() => document.body && /Spawn failed|administrator|login again/i"
                           ".test(document.body.innerText)", timeout=60_000)
    return str(page.inner_text("body"))


def test_an_account_linked_to_no_crm_user_gets_no_server_and_is_told_to_ask_an_admin(hub: Hub,
                                                                                     context: Any) -> None:
    page = context.new_page()
    page.goto(hub.url + "/", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=30_000)
    forms.fill_sign_in(page, UNLINKED_UPN)
    text = _spawn_page_text(page)
    page.close(run_before_unload=True)
    assert "403" in text and "Ask an administrator to link it" in text and "Bitten Sie einen Administrator" in text
    with pytest.raises(AssertionError, match="no jupyterhub-singleuser"):
        _server_uid("emma.koch")
    with pytest.raises(KeyError):  # refused before the hub made an OS user and home for her
        pwd.getpwnam("crmkit-emma.koch")


def test_an_account_disabled_in_the_tenant_after_sign_in_gets_no_new_server(hub: Hub, context: Any) -> None:
    page = _lab_page(context, hub, KAI_UPN)
    assert _kernel_says(page, hub, "hannah.neumann", _WHO)["USER"] == "kai"
    page.goto(hub.url + "/hub/home", wait_until="domcontentloaded")
    stopped = page.evaluate("""async (url) => {
      const xsrf = (document.cookie.split('; ').find(c => c.startsWith('_xsrf=')) || '').slice(6);
      return (await fetch(url, {method: 'DELETE', headers: {'X-XSRFToken': decodeURIComponent(xsrf)}})).status;
    }""", f"{hub.url}/hub/api/users/hannah.neumann/server")  # what the home page's Stop button sends
    assert stopped in (202, 204), stopped
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            _server_uid("hannah.neumann")
        except AssertionError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("kai's server did not stop")
    r = httpx.put(f"{hub.sandbox_url}/_sandbox/users/{KAI_UPN}/account_enabled", json={"accountEnabled": False},
                  verify=ssl.create_default_context(cafile=hub.ca_file), timeout=30)
    assert r.status_code == 200 and r.json()["accountEnabled"] is False, r.text
    # the hub refreshes kai's tokens before a spawn (refresh_pre_spawn); the tenant refuses a disabled account's
    # refresh, so the hub refuses the spawn ("login again": 403), and a new sign-in is refused by the tenant
    answer = page.goto(f"{hub.url}/hub/spawn/hannah.neumann", wait_until="domcontentloaded")
    assert answer is not None
    if page.url.startswith(hub.url):
        assert answer.status == 403 and "login again" in page.inner_text("body"), (answer.status, page.url)
        page.goto(f"{hub.url}/hub/logout", wait_until="domcontentloaded")
        page.goto(f"{hub.url}/", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=30_000)
    assert page.url.startswith(hub.sandbox_url), page.url
    forms.fill_sign_in(page, KAI_UPN)
    page.wait_for_function("() => document.body && /AADSTS50057|account is disabled|Benutzerkonto ist deaktiviert/"
                           ".test(document.body.innerText)", timeout=30_000)
    page.close(run_before_unload=True)
    time.sleep(2)
    with pytest.raises(AssertionError, match="no jupyterhub-singleuser"):
        _server_uid("hannah.neumann")
