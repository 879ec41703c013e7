"""Every notebook and dashboard runs top to bottom, and every one is committed clean.

Run alone with ``pytest -m notebooks``. A notebook declares what it needs in its metadata, e.g.
``"crmkit": {"requires": ["sandbox"], "user": "anna"}``; this tier provides a demo database (the demo's
users and roles, the Teams integration on, and a personal-data policy that asks for a purpose), and for
``sandbox`` a running sandbox tenant with the notebook's user signed in to Teams. Anything else makes
the notebook skip with the reason.

Each notebook under ``notebooks/`` says in its first markdown cell whom it is for, names that demo user
(``metadata.crmkit.user``), and runs here as that user; dashboards run as ``admin`` unless they say otherwise.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import SandboxProc, sign_in_then_forget

import crmkit
from crmkit import privacy
from crmkit.demo import prepare_database
from crmkit.demo_data import DEMO_USERS
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted([*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("dashboards/*.ipynb")])
IDS = [p.relative_to(ROOT).as_posix() for p in NOTEBOOKS]
# What this tier can provide; anything else a notebook requires makes it skip.
PROVIDED: set[str] = {"database", "sandbox"}
WHY_MISSING: dict[str, str] = {}
# What must never be left in a notebook's outputs: a token (JWTs start with eyJ), a password.
SECRET_MARKERS = ("access_token", "refresh_token", "eyJ", SANDBOX_PASSWORD)


def test_there_are_notebooks() -> None:
    assert "dashboards/addresses.ipynb" in IDS


def stated_user(nb: Any) -> str:
    """Whom a notebook runs as: ``metadata.crmkit.user``; dashboards default to ``admin``."""
    return str(nb.metadata.get("crmkit", {}).get("user", "admin"))


ANALYST_NOTEBOOKS = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]


@pytest.mark.parametrize("path", ANALYST_NOTEBOOKS, ids=[p.name for p in ANALYST_NOTEBOOKS])
def test_says_whom_it_is_for(path: Path) -> None:
    """The first markdown cell names the demo user (and role) the notebook is written for, as metadata says."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    user = nb.metadata.get("crmkit", {}).get("user")
    roles = {name: role for name, _, role in DEMO_USERS}
    assert user in roles, f"{path.name}: metadata.crmkit.user must name a demo user ({sorted(roles)}), not {user!r}"
    first = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert re.search(r"\*\*For:\*\*", first) and f"`{user}`" in first and f"`{roles[user]}`" in first, first


@pytest.fixture(scope="module")
def notebook_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's database (same code as ``crmkit demo``: demo users, Teams on), fewer addresses, and a
    personal-data policy that asks for a purpose: what the notebooks must cope with."""
    path = tmp_path_factory.mktemp("notebooks") / "crm.duckdb"
    prepare_database(str(path), 200, io.StringIO())
    crm = crmkit.open(path, "admin")
    privacy.set_policy(crm, "teams_manual", "log_purpose")
    crm.store.close()
    return path


@dataclass(frozen=True)
class NotebookSandbox:
    url: str
    home: Path


@pytest.fixture(scope="module")
def notebook_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CRMKIT_HOME for the kernels: token caches stay out of the developer's ~/.crmkit."""
    return tmp_path_factory.mktemp("notebooks-home")


@pytest.fixture(scope="module")
def notebook_sandbox(notebook_db: Path, notebook_home: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotebookSandbox]:
    """A sandbox tenant (the integration is on in the database); users sign in with :func:`signed_in`."""
    base = tmp_path_factory.mktemp("notebooks-sandbox")
    proc = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"])
    try:
        yield NotebookSandbox(proc.url, notebook_home)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def signed_in(notebook_sandbox: NotebookSandbox, notebook_db: Path) -> Callable[[str], None]:
    """Sign a CRM user in to Teams (the sandbox's device-code page, as a browser posts it), once per user."""
    done: set[str] = set()

    def sign(user: str) -> None:
        if user in done:
            return
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CRMKIT_SANDBOX_URL", notebook_sandbox.url)
            mp.setenv("CRMKIT_HOME", str(notebook_sandbox.home))
            sign_in_then_forget(crmkit.open(notebook_db, user), SANDBOX_DEFAULT_UPN)
        done.add(user)

    return sign


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_runs_top_to_bottom(path: Path, notebook_db: Path, notebook_home: Path, request: pytest.FixtureRequest,
                            monkeypatch: pytest.MonkeyPatch, output_dir: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    needs = set(nb.metadata.get("crmkit", {}).get("requires", []))
    missing = sorted(needs - PROVIDED)
    if missing:
        pytest.skip("; ".join(f"{need}: {WHY_MISSING.get(need, 'not provided by this tier')}" for need in missing))
    user = stated_user(nb)
    # the kernel inherits this process's environment
    if "sandbox" in needs:
        sandbox: NotebookSandbox = request.getfixturevalue("notebook_sandbox")
        request.getfixturevalue("signed_in")(user)
        monkeypatch.setenv("CRMKIT_SANDBOX_URL", sandbox.url)
    monkeypatch.setenv("CRMKIT_DB", str(notebook_db))
    monkeypatch.setenv("CRMKIT_HOME", str(notebook_home))
    monkeypatch.setenv("CRMKIT_USER", user)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    # kept with its outputs for a look after the run, and for the last tier's secret scan (tests/secret_scan)
    executed = output_dir / "notebooks" / f"{path.parent.name}-{path.name}"
    executed.parent.mkdir(exist_ok=True)
    nbformat.write(nb, executed)

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    shown = json.dumps(outputs, ensure_ascii=False)
    assert [m for m in SECRET_MARKERS if m in shown] == [], "a secret was left in the notebook's outputs"
    if path.parent.name == "dashboards":
        # a dashboard shows a widget, not an error box
        views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert views, f"{path.name} displayed no widget"
        assert not any("crmkit-open-error" in json.dumps(o.get("data", {})) for o in outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_clean(path: Path) -> None:
    """No outputs, execution counts or saved widget state: diffs stay readable, no data leaks into git."""
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        (i, what)
        for i, cell in enumerate(raw["cells"]) if cell["cell_type"] == "code"
        for what, bad in (("outputs", bool(cell.get("outputs"))), ("execution_count", cell.get("execution_count")
                                                                   is not None))
        if bad
    ]
    assert dirty == [], f"{path.name}: clear outputs before committing ({dirty})"
    assert "widgets" not in raw.get("metadata", {}), f"{path.name}: saved widget state in metadata.widgets"
    assert raw.get("nbformat") == 4
    import nbformat

    nbformat.validate(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4))
