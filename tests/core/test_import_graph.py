"""crmkit's modules depend one way (issue 14 item 2).

The graph is built from the source (AST), not from ``sys.modules``: every ``import`` at module level
and inside functions counts, because an import inside a function only postpones a cycle, it does not
remove it. Imports under ``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crmkit

pytestmark = pytest.mark.core

ROOT = Path(crmkit.__file__).parent

# The composition points, which may import crmkit.crm at run time: the package (re-exports open, CRM,
# User on first use), crm.py itself (composes the services on crmkit.session.Session), cli.py and
# demo.py (open sessions for commands), and the views under widgets/ (handed a session to draw; today
# none imports crm at run time). Services take the narrow crmkit.session.Session instead.
COMPOSERS = ("crmkit", "crmkit.crm", "crmkit.cli", "crmkit.demo")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """Every crmkit module ``module`` imports at run time (anywhere in the file)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            # `from .pkg import mod` imports pkg (its __init__ runs) and pkg.mod; `from . import mod`
            # inside pkg only names the submodule (pkg is already being imported as its parent).
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names) or not (module + ".").startswith(target + "."):
                found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # Importing a.b.c runs a/b/__init__.py first; a module's own ancestors are already being imported.
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 2)}
    for target in list(found):
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return found - own


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", set(files))
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return sorted(found)


def test_graph_sees_function_level_and_relative_imports() -> None:
    graph = _graph()
    assert "crmkit.store" in graph["crmkit.crm"]  # module level, relative
    assert "crmkit.teams.sessions" in graph["crmkit.crm"]  # inside CRM.__init__
    assert "crmkit.teams" in graph["crmkit.crm"]  # the package whose submodule it imports


def test_no_import_cycle_inside_crmkit() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    for cycle in cycles:
        print("import cycle:", " <-> ".join(cycle))
    assert not cycles, f"{len(cycles)} import cycle(s) in crmkit/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_only_composition_points_import_crm() -> None:
    graph = _graph()
    importers = sorted(m for m, targets in graph.items() if "crmkit.crm" in targets
                       and m not in COMPOSERS and not m.startswith("crmkit.widgets"))
    assert not importers, f"services import crmkit.crm at run time: {importers}"


def test_services_use_only_the_public_parts_of_session_and_store() -> None:
    """No module reaches into another object's private parts of the session or the store
    (``crm._audit``, ``crm._set_setting``, ``store._mutex``, ...); only the owner uses them on ``self``."""
    private = {"_audit", "_set_setting", "_add_contact", "_mutex", "_teams", "_campaigns", "_load_user"}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id == "self")):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} .{node.attr}")
    assert not found, "private session/store parts used from outside: " + ", ".join(found)
