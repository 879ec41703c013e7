"""Run the sandbox tenant as its own process: what ``crmkit demo`` and the test tiers start."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

__all__ = ["CA_PREFIX", "HTTPS_PREFIX", "URL_PREFIX", "SandboxProcess", "sandbox_is_up"]

URL_PREFIX = "CRMKIT_SANDBOX_URL="  # the first line the sandbox prints
HTTPS_PREFIX = "CRMKIT_SANDBOX_HTTPS_URL="  # then, with https, its https URL and the CA file to trust
CA_PREFIX = "CRMKIT_SANDBOX_CA="


def sandbox_is_up(url: str) -> bool:
    """Whether a crmkit sandbox answers at ``url``."""
    try:
        return httpx.get(f"{url.rstrip('/')}/_sandbox/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class SandboxProcess:
    """``python -m crmkit.sandbox`` in the background, on loopback.

    Args:
        state: the sandbox's state folder (its DuckDB file and signing key).
        port: 0 picks a free port.
        https_port: the https listener's port; 0 (the default) picks a free one, so that sandboxes started
            side by side (tests, a demo beside ``crmkit sandbox``) never compete for the CLI's 8766; None: no https.
        log: where the sandbox's log (stderr) goes.
        extra: more command-line flags (limits, faults, ``--device-code-interval`` …).
        env: the environment; ``CRMKIT_*`` variables of this process are not passed on.
        startup_timeout: seconds to wait for the sandbox's first line.

    Raises:
        RuntimeError: the sandbox did not start (the log says why).
    """

    def __init__(
        self, state: Path, *, port: int = 0, https_port: int | None = 0, log: IO[str] | None = None,
        extra: Sequence[str] = (), env: Mapping[str, str] | None = None, startup_timeout: float = 60.0,
    ) -> None:
        clean = {k: v for k, v in (env or os.environ).items() if not k.startswith("CRMKIT_")}
        tls = ["--no-https"] if https_port is None else ["--https-port", str(https_port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmkit.sandbox", "--port", str(port), *tls, "--state", str(state), *extra],
            stdout=subprocess.PIPE, stderr=log if log is not None else subprocess.DEVNULL, text=True, env=clean,
            stdin=subprocess.DEVNULL,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True, name="crmkit-sandbox-stdout").start()
        try:
            first = self.lines.get(timeout=startup_timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError("the sandbox did not start; see its log") from None
        if not first.startswith(URL_PREFIX):
            self.stop()
            raise RuntimeError(f"the sandbox did not start: {first}")
        self.url = first[len(URL_PREFIX):]
        self.banner = [first]  # the lines read so far; the rest come from printed()
        # The https URL ("" without https) and the CA file its certificate chains to (what clients trust).
        self.https_url = self.ca_file = ""
        while https_port is not None and not (self.https_url and self.ca_file):
            try:
                line = self.lines.get(timeout=startup_timeout)
            except queue.Empty:
                self.stop()
                raise RuntimeError("the sandbox printed no https URL / CA file; see its log") from None
            self.banner.append(line)
            if line.startswith(HTTPS_PREFIX):
                self.https_url = line[len(HTTPS_PREFIX):]
            elif line.startswith(CA_PREFIX):
                self.ca_file = line[len(CA_PREFIX):]
        if not sandbox_is_up(self.url):
            self.stop()
            raise RuntimeError(f"the sandbox printed {self.url} but does not answer there")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def printed(self) -> list[str]:
        """The lines the sandbox printed after :attr:`banner` (its other addresses)."""
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
