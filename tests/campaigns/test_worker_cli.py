"""``crmkit worker`` as a process: refuses a missing database, runs once, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import crmkit

pytestmark = pytest.mark.core


def worker(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    return subprocess.Popen([sys.executable, "-m", "crmkit.cli", *args], text=True, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_missing_database_is_a_one_line_error(tmp_path: Path) -> None:
    _out, err = worker("worker", "--db", str(tmp_path / "none.duckdb"), "--once").communicate(timeout=120)
    assert err.strip().splitlines() == [f"crmkit: error: no database at {tmp_path / 'none.duckdb'}; give --db PATH "
                                        "of the CRM's database (or create one with `crmkit init`)."]
    assert not (tmp_path / "none.duckdb").exists()


def test_once_then_sigterm_releases_the_lease(db_location: str) -> None:
    crmkit.open(db_location).store.close()
    once = worker("--db", db_location, "worker", "--once")
    out, err = once.communicate(timeout=120)
    assert once.returncode == 0, err
    assert "was active; runs: none." in out
    running = worker("worker", "--db", db_location, "--interval", "0.2")
    store = crmkit.open(db_location).store
    deadline = time.monotonic() + 60
    while not store.one("SELECT count(*) FROM campaign_worker_lease"):
        if time.monotonic() > deadline or running.poll() is not None:
            running.kill()  # its stderr ends only with the process
            pytest.fail(f"the worker never took the lease: {running.communicate()[1][-3000:]}")
        time.sleep(0.2)
    running.send_signal(signal.SIGTERM)
    out, err = running.communicate(timeout=60)
    assert running.returncode == 0 and "SIGTERM, stopping" in err
    assert store.one("SELECT count(*) FROM campaign_worker_lease") == 0
