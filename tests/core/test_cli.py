"""The ``crmkit`` command line, run as a real process."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import crmkit

PYTHON = sys.executable


def crmkit_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    return subprocess.run(
        [PYTHON, "-m", "crmkit.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**clean, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crmkit: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.core
@pytest.mark.parametrize("command", [[], ["init"], ["demo-data"], ["sandbox"], ["demo"], ["worker"]])
def test_help_everywhere(command: list[str]) -> None:
    result = crmkit_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    expected = f"crmkit {command[0]}" if command else "demo-data"
    assert expected in result.stdout


@pytest.mark.core
def test_console_script_is_installed() -> None:
    script = Path(PYTHON).parent / "crmkit"
    if not script.exists():
        pytest.skip("no console script next to this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "demo-data" in result.stdout


@pytest.mark.core
def test_init_creates_then_reports_up_to_date(db_path: Path) -> None:
    first = crmkit_cli("--db", str(db_path), "init")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"Created {db_path}") and "migration(s) 1" in first.stdout
    again = crmkit_cli("--db", str(db_path), "init")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert crmkit.open(db_path).users()["name"].tolist() == ["admin"]


@pytest.mark.core
def test_init_suggests_demo_data_only_for_a_crm_without_addresses(db_path: Path) -> None:
    empty = crmkit_cli("--db", str(db_path), "init")
    assert "0 address(es). Next: crmkit --db" in empty.stdout and "demo-data --addresses 1000" in empty.stdout
    assert crmkit_cli("--db", str(db_path), "demo-data", "--addresses", "20").returncode == 0
    again = crmkit_cli("--db", str(db_path), "init")
    assert again.returncode == 0 and "20 address(es)." in again.stdout
    assert "demo-data" not in again.stdout  # it would add 1,000 more to a CRM in use


@pytest.mark.core
def test_init_honours_crmkit_db(tmp_path: Path) -> None:
    path = tmp_path / "from-env.duckdb"
    result = crmkit_cli("init", env={"CRMKIT_DB": str(path)})
    assert result.returncode == 0, result.stderr
    assert path.exists()


@pytest.mark.core
def test_demo_data_fills_the_file_and_shows_progress(db_location: str) -> None:
    result = crmkit_cli("--db", db_location, "demo-data", "--addresses", "200", "--seed", "4")
    assert result.returncode == 0, result.stderr
    assert "Added 200 addresses" in result.stdout and "contacts" in result.stdout
    assert "Done in" in result.stdout and "anna" in result.stdout
    assert "100%" in result.stderr and "200/200" in result.stderr
    crm = crmkit.open(db_location)
    assert crm.count_addresses() == 200
    assert {"anna", "tom", "petra", "kai", "vera"} <= set(crm.users()["name"])


@pytest.mark.core
@pytest.mark.parametrize("args, exit_code", [
    (["demo-data"], 2),                                 # --addresses missing
    (["demo-data", "--addresses", "many"], 2),
    (["demo-data", "--addresses", "-3"], 2),
    (["nope"], 2),
    (["init", "--extra"], 2),
])
def test_bad_arguments_exit_2_with_usage(args: list[str], exit_code: int, tmp_path: Path) -> None:
    result = crmkit_cli("--db", str(tmp_path / "x.duckdb"), *args)
    assert result.returncode == exit_code
    assert "usage:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.core
def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    result = crmkit_cli("--db", str(tmp_path / "missing" / "crm.duckdb"), "init")
    assert_one_line_error(result, "does not exist")


@pytest.mark.core
def test_corrupt_file_is_a_one_line_error_and_left_alone(db_path: Path) -> None:
    junk = b"not a database at all\n" * 100
    db_path.write_bytes(junk)
    for args in (["init"], ["demo-data", "--addresses", "10"]):
        assert_one_line_error(crmkit_cli("--db", str(db_path), *args), "crmkit init")
    assert db_path.read_bytes() == junk


@pytest.mark.core
def test_unknown_user_and_missing_right_are_one_line_errors(db_location: str) -> None:
    crmkit.open(db_location).add_user("vera", "Vera Engel", roles=["viewer"])
    unknown = crmkit_cli("--db", db_location, "--user", "zed", "demo-data", "--addresses", "10")
    assert_one_line_error(unknown, "No active CRM user 'zed'")
    viewer = crmkit_cli("--db", db_location, "demo-data", "--addresses", "10", env={"CRMKIT_USER": "vera"})
    assert_one_line_error(viewer, "system.admin")
    assert crmkit.open(db_location).count_addresses() == 0


@pytest.mark.slow
def test_demo_starts_everything_prints_urls_and_stops_cleanly(tmp_path: Path) -> None:
    """`crmkit demo` on free ports: demo data, sandbox, Voila; the printed URLs answer; SIGTERM stops all."""
    from crmkit.voila_launch import free_port

    sandbox_port, voila_port, https_port = free_port(), free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    proc = subprocess.Popen(
        [PYTHON, "-m", "crmkit.cli", "--db", str(tmp_path / "crm.duckdb"), "demo", "--addresses", "200",
         "--sandbox-port", str(sandbox_port), "--voila-port", str(voila_port), "--sandbox-https-port", str(https_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean, cwd=tmp_path,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("Press Ctrl+C"):
                break
        text = "\n".join(lines)
        assert "200 addresses" in text and "Teams integration switched on" in text, text
        urls = [w for line in lines for w in line.split() if w.startswith("http://127.0.0.1:")]
        assert f"http://127.0.0.1:{voila_port}/voila/render/addresses.ipynb" in urls, text
        assert f"http://127.0.0.1:{sandbox_port}/teams" in urls, text
        assert httpx.get(f"http://127.0.0.1:{sandbox_port}/teams", timeout=30).status_code == 200
        # the sandbox's https authority for other clients, and the CA file to trust for it (in the demo's state)
        from crmkit.sandbox import SANDBOX_TENANT_ID

        authority, ca = f"https://127.0.0.1:{https_port}/{SANDBOX_TENANT_ID}", tmp_path / ".crmkit/sandbox/tls/ca.pem"
        assert authority in text.split() and str(ca) in text.split(), text
        discovery = httpx.get(f"{authority}/v2.0/.well-known/openid-configuration", timeout=30,
                              verify=ssl.create_default_context(cafile=str(ca)))
        assert discovery.json()["issuer"].startswith(authority), discovery.text
        page = httpx.get(f"http://127.0.0.1:{voila_port}/voila/render/addresses.ipynb", timeout=120)
        assert page.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "crmkit demo stopped." in out
    for port in (sandbox_port, voila_port):
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
