"""``crmkit hub``: a real JupyterHub with its proxy, against the sandbox over https, driven in Chromium.

One hub per module (``hub`` fixture: ``crmkit hub`` as a subprocess, its state in a tmp folder, the people's
homes in a fresh 0711 folder). tom (the CRM's teams admin; his directory account is lea.hoffmann) signs in with
his sandbox password and lands in his own JupyterLab, whose server runs as his own OS user, created by the hub:
not root, no other person's uid, home 0700. anna signs in too and gets another OS user that cannot read tom's
home. The hub's state folder is 0700 with 0600 files, and no secret of it is in its config or logs. SIGTERM stops
hub, proxy, servers and sandbox; the OS users the hub made are removed at the end.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_DOMAIN
from tests.support import forms
from tests.support.network import is_loopback_url

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[2]
CRMKIT = ROOT / ".venv" / "bin" / "crmkit"
TOM_UPN = f"lea.hoffmann@{SANDBOX_DOMAIN}"  # tom's directory account (README: "The demo's users")
HUB_LINE = re.compile(r"^\s+hub\s+(http://127\.0\.0\.1:\d+)/")


@dataclass
class Hub:
    url: str
    state: Path
    homes: Path
    proc: subprocess.Popen[str]
    output: list[str]
    started_s: float


def _crmkit_users() -> set[str]:
    return {p.pw_name for p in pwd.getpwall() if p.pw_name.startswith("crmkit-")}


def _pids_of(uid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid:
                    pids.append(int(d.name))
            except FileNotFoundError:
                continue
    return pids


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    if os.geteuid() != 0:
        pytest.skip("crmkit hub runs as root (it creates an OS user per person)")
    before = _crmkit_users()
    state = tmp_path_factory.mktemp("hub") / "state"
    homes = Path(tempfile.mkdtemp(prefix="crmkit-hub-homes-"))  # outside pytest's 0700 tmp: homes must be reachable
    homes.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    t0 = time.monotonic()
    proc = subprocess.Popen([str(CRMKIT), "hub", "--state", str(state), "--port", "0", "--home-base", str(homes)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    output: list[str] = []
    url = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            m = HUB_LINE.match(line)
            if m:
                url = m.group(1)
                break
        assert url, "crmkit hub printed no hub URL:\n" + "".join(output)
        yield Hub(url, state, homes, proc, output, time.monotonic() - t0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        created = _crmkit_users() - before
        leftover = {n: _pids_of(pwd.getpwnam(n).pw_uid) for n in created}
        for name in created:
            for pid in leftover[name]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)
        shutil.rmtree(homes, ignore_errors=True)
        if proc.stdout is not None:
            proc.stdout.close()
        assert not any(leftover.values()), f"processes of the hub's users outlived crmkit hub: {leftover}"


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A Chromium context that trusts the sandbox's https page (its own CA) and lets nothing leave loopback."""
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
    external: list[str] = []

    def refuse(route: Any) -> None:
        external.append(route.request.url)
        route.abort("blockedbyclient")

    ctx.route(lambda url: not is_loopback_url(url), refuse)
    yield ctx
    ctx.close()
    assert not [u for u in external if "fonts" not in u and "mathjax" not in u], external


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
    """The uid of the single-user server process JupyterHub started for ``hub_name`` (from /proc)."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            env = (d / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        server = any(c.endswith((b"jupyterhub-singleuser", b"jupyterhub.singleuser")) for c in cmd)
        if server and f"JUPYTERHUB_USER={hub_name}".encode() in env:
            uid_line = next(line for line in (d / "status").read_text().splitlines() if line.startswith("Uid:"))
            return int(uid_line.split()[1])  # the real uid (effective, saved, fs follow on the line)
    raise AssertionError(f"no jupyterhub-singleuser process for {hub_name}")


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
    texts = {n: (state / n).read_text(errors="replace") for n in ("jupyterhub_config.py", "hub.log", "sandbox.log")}
    texts["crmkit hub's output"] = "".join(hub.output)
    for where, text in texts.items():
        for i, s in enumerate(secrets):
            assert s not in text, f"secret #{i} in {where}"
        for kind, pattern in (("JWT", r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."),
                              ("refresh token", r"0\.sbx\.[A-Za-z0-9_-]{20,}"),
                              ("authorization code", r"1\.sbx\.[A-Za-z0-9_-]{20,}")):
            assert not re.search(pattern, text), f"a {kind} in {where}"
