"""The README's Python runs as written, as the user it says it runs as, against a demo database and the sandbox.

The README's ```python blocks are run in order, in one fresh Python process, in a folder holding the
``crm.duckdb`` that ``crmkit demo`` makes (same code path, fewer addresses), with the sandbox tenant as
a real subprocess. The user is the one the code opens (``crmkit.open(user=...)``, else ``admin``); that
user is signed in to Teams first, through the sandbox's device-code page, as the quick start tells a
reader to do in a dashboard.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.readme import OTHER_TOOLS, blocks, crmkit_python_blocks, sections
from support.sandbox import PYTHON, SandboxAdmin, SandboxProc, sign_in_then_forget

import crmkit
from crmkit.demo import prepare_database
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_TENANT_ID

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    # not the "Use the sandbox from other tools" blocks: tests/sandbox/test_readme_other_tools.py runs those
    return crmkit_python_blocks(text)


def stated_user(code: str) -> str:
    """The CRM user the README's code opens: ``crmkit.open(..., user="NAME")``, else the default ``admin``."""
    found = re.findall(r"crmkit\.open\([^)]*user=\"(\w+)\"", code)
    assert len(set(found)) <= 1, f"the README opens the CRM as several users: {found}"
    return found[0] if found else "admin"


@dataclass(frozen=True)
class ReadmeSetup:
    folder: Path
    env: dict[str, str]
    sandbox: SandboxAdmin
    user: str


@pytest.fixture(scope="module")
def readme_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadmeSetup]:
    code = "\n".join(python_blocks(README.read_text(encoding="utf-8")))
    user = stated_user(code)
    base = tmp_path_factory.mktemp("readme")
    folder, home = base / "work", base / "home"
    folder.mkdir()
    proc = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"])
    admin = SandboxAdmin(proc.url)
    env = {"CRMKIT_SANDBOX_URL": proc.url, "CRMKIT_HOME": str(home)}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            # the demo's database: demo users (anna, ben, tom, petra, kai, vera), Teams switched on
            prepare_database(str(folder / "crm.duckdb"), 200, io.StringIO())
            sign_in_then_forget(crmkit.open(folder / "crm.duckdb", user), SANDBOX_DEFAULT_UPN)
        yield ReadmeSetup(folder, env, admin, user)
    finally:
        admin.close()
        proc.stop()


def _run(setup: ReadmeSetup, code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")} | setup.env
    return subprocess.run([PYTHON, "-c", code], cwd=setup.folder, env=env, capture_output=True, text=True,
                          timeout=180, check=False)


def test_readme_has_python_blocks() -> None:
    text = README.read_text(encoding="utf-8")
    assert python_blocks(text)
    # every ```python block is run by this test or by the other-tools one, none by both
    theirs = blocks(sections(text)[OTHER_TOOLS], "python")
    assert theirs and not set(theirs) & set(python_blocks(text))
    assert len(python_blocks(text)) + len(theirs) == len(blocks(text, "python"))


def test_readme_names_the_user_its_code_runs_as(readme_setup: ReadmeSetup) -> None:
    text = README.read_text(encoding="utf-8")
    assert f"`{readme_setup.user}`" in text and SANDBOX_DEFAULT_UPN in text


def test_python_blocks_run_as_written(readme_setup: ReadmeSetup) -> None:
    code = "\n".join(python_blocks(README.read_text(encoding="utf-8")))
    first = _run(readme_setup, code)
    assert first.returncode == 0, f"the README's Python failed as {readme_setup.user}:\n{first.stderr[-3000:]}"
    delivered = readme_setup.sandbox.get("messages")["value"]
    assert delivered, "the README's send delivered nothing"
    # the comment says so: running it again sends nothing again (idempotency key)
    again = _run(readme_setup, code)
    assert again.returncode == 0, again.stderr[-3000:]
    assert readme_setup.sandbox.get("messages")["count"] == len(delivered)


def test_quick_start_says_what_make_demo_starts() -> None:
    """The quick start's `make demo` lines name what crmkit demo starts, JupyterLab included, and the
    URLs it prints."""
    from crmkit.demo import DASHBOARDS

    text = README.read_text(encoding="utf-8")
    quick = text[text.index("## Quick start"):text.index("## What is where")]
    make_demo = quick[quick.index("make demo"):quick.index("make test")]
    for part in ("sandbox", "Voila dashboards", "campaign worker", "JupyterLab"):
        assert part in make_demo, part
    shown = [name.removesuffix(".ipynb") for name in DASHBOARDS if (ROOT / "dashboards" / name).exists()]
    for label in [*shown, "notebooks", "teams"]:
        assert re.search(rf"^  {label} +http://127\.0\.0\.1:", quick, flags=re.M), label
    assert "?user=" in quick and "Sandbox-Pass-1" in quick
    # the sandbox's https listener for other tools (crmkit demo prints these two; tests/core/test_cli.py)
    assert re.search(rf"^  authority +https://127\.0\.0\.1:8766/{SANDBOX_TENANT_ID} ", quick, flags=re.M)
    assert re.search(r"^  CA file +\S+/\.crmkit/sandbox/tls/ca\.pem ", quick, flags=re.M)
