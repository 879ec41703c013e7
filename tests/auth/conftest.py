"""Sandbox tier for crmkit.auth: one real sandbox subprocess per session, reset per test.

The browser side of the device-code flow is driven with plain HTTP form posts, exactly as a
browser submits the sandbox's sign-in page (same action, hidden fields, pressed button).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sandbox import Browser, SandboxAdmin, SandboxProc, fresh_tenant

import crmkit
from crmkit.auth import Microsoft365


class SandboxHandle(SandboxAdmin):
    def device_calls(self) -> int:
        return sum(n for k, n in self.counters().items() if "devicecode" in k)

    def token_grants(self) -> int:
        return sum(n for k, n in self.counters().items() if "oauth2/v2.0/token" in k)


@pytest.fixture
def sandbox(sandbox_proc: SandboxProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SandboxHandle]:
    """A reset sandbox; CRMKIT_SANDBOX_URL and a private CRMKIT_HOME for this test."""
    with fresh_tenant(sandbox_proc, monkeypatch, tmp_path, SandboxHandle) as sb:
        yield sb


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


@pytest.fixture
def crm_file(tmp_path: Path) -> crmkit.CRM:
    """A file-backed CRM (so the DuckDB file can be inspected) with users of several roles."""
    crm = crmkit.open(tmp_path / "crm.duckdb")
    crm.add_user("sara", "Sara Sales", roles=["sales"])
    crm.add_user("carl", "Carl Campaigns", roles=["campaign_manager"])
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    return crm


@pytest.fixture
def m365(sandbox: SandboxHandle, crm_file: crmkit.CRM) -> Iterator[Microsoft365]:
    m = Microsoft365(crm_file)
    yield m
    m.close()
