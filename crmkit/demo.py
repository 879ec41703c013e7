"""``crmkit demo``: the sandbox tenant, demo data, the Voila dashboards and JupyterLab, in one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import ConfigError
from .store import default_path, is_postgres_url

__all__ = ["DemoSettings", "prepare_database", "run_demo"]

DASHBOARDS = ("addresses.ipynb", "my_settings.ipynb", "settings.ipynb", "campaigns.ipynb")  # printed if present
# Whom JupyterLab's notebooks open as: notebooks/ are for sales users (role sales, right teams.send).
LAB_USER = "anna"


@dataclass(frozen=True)
class DemoSettings:
    db: str | None = None
    addresses: int = 1000
    sandbox_port: int = 8765
    sandbox_https_port: int = 8766  # the sandbox's https listener, for clients other than crmkit (0: a free one)
    voila_port: int = 8866
    lab_port: int = 8888
    lab_user: str = LAB_USER
    state: str = ".crmkit"  # sandbox state and the servers' logs, next to the database by default


def prepare_database(path: str, addresses: int, out: TextIO) -> None:
    """Create the database, fill it with demo data once, and switch the Teams integration on."""
    from . import demo_data
    from .crm import open as open_crm
    from .teams import activation

    crm = open_crm(path, "admin")
    if crm.count_addresses() == 0:
        summary = demo_data.generate(crm, addresses)
        print(f"Demo data: {summary['addresses']:,} addresses, {summary['contacts']:,} contacts, "
              f"users {', '.join(summary['users_added']) or 'already there'}.", file=out)
    if activation.enable(crm):
        print("Microsoft Teams integration switched on (contact type TS created).", file=out)
    crm.store.close()


def _finish(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Wait for a process already sent SIGTERM; SIGKILL it if it does not exit in time."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def run_demo(settings: DemoSettings, out: TextIO = sys.stdout) -> int:
    """Start everything, print the addresses, and serve until Ctrl+C or SIGTERM. Returns an exit code.

    Every process started here is stopped on the way out, whatever ends the demo (Ctrl+C, SIGTERM, a
    server that exits, an error while starting the next one).
    """
    from .lab import start_lab
    from .sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
    from .sandbox.process import SandboxProcess, sandbox_is_up
    from .voila_launch import dashboard_url, server_url, start_voila, wait_until_up

    raw = settings.db or default_path()
    if is_postgres_url(raw):  # a team's server: the state folder stays in the working directory
        db, state = raw, Path.cwd() / settings.state
    else:
        db = str(Path(raw).expanduser().resolve())
        state = Path(db).parent / settings.state
    state.mkdir(mode=0o700, exist_ok=True)
    prepare_database(db, settings.addresses, out)

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    cleanup: list[Callable[[], object]] = []  # run in reverse order of starting
    servers: list[subprocess.Popen[bytes]] = []  # all get SIGTERM at once on the way out, then are waited for
    try:
        sandbox_url = f"http://127.0.0.1:{settings.sandbox_port}"
        sandbox = None
        if sandbox_is_up(sandbox_url):
            print(f"Using the sandbox tenant already running at {sandbox_url}.", file=out)
        else:
            sandbox_log = (state / "sandbox.log").open("a")
            cleanup.append(sandbox_log.close)
            try:
                sandbox = SandboxProcess(state / "sandbox", port=settings.sandbox_port,
                                         https_port=settings.sandbox_https_port, log=sandbox_log)
            except RuntimeError as exc:
                raise ConfigError(
                    f"The sandbox tenant could not start on ports {settings.sandbox_port} (http) and "
                    f"{settings.sandbox_https_port} (https) ({exc}; see {state / 'sandbox.log'}). Free the ports "
                    "or choose others with --sandbox-port and --sandbox-https-port."
                ) from exc
            cleanup.append(sandbox.stop)
        env = {"CRMKIT_DB": db, "CRMKIT_USER": os.environ.get("CRMKIT_USER", "admin"),
               "CRMKIT_SANDBOX_URL": sandbox_url}
        voila_log = (state / "voila.log").open("ab")
        cleanup.append(voila_log.close)
        voila = start_voila(settings.voila_port, env, log=voila_log)
        servers.append(voila)
        cleanup.append(lambda: _finish(voila))
        # The campaign worker runs delayed reaction actions (the reference's automation service).
        worker_log = (state / "worker.log").open("ab")
        cleanup.append(worker_log.close)
        worker = subprocess.Popen(
            [sys.executable, "-m", "crmkit.cli", "--db", db, "worker", "--interval", "2"],
            env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT,
        )
        servers.append(worker)  # SIGTERM: it finishes its run and releases its lease
        cleanup.append(lambda: _finish(worker))
        # JupyterLab for the analysts' notebooks, as the sales user they are written for.
        lab_log = (state / "jupyterlab.log").open("ab")  # JupyterLab logs the token as "token=..."
        cleanup.append(lab_log.close)
        lab = start_lab(settings.lab_port, {**env, "CRMKIT_USER": settings.lab_user}, log=lab_log)
        servers.append(lab.proc)  # its own session: a Ctrl+C reaches it only through this SIGTERM
        cleanup.append(lambda: _finish(lab.proc))
        try:
            wait_until_up(server_url(settings.voila_port), timeout=180, proc=voila)
        except (RuntimeError, TimeoutError) as exc:
            raise ConfigError(f"Voila did not start on port {settings.voila_port} ({exc}); see "
                              f"{state / 'voila.log'}. Free the port or choose another with --voila-port.") from exc
        try:
            wait_until_up(lab.login_url, timeout=180, proc=lab.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise ConfigError(f"JupyterLab did not start on port {settings.lab_port} ({exc}); see "
                              f"{state / 'jupyterlab.log'}. Free the port or choose another with --lab-port.") from exc
        print("\ncrmkit demo is running. Open in a browser:", file=out)
        from .voila_launch import DASHBOARDS as folder

        for name in (n for n in DASHBOARDS if (folder / n).exists()):
            print(f"  {name.removesuffix('.ipynb'):<11} {dashboard_url(settings.voila_port, name)}", file=out)
        print(f"  {'':<11} (as another demo user: add ?user=NAME, e.g. ?user=tom; see the README)", file=out)
        # The token is in this URL only: printed to the user's terminal, as Jupyter itself does, never logged.
        print(f"  {'notebooks':<11} {lab.url}", file=out)
        print(f"  {'':<11} (JupyterLab; notebooks open as the CRM user {settings.lab_user})", file=out)
        print(f"  {'teams':<11} {sandbox_url}/teams   (what arrived, as recipients see it)", file=out)
        if sandbox is not None and sandbox.https_url:
            # for msal, azure-identity, msgraph-sdk … (README: "Use the sandbox from other tools")
            print(f"  {'authority':<11} {sandbox.https_url}/{SANDBOX_TENANT_ID}   (the sandbox over https, for "
                  "other tools)", file=out)
            print(f"  {'CA file':<11} {sandbox.ca_file}   (trust it for the https URLs)", file=out)
        print(f"\nSign in to Teams (sandbox) as e.g. {SANDBOX_DEFAULT_UPN} with the demo password "
              f"{SANDBOX_PASSWORD!r} (a published sandbox value, not a secret).", file=out)
        print(f"Campaign worker running. Logs: {state}", file=out)
        print(f"Database: {db}\nPress Ctrl+C to stop.", file=out, flush=True)
        procs = {"Voila": voila, "the campaign worker": worker, "JupyterLab": lab.proc,
                 **({"the sandbox tenant": sandbox.proc} if sandbox is not None else {})}
        while not stop and all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
        for what, p in procs.items():
            if p.poll() is not None:
                print(f"{what} exited with code {p.returncode}; stopping the demo (logs: {state}).", file=out)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl+C while stopping must not leave the rest running.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in servers:  # in parallel: each shuts its kernels down meanwhile
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for step in reversed(cleanup):
            step()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
    print("crmkit demo stopped.", file=out)
    return 0
