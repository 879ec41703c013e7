"""Sandbox tier for crmkit.graph: one sandbox subprocess per session, reset per test.

Tokens come from the sandbox admin API (``/_sandbox/token``), so these tests exercise Graph
alone; sign-in itself is tested in tests/auth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support.sandbox import SandboxAdmin, SandboxProc, minted_graph, minted_token

from crmkit.graph import GraphClient
from crmkit.sandbox import SANDBOX_DEFAULT_UPN


@pytest.fixture(scope="session")
def sandbox_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    base = tmp_path_factory.mktemp("graph-sandbox")
    sp = SandboxProc(base / "state", base / "sandbox.log")
    yield sp
    sp.stop()


class GraphSandbox(SandboxAdmin):
    """The admin API plus Graph clients holding tokens minted by the sandbox (no sign-in)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.clients: list[GraphClient] = []

    def token(self, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> str:
        return minted_token(self, upn, **kw)

    def graph(self, upn: str = SANDBOX_DEFAULT_UPN, **kw: Any) -> GraphClient:
        client = minted_graph(self, upn, **kw)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for c in self.clients:
            c.close()
        super().close()


@pytest.fixture
def sandbox(sandbox_proc: SandboxProc) -> Iterator[GraphSandbox]:
    sb = GraphSandbox(sandbox_proc.url)
    sb.admin.post("/_sandbox/reset").raise_for_status()
    yield sb
    sb.close()
