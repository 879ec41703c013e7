"""What runs inside the JupyterHub process: the hub's user names and the spawner (imported by the
``jupyterhub_config.py`` that ``crmkit hub`` writes; not by crmkit itself).

Each person's single-user server runs as that person's own OS user, ``crmkit-<hub name>``, which the hub
creates at the first spawn (no password, no login shell, a 0700 home under ``home_base``): a notebook runs
any code its person types, so the one boundary that holds is the kernel's uid. Never root, never one shared
user (``SimpleLocalProcessSpawner`` isolates nobody).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid
from jupyterhub.utils import maybe_future
from traitlets import List, Unicode

from crmkit.hub.hooks import check_sign_in
from crmkit.processes import pid_alive
from crmkit.text_rules import account_name

__all__ = ["OS_USER_PREFIX", "CrmkitSpawner", "end_processes_of", "ensure_os_user", "hub_username", "os_user_name"]

OS_USER_PREFIX = "crmkit-"

# JupyterHub 6.1's BaseHandler sets _token_authenticated only on token-authenticated requests, but refresh_auth
# reads it for a browser (cookie) request whose refresh failed: with refresh_pre_spawn (a disabled account's
# refresh fails) /hub/spawn answered 500 (AttributeError) instead of its "auth has expired, login again" 403.
if not hasattr(BaseHandler, "_token_authenticated"):
    BaseHandler._token_authenticated = False
_MAX_OS_NAME = 32  # useradd's limit on Linux


def hub_username(userdata: Mapping[str, Any]) -> str:
    """The hub's name for a signed-in person: the local part of their directory account (Graph ``/me``'s
    ``userPrincipalName``, else the id_token-style ``preferred_username``), lower-case, with anything but
    ``a-z 0-9 . _ -`` made ``-``; e.g. ``lea.hoffmann@contoso.example`` -> ``lea.hoffmann``.

    Raises:
        ValueError: the user data names no account (the hub then refuses the sign-in).
    """
    upn = str(userdata.get("userPrincipalName") or userdata.get("preferred_username") or "")
    name = account_name(upn)  # as crmkit names the CRM user of a directory account
    if not name:
        raise ValueError("the tenant's user data names no account (userPrincipalName / preferred_username)")
    return name  # never cut: two long names must not become one person (os_user_name shortens with a hash)


def os_user_name(hub_name: str) -> str:
    """The OS user a hub user's server runs as: ``crmkit-<hub name>``, made safe and at most 32 characters (a
    longer one keeps a hash of the whole name, so two long names never meet)."""
    safe = account_name(hub_name) or "user"
    name = OS_USER_PREFIX + safe
    if len(name) > _MAX_OS_NAME:
        digest = hashlib.sha256(hub_name.encode()).hexdigest()[:6]
        name = name[:_MAX_OS_NAME - 7] + "-" + digest
    return name


def ensure_os_user(name: str, home_base: Path, comment: str = "") -> pwd.struct_passwd:
    """The OS user ``name``, created if missing: its own group, home ``home_base/name`` (0700, its own), no
    password, no login shell. Needs root (the hub runs as root to start servers as other users)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        home = home_base / name
        cmd = ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
               "--user-group", "--comment", re.sub(r"[:,\n]", " ", comment)[:100] or "crmkit hub user", name]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"useradd {name} failed: {done.stderr.strip()}") from None
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise RuntimeError(f"{name} is root; the hub never starts a server as root")
    home = Path(entry.pw_dir)
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    return entry


def _pids_of(uid: int) -> list[int]:
    """The live processes of ``uid`` (a zombie has ended: only its parent's wait is missing)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and pid_alive(int(entry.name)):
                    found.append(int(entry.name))
            except FileNotFoundError:
                continue  # ended while we looked
    return found


def end_processes_of(uid: int, wait_s: float = 5.0) -> list[int]:
    """Kill every process running as ``uid`` (a person's own OS user: nobody else runs as it) and wait until
    /proc has none; returns the pids that were still there. A kernel, a terminal's job or anything a notebook
    started in a session of its own outlives its server otherwise, with the person's database login in reach."""
    if uid == 0:
        raise ValueError("refusing to end root's processes")
    ended: list[int] = []
    deadline = time.monotonic() + wait_s
    while pids := _pids_of(uid):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            if pid not in ended:
                ended.append(pid)
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)  # a killed process leaves /proc once reaped; a fork it made meanwhile is found next round
    return ended


