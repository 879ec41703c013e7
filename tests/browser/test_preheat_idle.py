"""A preheated dashboard kernel waits for its visitor as long as it takes.

Under preheating the dashboard's cell blocks in ``wait_for_voila_request`` until someone opens the
page. With a cell timeout in ``VoilaExecutor`` (it was 60 s), that wait timed out and the next
visitor got a page without widgets. This test idles past that and then opens the settings page.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from crmkit.voila_launch import DASHBOARDS, dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

from .conftest import build_demo_db

pytestmark = pytest.mark.browser

OLD_CELL_TIMEOUT_S = 60  # what voila.json once gave every cell, the wait for the visitor included
WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box


def test_committed_config_gives_cells_no_timeout() -> None:
    config = json.loads((DASHBOARDS / "voila.json").read_text(encoding="utf-8"))
    assert config.get("VoilaExecutor", {}).get("timeout") in (None, -1)


def test_settings_page_works_after_the_preheated_kernel_idled(tmp_path: Path, output_dir: Path, page: Any) -> None:
    from playwright.sync_api import expect

    db = build_demo_db(tmp_path / "crm.duckdb", n=50)
    port = free_port()
    with (output_dir / "voila-preheat-idle.log").open("wb") as log:
        proc = start_voila(port, {"CRMKIT_DB": str(db.path), "CRMKIT_USER": "admin",
                                  "CRMKIT_HOME": str(tmp_path / "home")}, log=log)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            time.sleep(OLD_CELL_TIMEOUT_S + 15)  # the pool heats within seconds, then its kernel waits
            assert proc.poll() is None
            page.goto(dashboard_url(port, "settings.ipynb"), wait_until="commit")
            enable = page.locator(".crmkit-teams-enable input[type=checkbox]")
            enable.wait_for(state="visible", timeout=WIDGETS_UP)
            expect(enable).to_be_enabled()
            expect(page.locator(".crmkit-settings-user")).to_contain_text("Administrator")
        finally:
            stop_voila(proc)
