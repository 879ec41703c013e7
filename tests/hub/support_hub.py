"""Shared pieces of the hub tier's tests: ``crmkit hub`` as a subprocess, a Chromium context for it, a sign-in.

:func:`running_hub` starts ``crmkit hub`` (state in a tmp folder, the people's homes in a fresh 0711 folder) and
stops it with SIGTERM; the OS users ``crmkit-*`` it created are removed after, and a process of theirs that
outlived the hub fails the test. :func:`hub_context` is a Chromium context trusting the sandbox's own CA page,
with every request off loopback refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import forms
from tests.support.network import is_loopback_url

ROOT = Path(__file__).resolve().parents[2]
CRMKIT = ROOT / ".venv" / "bin" / "crmkit"
_HUB = re.compile(r"^\s+hub\s+(http://127\.0\.0\.1:\d+)/")
_SANDBOX = re.compile(r"^\s+sandbox\s+(https://127\.0\.0\.1:\d+)\s+.*CA (\S+?)\)")


@dataclass
class RunningHub:
    url: str
    sandbox_url: str  # the tenant, over https
    ca_file: str  # what trusts the sandbox's certificate
    state: Path
    homes: Path
    proc: subprocess.Popen[str]
    output: list[str]


def crmkit_os_users() -> set[str]:
    return {p.pw_name for p in pwd.getpwall() if p.pw_name.startswith("crmkit-")}


def pids_of_uid(uid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if d.stat().st_uid == uid:
                    found.append(int(d.name))
            except FileNotFoundError:
                continue
    return found


def server_pid(hub_name: str) -> int:
    """The pid of the jupyterhub-singleuser process the hub runs for ``hub_name``."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            env = (d / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if (any(c.endswith((b"jupyterhub-singleuser", b"jupyterhub.singleuser")) for c in cmd)
                and f"JUPYTERHUB_USER={hub_name}".encode() in env):
            return int(d.name)
    raise AssertionError(f"no jupyterhub-singleuser process for {hub_name}")


def remove_os_user(name: str) -> None:
    """Remove the OS user ``name`` and its home, its processes killed first. userdel refuses a user that still
    has a process, and a refused one would outlive its home and break that person's next spawn, so this waits
    (up to 10 s) until the killed processes are gone."""
    uid = pwd.getpwnam(name).pw_uid
    for _ in range(50):
        pids = pids_of_uid(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    subprocess.run(["userdel", "--remove", name], capture_output=True, check=False)


def remove_stale_os_users() -> None:
    """crmkit-* users an earlier run left without a home and without processes: their next spawn would fail. A
    hub that is running (another test's, beside this one) has the homes of its users, so they are left alone."""
    for entry in pwd.getpwall():
        if entry.pw_name.startswith("crmkit-") and not Path(entry.pw_dir).exists() and not pids_of_uid(entry.pw_uid):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)


@contextmanager
def running_hub(tmp: Path, args: Sequence[str] = ()) -> Iterator[RunningHub]:
    """``args``: more of ``crmkit hub``'s options, e.g. ``("--db", url)``."""
    if os.geteuid() != 0:
        pytest.skip("crmkit hub runs as root (it creates an OS user per person)")
    remove_stale_os_users()
    before = crmkit_os_users()
    state = tmp / "state"
    homes = Path(tempfile.mkdtemp(prefix="crmkit-hub-homes-"))  # outside pytest's 0700 tmp: homes must be reachable
    homes.chmod(0o711)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    proc = subprocess.Popen([str(CRMKIT), "hub", "--state", str(state), "--port", "0", "--home-base", str(homes),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    output: list[str] = []
    url = sandbox = ca = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if m := _SANDBOX.match(line):
                sandbox, ca = m.group(1), m.group(2)
            if m := _HUB.match(line):
                url = m.group(1)
                break
        assert url and sandbox, "crmkit hub printed no hub/sandbox URL:\n" + "".join(output)
        yield RunningHub(url, sandbox, ca, state, homes, proc, output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        # only the users THIS hub made (their homes are in its folder): other hubs (other tests, other runs at
        # the same time) make crmkit-* users too, and theirs are not ours to remove
        created = {n for n in crmkit_os_users() - before if Path(pwd.getpwnam(n).pw_dir).parent == homes}
        leftover = {n: pids_of_uid(pwd.getpwnam(n).pw_uid) for n in created}
        for name in created:
            remove_os_user(name)
        shutil.rmtree(homes, ignore_errors=True)
        if proc.stdout is not None:
            proc.stdout.close()
        assert not any(leftover.values()), f"processes of the hub's users outlived crmkit hub: {leftover}"


@contextmanager
def hub_context(browser: Any) -> Iterator[Any]:
    """A Chromium context that trusts the sandbox's https page (its own CA) and lets nothing leave loopback."""
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
    external: list[str] = []

    def refuse(route: Any) -> None:
        external.append(route.request.url)
        route.abort("blockedbyclient")

    ctx.route(lambda url: not is_loopback_url(url), refuse)
    try:
        yield ctx
    finally:
        ctx.close()
    assert not [u for u in external if "fonts" not in u and "mathjax" not in u], external


def sign_in_to_lab(context: Any, hub: RunningHub, upn: str) -> float:
    """Sign in at the hub (auto_login: straight to the tenant's page) as ``upn`` and wait for JupyterLab; returns
    the seconds from submitting the password to Lab's shell. The page stays open (its cookies are the context's)."""
    page = context.new_page()
    page.goto(hub.url + "/", wait_until="domcontentloaded")
    page.wait_for_selector("#passwd", timeout=30_000)
    t0 = time.monotonic()
    forms.fill_sign_in(page, upn)
    page.wait_for_selector(".jp-LabShell", timeout=90_000)
    took = time.monotonic() - t0
    page.close(run_before_unload=True)
    return took


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine as the hub would, on a loop of its own, in a thread: Playwright's sync API, used by the
    browser tests earlier in the same session, keeps an event loop running in this one (asyncio.run refuses)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
