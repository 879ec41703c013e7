"""One error tree: every CrmkitError subclass under crmkit/ is drawn in crmkit/errors.py's docstring, under
its real parent, and no two share a name (the tree names classes by name alone).

The sandbox (crmkit.sandbox) is the server, not crmkit's client, and is left out: its modules are not
imported here, and a class defined there is not checked even when another module imports it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

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


def crmkit_error_classes() -> list[type[CrmkitError]]:
    """Every CrmkitError subclass defined in crmkit (all its modules imported, the sandbox's not)."""
    packages = [crmkit]
    while packages:  # not pkgutil.walk_packages: it imports every package it walks, the sandbox's too
        package = packages.pop()
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            if info.name != SERVER:
                module = importlib.import_module(info.name)
                if info.ispkg:
                    packages.append(module)
    found: list[type[CrmkitError]] = []
    todo: list[type[CrmkitError]] = [CrmkitError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    mine = {c for c in found if c.__module__.split(".")[0] == "crmkit"
            and c.__module__ != SERVER and not c.__module__.startswith(SERVER + ".")}
    return sorted(mine, key=lambda c: (c.__module__, c.__qualname__))


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
