"""Every test has exactly one tier: tests/conftest.py makes collection fail, naming the test, otherwise.

Runs a real ``pytest --collect-only`` in a copy of the project's test setup (pyproject.toml, the root
conftest and tests/support) holding a few small test files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[2]

TIERED = '''import pytest

pytestmark = pytest.mark.core


def test_a() -> None:
    pass


@pytest.mark.parametrize("n", [1, 2])
def test_b(n: int) -> None:
    pass
'''
UNTIERED = '''import pytest


def test_nothing() -> None:
    pass


@pytest.mark.widgets
def test_widgets() -> None:
    pass
'''
TWICE = '''import pytest

pytestmark = pytest.mark.sandbox


@pytest.mark.core
def test_twice() -> None:
    pass
'''


def collect(tmp_path: Path, files: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    # secret_patterns.py holds the sandbox's password to look for; a copy of it would be a finding of
    # the secret scan that runs over every temp folder at the end (and the root conftest does not need it)
    shutil.copytree(ROOT / "tests" / "support", tmp_path / "tests" / "support",
                    ignore=shutil.ignore_patterns("__pycache__", "secret_patterns.py"))
    for name, text in files.items():
        (tmp_path / "tests" / name).write_text(text, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)


def test_tests_with_one_tier_collect(tmp_path: Path) -> None:
    done = collect(tmp_path, {"test_ok.py": TIERED})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 tests collected" in done.stdout


def test_a_test_without_a_tier_or_with_two_fails_collection_by_name(tmp_path: Path) -> None:
    done = collect(tmp_path, {"test_ok.py": TIERED, "test_untiered.py": UNTIERED, "test_twice.py": TWICE},
                   "-m", "widgets")  # also when -m would deselect them
    out = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "2 test(s) need exactly one tier marker" in out, out
    named = {line.strip() for line in out.splitlines() if line.startswith("  tests/")}
    assert named == {"tests/test_untiered.py::test_nothing: no tier marker",
                     "tests/test_twice.py::test_twice: tiers core, sandbox"}, out