def _copy_owned(src: Path, dst: Path, uid: int, gid: int) -> None:
    """Copy ``src`` (a folder of notebooks) to ``dst`` once, owned by the person: it is their copy to edit."""
    if dst.exists() or not src.is_dir():
        return
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for root, dirs, files in os.walk(dst):
        for n in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(n, uid, gid)


class CrmkitSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose servers run as ``crmkit-<hub name>`` (created on first spawn), with the
    repo's notebooks/ and dashboards/ copied into the home once and the tenant's CA file beside them."""

    home_base = Unicode("/home", config=True, help="where the hub creates its people's homes")
    seed_dirs = List(Unicode(), config=True, help="folders copied into a new home (notebooks/, dashboards/)")
    ca_file = Unicode("", config=True, help="a CA file the server trusts (SSL_CERT_FILE); empty: the system's")
    # crmkit.hub.hooks.pre_spawn: the CRM a person's server gets their own login to (empty: none)
    crm_db_file = Unicode("", config=True, help="the hub's 0600 file holding the CRM owner's postgresql:// URL")
    id_authority = Unicode("", config=True, help="the tenant's authority, https://HOST/TENANT (id_token issuer)")
    id_client_id = Unicode("", config=True, help="the hub's app registration: the id_token's audience")

    @property
    def os_user(self) -> str:
        return os_user_name(self.user.name)

    async def run_pre_spawn_hook(self) -> Any:
        """First the person's OS user and home (so the configured hook, e.g. a CRM login handed into the
        home, finds them), then ``pre_spawn_hook``. A sign-in the CRM refuses (crmkit/hub/hooks.py) is refused
        before that: an account linked to no CRM user gets no OS user either."""
        await check_sign_in(self)
        entry = ensure_os_user(self.os_user, Path(self.home_base), f"crmkit hub user {self.user.name}")
        home = Path(entry.pw_dir)
        for src in self.seed_dirs:
            _copy_owned(Path(src), home / Path(src).name, entry.pw_uid, entry.pw_gid)
        if self.ca_file:
            ca = home / ".crmkit-tenant-ca.pem"
            shutil.copyfile(self.ca_file, ca)
            os.chown(ca, entry.pw_uid, entry.pw_gid)
            ca.chmod(0o644)
            self.environment = {**self.environment, "SSL_CERT_FILE": str(ca)}
        return await maybe_future(super().run_pre_spawn_hook())  # the configured hook may be sync or async

    def make_preexec_fn(self, name: str) -> Any:
        return set_user_setuid(self.os_user)

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        entry = pwd.getpwnam(self.os_user)
        env["USER"] = env["LOGNAME"] = self.os_user
        env["HOME"] = entry.pw_dir
        env["SHELL"] = "/bin/sh"  # the login shell is nologin; JupyterLab's terminals need a shell
        return env

    async def stop(self, now: bool = False) -> None:
        """Stop the server as LocalProcessSpawner does, then end whatever of the person's still runs
        (:func:`end_processes_of`): jupyter_client starts each kernel in a session of its own, so a kernel that did
        not end with its server (one busy when the server was signalled, e.g. a preheated one waiting for its page)
        would go on running. The person's next server starts from nothing of the old one."""
        await super().stop(now=now)
        left = await asyncio.to_thread(end_processes_of, pwd.getpwnam(self.os_user).pw_uid)
        if left:
            self.log.warning("crmkit: %d process(es) of %s outlived the server and were ended", len(left),
                             self.os_user)

    async def move_certs(self, paths: dict[str, str]) -> dict[str, str]:
        raise NotImplementedError("internal_ssl is not used by crmkit hub")
