"""``crmkit demo``: the sandbox tenant, demo data and the Voila dashboards, in one command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .errors import ConfigError
from .store import default_path

__all__ = ["DemoSettings", "prepare_database", "run_demo"]

DASHBOARDS = ("addresses.ipynb", "settings.ipynb", "campaigns.ipynb")


@dataclass(frozen=True)
class DemoSettings:
    db: str | None = None
    addresses: int = 1000
    sandbox_port: int = 8765
    voila_port: int = 8866
    state: str = ".crmkit"  # sandbox state and Voila's log, next to the database by default


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


def run_demo(settings: DemoSettings, out: TextIO = sys.stdout) -> int:
    """Start everything, print the addresses, and serve until Ctrl+C. Returns an exit code."""
    from .sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
    from .sandbox.process import SandboxProcess, sandbox_is_up
    from .voila_launch import dashboard_url, server_url, start_voila, stop_voila, wait_until_up

    db = str(Path(settings.db or default_path()).expanduser().resolve())
    state = Path(db).parent / settings.state
    state.mkdir(mode=0o700, exist_ok=True)
    prepare_database(db, settings.addresses, out)

    sandbox_url = f"http://127.0.0.1:{settings.sandbox_port}"
    sandbox = None
    if sandbox_is_up(sandbox_url):
        print(f"Using the sandbox tenant already running at {sandbox_url}.", file=out)
    else:
        sandbox_log = (state / "sandbox.log").open("a")
        try:
            sandbox = SandboxProcess(state / "sandbox", port=settings.sandbox_port, log=sandbox_log)
        except RuntimeError as exc:
            raise ConfigError(
                f"The sandbox tenant could not start on port {settings.sandbox_port} ({exc}; see "
                f"{state / 'sandbox.log'}). Free the port or choose another with --sandbox-port."
            ) from exc
    voila_log = (state / "voila.log").open("ab")
    env = {"CRMKIT_DB": db, "CRMKIT_USER": os.environ.get("CRMKIT_USER", "admin"),
           "CRMKIT_SANDBOX_URL": sandbox_url}
    voila = start_voila(settings.voila_port, env, log=voila_log)
    # The campaign worker runs delayed reaction actions (the reference's automation service).
    worker_log = (state / "worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "crmkit.cli", "--db", db, "worker", "--interval", "2"],
        env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_until_up(server_url(settings.voila_port), timeout=180, proc=voila)
        except (RuntimeError, TimeoutError) as exc:
            raise ConfigError(f"Voila did not start on port {settings.voila_port} ({exc}); see "
                              f"{state / 'voila.log'}. Free the port or choose another with --voila-port.") from exc
        print("\ncrmkit demo is running. Open in a browser:", file=out)
        from .voila_launch import DASHBOARDS as folder

        for name in (n for n in DASHBOARDS if (folder / n).exists()):
            print(f"  {name.removesuffix('.ipynb'):<10} {dashboard_url(settings.voila_port, name)}", file=out)
        print(f"  {'teams':<10} {sandbox_url}/teams   (what arrived, as recipients see it)", file=out)
        print(f"\nSign in to Teams (sandbox) as e.g. {SANDBOX_DEFAULT_UPN} with the demo password "
              f"{SANDBOX_PASSWORD!r} (a published sandbox value, not a secret).", file=out)
        print(f"Campaign worker running (log: {state / 'worker.log'}).", file=out)
        print(f"Database: {db}\nPress Ctrl+C to stop.", file=out, flush=True)
        stop = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        while not stop and voila.poll() is None and (sandbox is None or sandbox.proc.poll() is None):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop_voila(voila)
        voila_log.close()
        stop_voila(worker)  # SIGTERM: the worker finishes its current run and releases its lease
        worker_log.close()
        if sandbox is not None:
            sandbox.stop()
    print("crmkit demo stopped.", file=out)
    return 0
