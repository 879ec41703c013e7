"""One error tree: every CrmkitError subclass under crmkit/ is drawn in crmkit/errors.py's docstring, under
its real parent, and no two share a name (the tree names classes by name alone).

The sandbox (crmkit.sandbox) is the server, not crmkit's client. Its own errors are the server's answers
(plain Exceptions, outside the tree), and none of its classes may share a name with an exception class of
crmkit's client: a traceback or an ``except GraphError`` must never leave a reader guessing which side
raised it. A CrmkitError the sandbox raises to its users (a port in use) is drawn in the tree like any other.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import crmkit
from crmkit import errors
from crmkit.errors import CrmkitError

pytestmark = pytest.mark.core

SERVER = "crmkit.sandbox"
BRANCH = re.compile(r"^((?:│   |    )*)(?:├── |└── )(\w+)")


def drawn_tree() -> dict[str, str | None]:
    """``{class name: parent name}`` as drawn in errors.py's docstring (the root's parent is None)."""
    lines = (errors.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "CrmkitError")
    indent = lines[start].index("CrmkitError")
    tree: dict[str, str | None] = {"CrmkitError": None}
    path = ["CrmkitError"]  # the open branch: path[d] is the last class drawn at depth d
    for line in lines[start + 1:]:
        if not line.strip():
            break
        m = BRANCH.match(line[indent:])
        assert m, f"not a branch of the tree: {line!r}"
        depth, name = len(m.group(1)) // 4 + 1, m.group(2)
        assert name not in tree, f"{name} is drawn twice"
        assert depth <= len(path), f"{name} is drawn deeper than any parent: {line!r}"
        del path[depth:]
        tree[name] = path[-1]
        path.append(name)
    return tree


def import_every_module() -> None:
    """Import every module of crmkit, the sandbox's too, so every class they define exists."""
    for info in pkgutil.walk_packages(crmkit.__path__, "crmkit."):
        importlib.import_module(info.name)


def in_sandbox(module: str) -> bool:
    return module == SERVER or module.startswith(SERVER + ".")


def subclasses(root: type[BaseException]) -> set[type[BaseException]]:
    """``root`` and every class derived from it (loaded so far) that is defined in crmkit."""
    found: set[type[BaseException]] = set()
    todo = [root]
    while todo:
        cls = todo.pop()
        if cls.__module__.split(".")[0] == "crmkit":
            found.add(cls)
        todo.extend(c for c in cls.__subclasses__() if c not in found)
    return found


def crmkit_error_classes() -> list[type[CrmkitError]]:
    """Every CrmkitError subclass defined in crmkit, the sandbox included (all their modules imported)."""
    import_every_module()
    mine: set[type[CrmkitError]] = {c for c in subclasses(CrmkitError) if issubclass(c, CrmkitError)}
    return sorted(mine, key=lambda c: (c.__module__, c.__qualname__))


def sandbox_class_names() -> dict[str, list[str]]:
    """``{name: [file:line, ...]}`` of every class statement under crmkit/sandbox, nested ones too (from the source)."""
    root = Path(crmkit.__file__).parent / "sandbox"
    names: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names.setdefault(node.name, []).append(f"{path.relative_to(root.parent)}:{node.lineno}")
    return names


def parent(cls: type[CrmkitError]) -> str | None:
    """The nearest CrmkitError base (mixins such as ValueError are not part of the tree)."""
    bases = [b for b in cls.__bases__ if issubclass(b, CrmkitError)]
    assert len(bases) <= 1, f"{cls.__qualname__} has several CrmkitError bases: {bases}"
    return bases[0].__name__ if bases else None


def test_the_drawing_parses() -> None:
    tree = drawn_tree()
    assert tree["GraphThrottled"] == "GraphError" and tree["UnsafeQuery"] == "ValidationError"
    assert tree["DatabaseLocked"] == "StoreError" and tree["StoreError"] == "CrmkitError"


def test_every_error_class_is_drawn_under_its_parent() -> None:
    tree = drawn_tree()
    classes = crmkit_error_classes()
    names: dict[str, list[str]] = {}
    for cls in classes:
        names.setdefault(cls.__name__, []).append(f"{cls.__module__}.{cls.__qualname__}")
    shared = {n: where for n, where in names.items() if len(where) > 1}
    assert not shared, f"error classes sharing a name: {shared}"
    missing = [f"{c.__module__}.{c.__qualname__} (a {parent(c)})" for c in classes if c.__name__ not in tree]
    assert not missing, f"error classes not drawn in crmkit/errors.py's tree: {missing}"
    misplaced = [f"{c.__name__}: drawn under {tree[c.__name__]}, derives from {parent(c)}"
                 for c in classes if tree[c.__name__] != parent(c)]
    assert not misplaced, misplaced
    stale = sorted(set(tree) - set(names))
    assert not stale, f"drawn in the tree but no such error class in crmkit: {stale}"


def test_no_sandbox_class_is_named_like_a_client_exception() -> None:
    import_every_module()
    client = {c.__name__: f"{c.__module__}.{c.__qualname__}" for c in subclasses(BaseException)
              if not in_sandbox(c.__module__)}
    assert "GraphError" in client and "AuthError" in client  # the walk found crmkit's client errors
    sandbox = sandbox_class_names()
    assert "Sandbox" in sandbox  # the walk read the sandbox's source
    clashes = {name: (client[name], where) for name, where in sandbox.items() if name in client}
    assert not clashes, f"sandbox classes named like crmkit's client exceptions (client, sandbox): {clashes}"
