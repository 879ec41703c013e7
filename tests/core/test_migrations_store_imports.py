"""The store and its migrations stand alone: opening a database imports no crmkit feature and no httpx.

Run in a fresh interpreter, so modules other tests imported do not hide an import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.core

# crmkit (the package; its __init__ loads the session lazily), the store with its DuckDB backend (not the
# PostgreSQL one: psycopg loads only for a postgresql:// URL), its migrations and the
# error tree (a leaf: it loads the catalog only when an error text is asked for).
ALLOWED = {"crmkit", "crmkit.store", "crmkit.store.tx", "crmkit.store.duckdb_backend", "crmkit.migrations",
           "crmkit.errors"}

_PROBE = """
import json, sys
import crmkit.store
s = crmkit.store.Store(":memory:")
s.read(lambda tx: tx.rows("SELECT count(*) FROM roles"))
f = crmkit.store.Store(sys.argv[1])
f.write(lambda tx: tx.execute("INSERT INTO users (name, display_name) VALUES ('ben', 'Ben')"))
print(json.dumps(sorted(sys.modules)))
"""


def test_opening_a_store_imports_no_feature_module_and_no_httpx(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path / "crm.duckdb")], capture_output=True,
                         text=True, timeout=120, check=True)
    modules = set(json.loads(out.stdout))
    crmkit_modules = {m for m in modules if m == "crmkit" or m.startswith("crmkit.")}
    assert crmkit_modules - ALLOWED == set()
    assert not {m for m in modules if m == "httpx" or m.startswith("httpx.")}
    assert not {m for m in modules if m == "psycopg" or m.startswith("psycopg.")}


# `crmkit demo` on a machine with no PostgreSQL (issue 15): the CLI's DuckDB paths never reach for psycopg.
# A finder refuses it, and records every attempt, so a `try: import psycopg except ImportError` is caught too.
_CLI_PROBE = """
import json, sys
attempts = []
class NoPsycopg:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("psycopg", "psycopg_pool"):
            attempts.append(name)
            raise ImportError(name + " is not installed here")
sys.meta_path.insert(0, NoPsycopg())
import crmkit.cli
codes = [crmkit.cli.main(["--db", sys.argv[1], *argv]) for argv in (["init"], ["demo-data", "--addresses", "20"])]
print(json.dumps({"codes": codes, "attempts": attempts, "loaded": sorted(m for m in sys.modules if "psycopg" in m)}))
"""


def test_the_cli_on_a_duckdb_file_needs_no_psycopg(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _CLI_PROBE, str(tmp_path / "crm.duckdb")], capture_output=True,
                         text=True, timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found == {"codes": [0, 0], "attempts": [], "loaded": []}, (found, out.stderr)
