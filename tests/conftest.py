"""Shared fixtures. Tier markers are registered in pyproject.toml; each tier runs alone with -m."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import crmkit

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's CRMKIT_* configuration."""
    for name in list(os.environ):
        if name.startswith("CRMKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def crm() -> crmkit.CRM:
    """A fresh in-memory CRM, signed in as the built-in admin."""
    return crmkit.open(":memory:")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "crm.duckdb"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT
