"""The Voila launcher and the committed config, checked without starting a server (core tier)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crmkit.voila_launch import DASHBOARDS, HOST, dashboard_url, free_port, server_url, voila_command, wait_until_up

pytestmark = pytest.mark.core


def test_command_uses_only_the_dashboards_config() -> None:
    cmd = voila_command(8899, DASHBOARDS)
    assert cmd[:3] == [sys.executable, "-m", "voila"]
    assert str(DASHBOARDS) in cmd and "--port=8899" in cmd and "--no-browser" in cmd
    assert f"--Voila.config_file_paths={DASHBOARDS}" in cmd
    assert dashboard_url(8899) == f"http://{HOST}:8899/voila/render/addresses.ipynb"
    assert server_url(8899) == f"http://{HOST}:8899/"


def test_a_folder_without_voila_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"voila\.json"):
        voila_command(8899, tmp_path)


def test_production_config() -> None:
    config = json.loads((DASHBOARDS / "voila.json").read_text(encoding="utf-8"))
    assert config["Voila"]["ip"] == "127.0.0.1"
    voila = config["VoilaConfiguration"]
    assert voila["strip_sources"] is True and voila["show_tracebacks"] is False
    assert not (voila.get("preheat_kernel") and voila.get("progressive_rendering")), "Voila refuses both"
    culling = config["MappingKernelManager"]
    # Voila leaks a kernel per page view (voila#1458): idle ones must be culled.
    assert culling["cull_idle_timeout"] > 0 and culling["cull_interval"] > 0
    assert culling["cull_connected"] is False  # an open page keeps its kernel


def test_wait_until_up_reports_a_dead_server_and_a_timeout() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait(timeout=30)
    url = server_url(free_port())
    with pytest.raises(RuntimeError, match="exited with code 3"):
        wait_until_up(url, timeout=5, proc=dead)
    with pytest.raises(TimeoutError):
        wait_until_up(url, timeout=0.3)
