"""Every notebook and dashboard runs top to bottom, and every one is committed clean.

Run alone with ``pytest -m notebooks``. A notebook declares what it needs in its metadata, e.g.
``"crmkit": {"requires": ["sandbox"]}``; this tier provides a database, and for ``sandbox`` a running
sandbox tenant with the admin user signed in to Teams and the integration on. Anything else makes
the notebook skip with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import SandboxProc, sign_in

import crmkit
from crmkit.auth import _cache, _msal
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from crmkit.teams import activation

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


@pytest.fixture(scope="module")
def notebook_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("notebooks") / "crm.duckdb"
    crm = crmkit.open(path)
    for i, city in enumerate(["Berlin", "Hamburg", "Berlin", "München", "Köln"] * 4):
        crm.add_address(company=f"Firma {i}", last_name=f"Name {i}", city=city, country="DE" if i % 4 else "AT",
                        postal_code=f"{10000 + i}", email=f"n{i}@example.test")
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
    """A sandbox tenant; the admin CRM user signed in to Teams (device code) and the integration on."""
    base = tmp_path_factory.mktemp("notebooks-sandbox")
    proc = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"])
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CRMKIT_SANDBOX_URL", proc.url)
            mp.setenv("CRMKIT_HOME", str(notebook_home))
            crm = crmkit.open(notebook_db)
            try:
                activation.enable(crm)
                sign_in(crm, SANDBOX_DEFAULT_UPN)
            finally:
                crm.teams.close()
                crm.store.close()
                _cache.forget_caches()
                _msal._apps.clear()
        yield NotebookSandbox(proc.url, notebook_home)
    finally:
        proc.stop()


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
    # the kernel inherits this process's environment
    if "sandbox" in needs:
        sandbox: NotebookSandbox = request.getfixturevalue("notebook_sandbox")
        monkeypatch.setenv("CRMKIT_SANDBOX_URL", sandbox.url)
    monkeypatch.setenv("CRMKIT_DB", str(notebook_db))
    monkeypatch.setenv("CRMKIT_HOME", str(notebook_home))
    monkeypatch.setenv("CRMKIT_USER", "admin")
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
