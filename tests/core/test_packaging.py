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


# -- requirements.lock: exact versions `make setup` installs, made by `make lock` from the ranges above --

LOCK = ROOT / "requirements.lock"


def _lock() -> dict[str, str]:
    """The lock's pins by canonical name; every line is ``name==version`` (comments aside)."""
    pins: dict[str, str] = {}
    for n, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        exact = list(req.specifier)
        assert len(exact) == 1 and exact[0].operator == "==" and not req.url and not req.extras, \
            f"requirements.lock:{n}: {line!r} is not an exact pin"
        name = canonicalize_name(req.name)
        assert name not in pins, f"requirements.lock:{n}: {req.name} pinned twice"
        pins[name] = exact[0].version
    return pins


def _declared() -> dict[str, SpecifierSet]:
    project = _pyproject()["project"]
    return _by_name([*project["dependencies"], *project["optional-dependencies"]["test"]])


def test_lock_pins_every_declared_dependency_within_its_range() -> None:
    pins = _lock()
    assert "crmkit" not in pins, "the lock leaves crmkit itself out (make setup installs it with --no-deps)"
    missing = sorted(set(_declared()) - set(pins))
    assert not missing, f"declared in pyproject.toml but not locked: {missing}; run `make lock`"
    outside = {n: (pins[n], str(spec)) for n, spec in _declared().items() if not spec.contains(pins[n],
                                                                                                  prereleases=True)}
    assert not outside, f"locked version outside pyproject.toml's range (pin, range): {outside}; run `make lock`"


def test_lock_satisfies_environment_yml() -> None:
    pins = _lock()
    listed = _by_name(p for p in _pip_list() if not p.startswith("-e"))
    bad = {n: (pins.get(n), str(spec)) for n, spec in listed.items() if n not in pins or not spec.contains(pins[n])}
    assert not bad, f"environment.yml asks for what the lock does not pin (pin, range): {bad}"


def test_lock_is_for_the_python_of_environment_yml() -> None:
    header = LOCK.read_text().splitlines()[0]
    conda_python = next(d for d in _environment()["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert header.startswith(f"# Exact versions for Python {conda_python.split('=', 1)[1]}."), header


def test_lock_is_closed_over_installed_requirements() -> None:
    """Installing the lock pulls in nothing unpinned: each locked package's own requirements (as installed
    here, for the locked version) are locked too, at a version they accept."""
    from importlib import metadata

    pins = _lock()
    checked, problems = 0, []
    for name, version in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue  # this venv has another version; its metadata says nothing about the locked one
        checked += 1
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in pins:
                problems.append(f"{name} needs {raw!r}, not locked")
            elif not req.specifier.contains(pins[dep], prereleases=True):
                problems.append(f"{name} needs {raw!r}, locked {pins[dep]}")
    assert checked >= len(_declared()), f"only {checked} locked packages installed here at their locked version"
    assert not problems, problems


def test_make_setup_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    stamp = next(line for line in makefile.splitlines() if line.startswith("$(STAMP):"))
    assert "pyproject.toml" in stamp and "$(LOCK)" in stamp, stamp
    assert "LOCK := requirements.lock" in makefile
    assert "pip install $(PIP_QUIET) -r $(LOCK)" in makefile
    assert "--no-deps -e ." in makefile
    assert "\nlock:" in makefile
