"""The compose dialog's model lives in its own plain-Python module (as the record table's does): it
imports no widget, and the dialog module runs no threads and holds no state machine, it only binds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crmkit

pytestmark = pytest.mark.widgets

WIDGETS = Path(crmkit.__file__).parent / "widgets"


def _imports(path: Path) -> set[str]:
    """Top-level names of what a module imports (relative imports as ``.name``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {"." * n.level + (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    return names


def test_the_compose_model_imports_no_widget() -> None:
    # (crmkit.widgets/__init__ loads the views, so the check is on the module's own imports.)
    names = _imports(WIDGETS / "compose_model.py")
    assert "ipywidgets" not in names and not {n for n in names if n.startswith(".") and not n.startswith("..")}
    assert {"threading", "traitlets"} <= names  # the state machine and the threads are here


def test_the_dialog_module_only_binds() -> None:
    assert not _imports(WIDGETS / "compose.py") & {"threading", "traitlets", "concurrent", "asyncio"}
    tree = ast.parse((WIDGETS / "compose.py").read_text(encoding="utf-8"))
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert classes == {"ComposeDialog"}
    from crmkit.widgets import compose, compose_model
    assert compose.ComposeModel is compose_model.ComposeModel  # the old import path still works
