"""The Voila launcher and the committed config, checked without starting a server (core tier)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from crmkit.voila_launch import (
    DASHBOARDS,
    HOST,
    dashboard_url,
    free_port,
    idle_kernel_count,
    server_url,
    voila_command,
    wait_until_up,
)

pytestmark = pytest.mark.core


def test_command_uses_only_the_dashboards_config() -> None:
    cmd = voila_command(8899, DASHBOARDS)
    assert cmd[:3] == [sys.executable, "-m", "crmkit.voila_app"]  # Voila with the dashboards' handler
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
    assert voila["multi_kernel_manager_class"] == "crmkit.voila_app.PageKernelManager"
    pages = config["PageKernelManager"]
    assert 0 < pages["page_gone_after"] <= 10 and pages["max_kernels"] > idle_kernel_count(DASHBOARDS)
    culling = config["MappingKernelManager"]
    # Kernels no page ever connected to (a GET without a browser) are culled when idle.
    assert culling["cull_idle_timeout"] > 0 and culling["cull_interval"] > 0
    assert culling["cull_connected"] is False  # an open page keeps its kernel


def test_idle_kernel_count_follows_the_pool_config(tmp_path: Path) -> None:
    for name in ("a.ipynb", "b.ipynb", "c.ipynb"):
        (tmp_path / name).write_text("{}", encoding="utf-8")
    config = {"VoilaConfiguration": {"preheat_kernel": True, "default_pool_size": 1}}
    (tmp_path / "voila.json").write_text(json.dumps(config), encoding="utf-8")
    assert idle_kernel_count(tmp_path) == 3
    config["VoilaKernelManager"] = {"kernel_pools_config": {"default": {"pool_size": 1}, "a.ipynb": {"pool_size": 3}}}
    (tmp_path / "voila.json").write_text(json.dumps(config), encoding="utf-8")
    assert idle_kernel_count(tmp_path) == 5
    config["VoilaConfiguration"]["preheat_kernel"] = False
    (tmp_path / "voila.json").write_text(json.dumps(config), encoding="utf-8")
    assert idle_kernel_count(tmp_path) == 0


def test_wait_until_up_reports_a_dead_server_and_a_timeout() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait(timeout=30)
    url = server_url(free_port())
    with pytest.raises(RuntimeError, match="exited with code 3"):
        wait_until_up(url, timeout=5, proc=dead)
    with pytest.raises(TimeoutError):
        wait_until_up(url, timeout=0.3)
