"""JupyterLab for the analysts' notebooks (``notebooks/``): the one way ``crmkit demo`` and the tests start it.

The server listens on 127.0.0.1 only and wants a random token. The token reaches the server through its
environment (never the command line, which ``ps`` shows), is taken out of that environment before any kernel
starts (kernels inherit the server's), and is not written anywhere: Jupyter logs a token it did not generate
as ``token=...``, and this launcher writes neither Jupyter's server-info file nor its browser-open file, which
would hold it. Only :func:`start_lab`'s caller sees the URL with the token, to print it to the user's terminal.

JupyterLab here fetches nothing from the internet: no news feed, no update check, a read-only extension manager.

>>> lab = start_lab(free_port(), {"CRMKIT_DB": "/abs/crm.duckdb"})  # doctest: +SKIP
>>> wait_until_up(lab.login_url, timeout=60, proc=lab.proc)         # doctest: +SKIP
>>> lab.url                                                        # doctest: +SKIP
'http://127.0.0.1:8888/lab/tree/notebooks?token=…'
>>> stop_lab(lab)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .voila_launch import HOST, stop_voila

__all__ = ["NOTEBOOKS", "PROJECT", "LabServer", "lab_command", "start_lab", "stop_lab"]

PROJECT = Path(__file__).resolve().parent.parent
NOTEBOOKS = PROJECT / "notebooks"
_TOKEN_VARIABLE = "CRMKIT_LAB_TOKEN"  # noqa: S105 (the variable's name, not a token)


@dataclass(frozen=True)
class LabServer:
    proc: subprocess.Popen[bytes]
    port: int
    token: str = field(repr=False)
    open_path: str = "notebooks"

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """Where to point a browser: the notebooks folder, signed in by the token (keep it out of logs)."""
        return f"{self.base}/lab/tree/{self.open_path}?token={self.token}"

    @property
    def login_url(self) -> str:
        """Answers without the token: poll it to see the server is up without sending the token around."""
        return f"{self.base}/login"


def lab_command(port: int, root_dir: Path = PROJECT, open_path: str = "notebooks") -> list[str]:
    """The command line: no secret on it (the token comes through the environment)."""
    args = [sys.executable, "-m", "crmkit.lab", "--no-browser", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root_dir}",
            f"--ServerApp.default_url=/lab/tree/{open_path}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers often run as root; JupyterLab refuses that otherwise
    return args


def start_lab(port: int, env: Mapping[str, str] | None = None, *, root_dir: Path = PROJECT,
              open_path: str = "notebooks", log: IO[bytes] | None = None) -> LabServer:
    """Start JupyterLab in the background with a fresh random token; pair with ``wait_until_up(lab.login_url)``
    and :func:`stop_lab`.

    Args:
        port: a free loopback port.
        env: variables added for the server and its kernels (``CRMKIT_DB`` absolute, ``CRMKIT_USER`` …).
        root_dir: what the file browser may show; ``open_path`` (inside it) is opened.
        log: an open file for JupyterLab's output (the token never appears there); None inherits stdout/stderr.
    """
    token = secrets.token_urlsafe(32)
    full_env = {**os.environ, **(env or {}), _TOKEN_VARIABLE: token}
    full_env.pop("JUPYTER_TOKEN", None)
    proc = subprocess.Popen(
        lab_command(port, root_dir, open_path), env=full_env, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
        # Its own session: a Ctrl+C in the terminal would otherwise reach it too and start Jupyter's
        # "Shutdown this Jupyter server (y/[n])?" prompt; the demo stops it with SIGTERM instead.
        start_new_session=True,
    )
    return LabServer(proc, port, token, open_path)


def stop_lab(lab: LabServer, timeout: float = 15.0) -> int:
    """SIGTERM (JupyterLab shuts its kernels down), SIGKILL if it does not exit; returns the exit code."""
    return stop_voila(lab.proc, timeout)


# The news prompt ("Would you like to get notified about official Jupyter news?") offers to fetch a feed
# from the internet; with no feed configured it would show nothing anyway.
_NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"


def _without_news(handler: object, page_config: dict[str, Any]) -> dict[str, Any]:
    disabled = page_config.get("disabledExtensions")
    if isinstance(disabled, dict):
        disabled[_NEWS_PLUGIN] = True
    else:
        page_config["disabledExtensions"] = [*(disabled or []), _NEWS_PLUGIN]
    return page_config


def main() -> None:
    """The server process (``python -m crmkit.lab``): JupyterLab without the files that would hold the token."""
    from jupyter_server.serverapp import ServerApp
    from jupyterlab.handlers.announcements import NeverCheckForUpdate
    from jupyterlab.labapp import LabApp

    token = os.environ.pop(_TOKEN_VARIABLE, "")
    if not token:
        raise SystemExit(f"{_TOKEN_VARIABLE} is not set; start JupyterLab through crmkit.lab.start_lab.")

    class _Lab(LabApp):
        __module__ = LabApp.__module__  # the server extension to load is jupyterlab's, not this module

        @classmethod
        def make_serverapp(cls, **kwargs: object) -> ServerApp:
            server = super().make_serverapp(**kwargs)
            # Neither file is written: Jupyter's server-info file and its open-in-browser page hold the
            # token (so `jupyter server list` does not see this server).
            server.write_server_info_file = lambda: None  # type: ignore[method-assign]
            server.write_browser_open_files = lambda: None  # type: ignore[method-assign]
            server.tornado_settings = {**server.tornado_settings, "page_config_hook": _without_news}
            return server

    # In this process's argv only, not on the command line ps shows; a token given as config is logged "...".
    _Lab.launch_instance(argv=[*sys.argv[1:], f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
                               "--LabApp.extension_manager=readonly",
                               f"--LabApp.check_for_updates_class={NeverCheckForUpdate.__module__}."
                               f"{NeverCheckForUpdate.__qualname__}"])


if __name__ == "__main__":
    main()
