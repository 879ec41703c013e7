"""crmkit.privacy is split by reason to change: policy, log writes, reports, retention.

The package keeps exporting every public name, each defined in one part only; the parts depend on
each other in one direction; and only the retention part deletes or rewrites transfer-log rows.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re

import pytest

from crmkit import privacy

pytestmark = pytest.mark.core

PARTS = ("transfer_policy", "log", "reports", "retention")
# Which other parts each part may import (one direction: policy <- log <- reports; retention alone).
ALLOWED = {"transfer_policy": set(), "log": {"transfer_policy"}, "reports": {"transfer_policy", "log"},
           "retention": set()}


def _part(name: str) -> object:
    return importlib.import_module(f"crmkit.privacy.{name}")


def test_every_public_name_comes_from_exactly_one_part() -> None:
    owners: dict[str, list[str]] = {}
    for name in PARTS:
        for public in _part(name).__all__:  # type: ignore[attr-defined]
            owners.setdefault(public, []).append(name)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}
    assert sorted(set(privacy.__all__) - set(owners)) == []
    for public in privacy.__all__:
        (owner,) = owners[public]
        assert getattr(privacy, public) is getattr(_part(owner), public), public
        value = getattr(privacy, public)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__module__ == f"crmkit.privacy.{owner}", public  # defined there, not re-imported


def test_parts_import_each_other_in_one_direction() -> None:
    for name in PARTS:
        tree = ast.parse(inspect.getsource(_part(name)))  # type: ignore[arg-type]
        imported = {
            node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        assert imported & set(PARTS) <= ALLOWED[name], (name, imported)


def test_only_retention_deletes_or_rewrites_log_rows() -> None:
    changing = re.compile(r"\b(DELETE\s+FROM|UPDATE|DROP\s+TABLE|TRUNCATE)\s+transfer_log\b", re.IGNORECASE)
    found = {name for name in PARTS if changing.search(inspect.getsource(_part(name)))}  # type: ignore[arg-type]
    assert found == {"retention"}
