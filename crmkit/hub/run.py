"""``crmkit hub``: the sandbox tenant over https (unless a Microsoft tenant is given), the hub's app registration
there, and JupyterHub with its proxy, until Ctrl-C or SIGTERM stops them all."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from ..config import GRAPH_SCOPES  # the hub's sign-in carries crmkit's Graph permissions (config.SCOPES)
from ..voila_launch import free_port
from .config import VENV_BIN, HubConfig, Tenant, prepare_state, server_python, write_config, write_secret

__all__ = ["HubSettings", "run_hub"]

ENTRA_LOGIN = "https://login.microsoftonline.com"
ENTRA_GRAPH_ME = "https://graph.microsoft.com/v1.0/me"
HUB_APP_NAME = "crmkit hub (JupyterHub)"


@dataclasses.dataclass
class HubSettings:
    state: Path
    port: int = 8000  # 0: a free port
    home_base: Path = Path("/home")
    allowed_users: tuple[str, ...] = ()
    # Microsoft Entra ID: all three, or none for the sandbox.
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret_file: Path | None = None
    startup_timeout: float = 90.0
    # The CRM (PostgreSQL) the people's servers get their own logins to: the owner's URL, which the hub uses to
    # rotate those logins (crmkit/hub/hooks.py). None: servers get no CRM login.
    db: str | None = dataclasses.field(default=None, repr=False)


def _entra_tenant(settings: HubSettings) -> Tenant:
    """Entra's v2.0 endpoints for the tenant (JupyterHub's azuread authenticator builds the v1 ones)."""
    assert settings.tenant_id and settings.client_id and settings.client_secret_file
    base = f"{ENTRA_LOGIN}/{settings.tenant_id}/oauth2/v2.0"
    return Tenant("Microsoft", f"{base}/authorize", f"{base}/token", ENTRA_GRAPH_ME, settings.client_id,
                  settings.client_secret_file.resolve(), authority=f"{ENTRA_LOGIN}/{settings.tenant_id}",
                  logout_url=f"{base}/logout")


def _register_in_sandbox(state: Path, admin_url: str, callback: str) -> str:
    """The hub's confidential web app in the sandbox: the one registered before with today's permissions (its
    redirect URI updated to this start's port), else a new one, whose secret goes straight into a 0600 file.
    Returns its client id. A registration made with other permissions (an older crmkit's, User.Read alone) is
    replaced: the people's servers send with the hub's tokens, which carry only what the app was consented."""
    app_file = state / "sandbox_app.json"
    secret_file = state / "client_secret"
    with httpx.Client(base_url=admin_url, timeout=30) as api:
        known = json.loads(app_file.read_text()) if app_file.exists() and secret_file.exists() else {}
        if known and known.get("delegated_scopes") == list(GRAPH_SCOPES):
            client_id = known["client_id"]
            r = api.put(f"/_sandbox/apps/{client_id}/redirect_uris", json={"redirect_uris": [callback]})
            if r.status_code == 200:
                return str(client_id)
        r = api.post("/_sandbox/apps", json={"name": HUB_APP_NAME, "delegated_scopes": list(GRAPH_SCOPES),
                                             "redirect_uris": [callback]})
        r.raise_for_status()
        body = r.json()
    write_secret(secret_file, body["client_secret"])
    write_secret(app_file, json.dumps({"client_id": body["client_id"], "delegated_scopes": list(GRAPH_SCOPES)}))
    return str(body["client_id"])


def _sandbox_tenant(state: Path, sandbox_url: str, https_url: str, ca_file: str, callback: str) -> Tenant:
    """The sandbox's endpoints from its OIDC discovery (over https, trusting its CA)."""
    from ..sandbox import SANDBOX_TENANT_ID

    client_id = _register_in_sandbox(state, sandbox_url, callback)
    doc = httpx.get(f"{https_url}/{SANDBOX_TENANT_ID}/v2.0/.well-known/openid-configuration", verify=ca_file,
                    timeout=30).json()
    return Tenant("Microsoft (sandbox)", doc["authorization_endpoint"], doc["token_endpoint"],
                  f"{https_url}/v1.0/me", client_id, state / "client_secret", ca_file,
                  authority=f"{https_url}/{SANDBOX_TENANT_ID}", sandbox_url=sandbox_url,
                  logout_url=doc.get("end_session_endpoint", ""))


def _crm_db(state: Path, url: str) -> Path | None:
    """Check the CRM owner's URL (PostgreSQL, reachable, migrated to this crmkit) and keep it in the 0600 file
    the hub reads at each spawn; None (the error printed) when it will not do. A password belongs in the
    owner's libpq passfile (``~/.pgpass`` or ``PGPASSFILE``), never in a URL on a command line."""
    from ..errors import CrmkitError
    from ..store import Store, is_postgres_url

    if not is_postgres_url(url):
        print("crmkit hub: error: --db needs the CRM's postgresql:// URL (the people's servers share one "
              "PostgreSQL CRM; a DuckDB file is single-user mode).", file=sys.stderr)
        return None
    if urlsplit(url).password is not None or "password=" in urlsplit(url).query:
        print("crmkit hub: error: --db must not carry a password (a command line is visible to every user of "
              "this machine): put it into root's libpq passfile (~/.pgpass or PGPASSFILE).", file=sys.stderr)
        return None
    try:
        Store(url).close()  # the owner migrates the CRM now, not at the first spawn
    except CrmkitError as exc:
        print(f"crmkit hub: error: the CRM database: {exc}", file=sys.stderr)
        return None
    path = state / "crm_db_url"
    write_secret(path, url)
    return path


def _private_log(path: Path) -> TextIO:
    """A log file to append to, created 0600 (a hub's log names its people)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.chmod(path, 0o600)
    return os.fdopen(fd, "a")


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterHub exited with code {proc.returncode} while starting")
        try:
            if httpx.get(f"{url}/hub/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"JupyterHub did not answer at {url} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the hub stops the servers it spawned and its proxy
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def run_hub(settings: HubSettings, out: TextIO = sys.stdout) -> int:
    """Start the tenant (sandbox by default), register the hub there, start JupyterHub + proxy, print the hub's
    URL (never a secret) and serve until Ctrl-C or SIGTERM; everything started here is stopped on the way out."""
    if os.geteuid() != 0:
        print("crmkit hub: error: the hub must run as root: it creates an OS user per person and starts each "
              "server as that user.", file=sys.stderr)
        return 2
    state = prepare_state(settings.state.expanduser().resolve())
    entra = (settings.tenant_id, settings.client_id, settings.client_secret_file)
    if any(entra) and not all(entra):
        print("crmkit hub: error: Microsoft Entra ID needs --tenant-id, --client-id and --client-secret-file.",
              file=sys.stderr)
        return 2
    if settings.client_secret_file is not None:
        try:
            mode = settings.client_secret_file.stat().st_mode
        except OSError as exc:
            print(f"crmkit hub: error: cannot read the client secret file ({exc.strerror}).", file=sys.stderr)
            return 2
        if mode & 0o077:
            print(f"crmkit hub: error: {settings.client_secret_file} is readable by others; chmod 600 it.",
                  file=sys.stderr)
            return 2
    crm_db_file = _crm_db(state, settings.db) if settings.db else None
    if settings.db and crm_db_file is None:
        return 2
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C the same way, also when a parent left SIGINT ignored (a background job of a script)
    previous_sigint = signal.signal(signal.SIGINT, on_signal)
    cleanup: list[Callable[[], object]] = []
    try:
        port = settings.port or free_port()
        cfg_ports = {"port": port, "hub_port": free_port(), "proxy_api_port": free_port()}
        callback = f"http://127.0.0.1:{port}/hub/oauth_callback"
        if all(entra):
            tenant = _entra_tenant(settings)
        else:
            from ..sandbox.process import SandboxProcess

            sandbox_log = _private_log(state / "sandbox.log")
            cleanup.append(sandbox_log.close)
            (state / "sandbox").mkdir(mode=0o700, exist_ok=True)
            sandbox = SandboxProcess(state / "sandbox", port=0, https_port=0, log=sandbox_log)
            cleanup.append(sandbox.stop)
            tenant = _sandbox_tenant(state, sandbox.url, sandbox.https_url, sandbox.ca_file, callback)
            print(f"  sandbox     {sandbox.https_url}   (the tenant people sign in at; CA {sandbox.ca_file})", file=out)
        home_base = settings.home_base.resolve()
        home_base.mkdir(parents=True, exist_ok=True)
        python = server_python(home_base / ".crmkit-hub-python")
        cfg = HubConfig(state, tenant, home_base=home_base, python=python, allowed_users=settings.allowed_users,
                        crm_db_file=crm_db_file, **cfg_ports)
        config_file = write_config(cfg)
        log = _private_log(state / "hub.log")
        cleanup.append(log.close)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMKIT_", "JUPYTERHUB_", "CONFIGPROXY_"))}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        hub = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(config_file)], cwd=state, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               umask=0o077,  # its pid files, the proxy's, and what the servers write: private
                               start_new_session=True)  # Ctrl-C reaches us; we stop the hub in order
        cleanup.append(lambda: _stop(hub))
        _wait_up(cfg.url, hub, settings.startup_timeout)
        print(f"  hub         {cfg.url}/   (sign in with your {tenant.name} account)", file=out)
        print(f"  state       {state}   (0700; the hub's log: {state / 'hub.log'})", file=out)
        print("Press Ctrl+C to stop.", file=out, flush=True)
        while not stop and hub.poll() is None:
            time.sleep(0.5)
        if hub.poll() is not None:
            print(f"JupyterHub exited with code {hub.returncode}; see {state / 'hub.log'}.", file=out)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, httpx.HTTPError) as exc:
        print(f"crmkit hub: error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while stopping must not leave the rest running
        for step in reversed(cleanup):
            step()
        signal.signal(signal.SIGINT, previous_sigint)
        signal.signal(signal.SIGTERM, previous)
    print("crmkit hub stopped.", file=out, flush=True)
    return 0
