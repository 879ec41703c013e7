"""Start the dashboards with Voila: the one place ``make demo``, the bench and the browser tests share.

The server always runs with the committed ``dashboards/voila.json`` and nothing else: the
command points ``Voila.config_file_paths`` at the dashboards folder only, so neither a
``voila.json`` in the working directory nor a user's Jupyter config can change what runs.

>>> cmd = voila_command(8866, DASHBOARDS)            # doctest: +SKIP
>>> proc = start_voila(8866, {"CRMKIT_DB": "crm.duckdb"})  # doctest: +SKIP
>>> wait_until_up(server_url(8866), timeout=60, proc=proc)  # doctest: +SKIP
>>> dashboard_url(8866, "addresses.ipynb")           # doctest: +SKIP
'http://127.0.0.1:8866/voila/render/addresses.ipynb'
>>> stop_voila(proc)                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

__all__ = [
    "DASHBOARDS",
    "HOST",
    "dashboard_url",
    "free_port",
    "idle_kernel_count",
    "kernel_ids",
    "server_url",
    "start_voila",
    "stop_voila",
    "voila_command",
    "wait_until_up",
]

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
HOST = "127.0.0.1"  # voila.json binds here; URLs must use the same address, not "localhost"


def voila_command(port: int, dashboards_dir: Path = DASHBOARDS) -> list[str]:
    """The argv that serves every notebook in ``dashboards_dir`` with that folder's ``voila.json``.

    Dashboards are then at ``/voila/render/<name>.ipynb``.
    """
    folder = Path(dashboards_dir).resolve()
    if not (folder / "voila.json").is_file():
        raise FileNotFoundError(f"{folder} has no voila.json; the dashboards must run with their committed config.")
    return [
        # Voila with the dashboards' page handler and kernel manager (crmkit.voila_app): a closed page's
        # kernel is shut down, which stock Voila 0.5 refuses (voila#1458).
        sys.executable, "-m", "crmkit.voila_app", str(folder), "--no-browser", f"--port={int(port)}",
        f"--Voila.config_file_paths={folder}",
    ]


def start_voila(
    port: int, env: Mapping[str, str] | None = None, *, dashboards_dir: Path = DASHBOARDS,
    log: IO[bytes] | IO[str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start Voila in the background; pair with :func:`wait_until_up` and :func:`stop_voila`.

    Args:
        port: a free loopback port (see :func:`free_port`).
        env: variables added to this process's environment (``CRMKIT_DB``, ``CRMKIT_USER``…);
            Voila's kernels inherit them. A relative ``CRMKIT_DB`` path is made absolute here (a
            ``postgresql://`` URL is kept as it is).
        dashboards_dir: the folder with the notebooks and ``voila.json``.
        log: an open file for Voila's output; None inherits this process's stdout/stderr.
    """
    from .store import is_postgres_url

    full_env = {**os.environ, **(env or {})}
    db = full_env.get("CRMKIT_DB")
    if db and db != ":memory:" and not is_postgres_url(db):  # a postgresql:// URL is no path: passed as given
        # Kernels run in the dashboards folder; a relative path would open a new, empty database there.
        full_env["CRMKIT_DB"] = str(Path(db).expanduser().resolve())
    return subprocess.Popen(
        voila_command(port, dashboards_dir), env=full_env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )


def server_url(port: int) -> str:
    """The server's root (the dashboards listing); poll this, not a dashboard, to see it is up:
    requesting a dashboard would spend its preheated kernel."""
    return f"http://{HOST}:{int(port)}/"


def dashboard_url(port: int, notebook: str = "addresses.ipynb") -> str:
    return f"http://{HOST}:{int(port)}/voila/render/{notebook}"


def wait_until_up(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``url`` until the server answers (any status below 500); return the seconds waited.

    Raises:
        RuntimeError: ``proc`` exited before the server came up.
        TimeoutError: no answer within ``timeout`` seconds.
    """
    # Loopback only: bypass any proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Voila exited with code {proc.returncode} before {url} answered; see its log.")
        try:
            with opener.open(url, timeout=5) as response:
                if response.status < 500:
                    return time.monotonic() - started
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def stop_voila(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM (Voila then shuts its kernels down), SIGKILL if it does not exit; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return int(proc.returncode)


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def idle_kernel_count(dashboards_dir: Path = DASHBOARDS) -> int:
    """How many kernels an idle server holds: the preheated pool of every notebook in the folder.

    Read from the folder's ``voila.json`` the way Voila reads it: ``VoilaKernelManager.kernel_pools_config``
    per notebook (its ``default`` entry otherwise), else ``VoilaConfiguration.default_pool_size``.
    """
    folder = Path(dashboards_dir).resolve()
    config = json.loads((folder / "voila.json").read_text(encoding="utf-8"))
    voila = config.get("VoilaConfiguration", {})
    if not voila.get("preheat_kernel"):
        return 0
    pools = config.get("VoilaKernelManager", {}).get("kernel_pools_config", {})
    default = pools.get("default", {}).get("pool_size", max(int(voila.get("default_pool_size", 1)), 0))
    notebooks = [p.relative_to(folder).as_posix() for p in folder.rglob("*.ipynb")
                 if ".ipynb_checkpoints" not in str(p)]
    return sum(int(pools.get(nb, {}).get("pool_size", default)) for nb in notebooks)


def kernel_ids(proc: subprocess.Popen[bytes] | int) -> list[str]:
    """The ids of the kernels a Voila server (its Popen or pid) runs now, from its ``ipykernel`` children.

    Counting processes needs no credentials, unlike Voila's ``/api/kernels``; the id is the name of the
    connection file a kernel was started with (``-f …/kernel-<id>.json``).
    """
    import psutil  # ipykernel's dependency, so present wherever Voila runs

    pid = proc if isinstance(proc, int) else proc.pid
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    ids = []
    for child in children:
        try:
            argv = child.cmdline()
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        if "ipykernel_launcher" not in " ".join(argv) or "-f" not in argv[:-1]:
            continue
        name = Path(argv[argv.index("-f") + 1]).name
        if name.startswith("kernel-") and name.endswith(".json"):
            ids.append(name.removeprefix("kernel-").removesuffix(".json"))
    return sorted(ids)
