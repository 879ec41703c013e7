"""Sandbox tier for crmkit.graph: one sandbox subprocess per session, reset per test.

Tokens come from the sandbox admin API (``/_sandbox/token``), so these tests exercise Graph
alone; sign-in itself is tested in tests/auth.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmkit.graph import GraphClient
from crmkit.http import make_async_http_client
from crmkit.sandbox import GRAPH_BASE, SANDBOX_DEFAULT_UPN

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
URL_PREFIX = "CRMKIT_SANDBOX_URL="


class SandboxProc:
    def __init__(self, state: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "crmkit.sandbox", "--port", "0", "--state", str(state)],
            stdout=subprocess.PIPE, stderr=self._log_file, text=True, cwd=ROOT, env=env,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"sandbox did not start:\n{log.read_text()}") from None
        assert first.startswith(URL_PREFIX), first
        self.url = first[len(URL_PREFIX):]
        httpx.get(f"{self.url}/_sandbox/health", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


@pytest.fixture(scope="session")
def sandbox_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    base = tmp_path_factory.mktemp("graph-sandbox")
    sp = SandboxProc(base / "state", base / "sandbox.log")
    yield sp
    sp.stop()


class SandboxAdmin:
    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = httpx.Client(base_url=url, timeout=30)
        self.clients: list[GraphClient] = []

    def put(self, what: str, data: dict[str, Any]) -> dict[str, Any]:
        r = self.admin.put(f"/_sandbox/{what}", json=data)
        r.raise_for_status()
        return r.json()

    def get(self, what: str, **params: Any) -> Any:
        r = self.admin.get(f"/_sandbox/{what}", params=params)
        r.raise_for_status()
        return r.json()

    def token(self, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> str:
        r = self.admin.post("/_sandbox/token", json={"upn": upn, **kw})
        r.raise_for_status()
        return r.json()["access_token"]

    def graph(self, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> GraphClient:
        token = self.token(upn)
        client = GraphClient(lambda force: token, base_url=GRAPH_BASE, http=make_async_http_client(self.url), **kw)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.admin.close()


@pytest.fixture
def sandbox(sandbox_proc: SandboxProc) -> Iterator[SandboxAdmin]:
    sb = SandboxAdmin(sandbox_proc.url)
    sb.admin.post("/_sandbox/reset").raise_for_status()
    yield sb
    sb.close()
