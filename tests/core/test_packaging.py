"""environment.yml is derived from pyproject.toml; these checks keep the two from drifting."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.core


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def _pip_list() -> list[str]:
    deps = _environment()["dependencies"]
    pips = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml needs exactly one pip: section"
    return pips[0]


def _by_name(requirements: Iterable[str]) -> dict[str, SpecifierSet]:
    return {canonicalize_name(r.name): r.specifier for r in map(Requirement, requirements)}


def test_pip_list_equals_pyproject_dependencies() -> None:
    declared = _by_name(_pyproject()["project"]["dependencies"])
    listed = _by_name(p for p in _pip_list() if not p.startswith("-e"))
    assert set(listed) == set(declared), {"missing": set(declared) - set(listed), "extra": set(listed) - set(declared)}
    diff = {n: (str(listed[n]), str(declared[n])) for n in declared if listed[n] != declared[n]}
    assert not diff, f"specifiers differ (environment.yml, pyproject.toml): {diff}"


def test_installs_the_package_with_test_extra() -> None:
    assert "-e .[test]" in _pip_list()


def test_only_python_and_pip_from_conda() -> None:
    env = _environment()
    assert env["channels"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert sorted(c.split("=")[0] for c in conda) == ["pip", "python"]
    python = next(c for c in conda if c.startswith("python"))
    version = python.split("=", 1)[1]
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(version + ".0")


def test_package_ships_type_marker() -> None:
    assert (ROOT / "crmkit" / "py.typed").exists()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["crmkit"]
