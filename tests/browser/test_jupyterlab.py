"""JupyterLab as ``crmkit demo`` serves it: the real ``crmkit demo`` command (small database, free ports),
its printed notebooks URL opened in Chromium, a notebook run top to bottom there, the record table
rendered by the widgets; then Ctrl+C, as a terminal sends it, stops every process the demo started.

The token is in the demo's terminal output only; the test keeps it in memory and checks that no log or
file of the demo holds it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from support.sandbox import PYTHON

from crmkit.voila_launch import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
# The notebook shown. Other open notebooks stay in the page, hidden by CSS that Playwright may still call
# visible; Lumino marks them lm-mod-hidden.
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    folder: Path
    lines: list[str]
    urls: dict[str, str] = field(default_factory=dict)
    started: list[psutil.Process] = field(default_factory=list)

    @property
    def token(self) -> str:
        return re.search(r"[?&]token=([^&\s]+)", self.urls["notebooks"]).group(1)  # type: ignore[union-attr]


def _read(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    folder = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    env["CRMKIT_HOME"] = str(folder / "home")
    # JupyterLab's workspaces and user settings (open tabs, layout) go to the test's folder, not ~/.jupyter
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(folder / "lab-workspaces")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(folder / "lab-settings")
    argv = [PYTHON, "-m", "crmkit.cli", "--db", str(folder / "crm.duckdb"), "demo", "--addresses", "120",
            "--sandbox-port", str(free_port()), "--voila-port", str(free_port()), "--lab-port", str(free_port())]
    # its own process group, as a shell runs a foreground job: Ctrl+C goes to the whole group
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=_read, args=(proc, lines), daemon=True).start()
    # JupyterLab serves the repository's notebooks/; should it autosave one with outputs, put it back
    committed = {p: p.read_bytes() for p in (ROOT / "notebooks").glob("*.ipynb")}
    d = Demo(proc, folder, lines)
    try:
        deadline = time.monotonic() + 300
        while not any("Press Ctrl+C" in line for line in lines):
            assert proc.poll() is None, "crmkit demo exited:\n" + "\n".join(lines)
            assert time.monotonic() < deadline, "crmkit demo did not come up:\n" + "\n".join(lines)
            time.sleep(0.2)
        for line in lines:
            m = re.match(r"\s+(\w+)\s+(http://\S+)", line)
            if m:
                d.urls[m.group(1)] = m.group(2)
        d.started = psutil.Process(proc.pid).children(recursive=True)
        yield d
    finally:  # a test failed before Ctrl+C: leave nothing running
        rest = list(d.started)
        if proc.poll() is None:
            rest += psutil.Process(proc.pid).children(recursive=True)
            proc.kill()
        for p in rest:
            try:
                p.kill()
            except psutil.Error:
                pass
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
        for path, content in committed.items():
            if path.read_bytes() != content:
                path.write_bytes(content)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_demo_prints_dashboards_jupyterlab_and_sandbox(demo: Demo) -> None:
    assert {"addresses", "settings", "campaigns", "notebooks", "teams"} <= set(demo.urls), demo.lines
    lab = demo.urls["notebooks"]
    assert lab.startswith("http://127.0.0.1:") and "/lab/tree/notebooks?token=" in lab
    assert len(demo.token) >= 32
    names = {" ".join(_cmdline(p)) for p in demo.started}
    assert any("crmkit.lab" in n for n in names), names  # JupyterLab started through crmkit.lab


def test_jupyterlab_needs_the_token(demo: Demo) -> None:
    import httpx

    base = demo.urls["notebooks"].split("/lab/")[0]
    assert httpx.get(f"{base}/api/contents/notebooks").status_code == 403
    listed = httpx.get(f"{base}/api/contents/notebooks", params={"token": demo.token})
    assert listed.status_code == 200
    assert {"filter-addresses.ipynb", "send_filtered_records.ipynb"} <= {c["name"] for c in listed.json()["content"]}


def test_notebook_runs_in_jupyterlab_and_shows_the_record_table(demo: Demo, page: object,
                                                                output_dir: Path) -> None:
    from playwright.sync_api import expect

    _run_all(page, "filter-addresses.ipynb", demo.urls["notebooks"])
    rows = page.locator(f"{PANEL} .jp-OutputArea .crmkit-row")  # type: ignore[attr-defined]
    expect(rows.first).to_be_attached(timeout=90_000)
    # JupyterLab skips rendering cells out of view (content-visibility): scroll the table into view
    rows.first.scroll_into_view_if_needed()
    expect(rows.first).to_be_visible()
    assert rows.count() >= 5
    assert "DE" in " ".join(page.locator(f"{PANEL} .jp-OutputArea .crmkit-row [data-col]").all_inner_texts())  # type: ignore[attr-defined]
    # no prompt offering news from the internet (crmkit.lab disables it)
    assert page.get_by_text("Jupyter news").count() == 0  # type: ignore[attr-defined]
    errors = page.locator(f"{PANEL} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")  # type: ignore[attr-defined]
    assert not [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    page.screenshot(path=str(output_dir / "jupyterlab-filter-addresses.png"))  # type: ignore[attr-defined]


def _run_all(page: object, notebook: str, url: str) -> None:
    from playwright.sync_api import expect

    # ?reset: a fresh workspace, so only this notebook is open (not the tabs an earlier visit left)
    page.goto(url.replace("/lab/tree/notebooks?", f"/lab/tree/notebooks/{notebook}?reset&"))  # type: ignore[attr-defined]
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)  # type: ignore[attr-defined]
    # the kernel is up before running: the status bar says "Python 3 (ipykernel) | Idle"
    expect(page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"ipykernel\) \| Idle"))  # type: ignore[attr-defined]
           ).to_be_visible(timeout=90_000)
    # focus this notebook (a second notebook opens while the first one's tab may still be the current widget)
    page.locator(f"{PANEL} .jp-Cell").first.click()  # type: ignore[attr-defined]
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()  # type: ignore[attr-defined]
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()  # type: ignore[attr-defined]
    # it runs: the first code cell's prompt shows [*] or its execution count
    first_prompt = page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").first  # type: ignore[attr-defined]
    expect(first_prompt).to_have_text(re.compile(r"\[(\*|\d+)\]"), timeout=30_000)


def test_send_notebook_runs_in_jupyterlab_as_anna(demo: Demo, page: object, output_dir: Path) -> None:
    """send_filtered_records, for the sales user anna, in the demo's JupyterLab: its sign-in cell prints the
    sandbox's device-code link and code, which are entered on the sandbox's page as a person would; then the
    records go out and the result table says sent."""
    from playwright.sync_api import expect
    from support.sandbox import Browser

    from crmkit.sandbox import SANDBOX_DEFAULT_UPN

    _run_all(page, "send_filtered_records.ipynb", demo.urls["notebooks"])
    prompt = page.locator(f"{PANEL} .jp-OutputArea-output", has_text="devicelogin")  # type: ignore[attr-defined]
    try:
        expect(prompt.first).to_be_attached(timeout=60_000)
    except AssertionError:
        page.screenshot(path=str(output_dir / "jupyterlab-send-no-sign-in.png"))  # type: ignore[attr-defined]
        raise AssertionError(page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts()[-6:]) from None  # type: ignore[attr-defined]
    text = prompt.first.inner_text()
    link = re.search(r"(http://127\.0\.0\.1:\d+/\S*devicelogin)", text)
    code = re.search(r"\bcode (\w+)", text, flags=re.I)  # "enter the code X" / "geben Sie den Code X"
    assert link and code, text
    browser = Browser()
    try:
        answer = browser.device_login(link.group(1), code.group(1), SANDBOX_DEFAULT_UPN)
        assert answer.status_code == 200
    finally:
        browser.close()
    # the last cell (contacts of the first address, type TS) only runs after the send went out
    done = page.locator(f"{PANEL} .jp-OutputArea-output", has_text=re.compile(r"\bTS\b"))  # type: ignore[attr-defined]
    expect(done.first).to_be_attached(timeout=120_000)
    outputs = " ".join(page.locator(f"{PANEL} .jp-OutputArea-output").all_inner_texts())  # type: ignore[attr-defined]
    assert "Traceback" not in outputs and "sent" in outputs, outputs[-2000:]
    page.screenshot(path=str(output_dir / "jupyterlab-send-filtered-records.png"))  # type: ignore[attr-defined]


def test_no_log_or_file_of_the_demo_holds_the_token(demo: Demo) -> None:
    token = demo.token.encode()
    holding = [p for p in demo.folder.rglob("*") if p.is_file() and token in p.read_bytes()]
    assert holding == []
    runtime = Path(subprocess.run([PYTHON, "-m", "jupyter", "--runtime-dir"], capture_output=True, text=True,
                                  check=True).stdout.strip())
    assert [p for p in runtime.glob("*") if p.is_file() and token in p.read_bytes()] == []
    for p in demo.started:  # no process got the token on its command line (ps shows it to every user)
        assert demo.token not in " ".join(_cmdline(p))


def test_ctrl_c_stops_every_process_of_the_demo(demo: Demo) -> None:
    """Last: a terminal's Ctrl+C (SIGINT to the foreground process group) ends the demo and all it started,
    including JupyterLab (its own session, stopped by the demo) and its kernels."""
    started = psutil.Process(demo.proc.pid).children(recursive=True)
    demo.started = started
    # the notebook's kernel (JupyterLab's child) is among them, as are Voila, the worker and the sandbox
    assert any("ipykernel" in " ".join(_cmdline(p)) and "crmkit.lab" in " ".join(_cmdline(p.parent()))
               for p in started if p.parent() is not None), [" ".join(_cmdline(p)) for p in started]
    os.killpg(demo.proc.pid, signal.SIGINT)
    assert demo.proc.wait(timeout=90) == 0, "\n".join(demo.lines)
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == [], [" ".join(_cmdline(p)) for p in alive]
    assert "crmkit demo stopped." in demo.lines
