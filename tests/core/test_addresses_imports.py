"""Addresses have their own home, crmkit.addresses, which needs no session (crmkit.crm).

Queries, writes and the search word index take the store (and a user name for writes); the session
only delegates to them, so nothing that works on addresses has to import crm.py and with it every
feature the session composes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import crmkit.crm
from crmkit import addresses
from crmkit.crm import CRM

pytestmark = pytest.mark.core

# Loaded by ``import crmkit.addresses``: the package, its error tree and the two rules it checks with.
ALLOWED = {"crmkit", "crmkit.addresses", "crmkit.errors", "crmkit.sql_filter", "crmkit.text_rules", "crmkit.i18n"}

_USE = r"""
import json, sys
from crmkit import addresses
from crmkit.store import Store
store = Store(":memory:")
a = addresses.add_address(store, "admin", company="Müller GmbH", city="Köln")
b = addresses.add_address(store, "admin", last_name="Schmidt", first_name="Eva", parent_id=a)
addresses.update_address(store, "admin", b, city="Bonn")
page, total = addresses.address_page(store, 0, 10, search="bonn")
out = {
    "search": addresses.addresses(store, search="muller")["id"].tolist(),
    "where": addresses.count_addresses(store, "city = ?", ["Bonn"]),
    "page": [page["id"].tolist(), total],
    "one": [addresses.address(store, b)["modified_by"], addresses.address(store, b)["city"]],
    "modules": sorted(m for m in sys.modules if m.startswith("crmkit")),
    "httpx": "httpx" in sys.modules,
}
print(json.dumps(out))
"""


def _fresh(code: str) -> dict[str, object]:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_importing_addresses_loads_no_session_and_no_feature() -> None:
    out = _fresh("import json, sys, crmkit.addresses\n"
                 "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith('crmkit')),"
                 " 'httpx': 'httpx' in sys.modules}))")
    assert "crmkit.crm" not in out["modules"]  # type: ignore[operator]
    assert set(out["modules"]) <= ALLOWED, set(out["modules"]) - ALLOWED  # type: ignore[arg-type]
    assert out["httpx"] is False


def test_address_queries_and_writes_run_on_a_store_without_the_session() -> None:
    out = _fresh(_USE)
    assert out["search"] == [1]  # the accent-free word index: "muller" finds "Müller"
    assert out["where"] == 1
    assert out["page"] == [[2], 1]  # the updated city is in the search index
    assert out["one"] == ["admin", "Bonn"]
    assert "crmkit.crm" not in out["modules"], out["modules"]  # type: ignore[operator]
    assert out["httpx"] is False


def test_the_session_delegates_and_crm_py_keeps_no_address_code(crm: CRM) -> None:
    for name in ("ADDRESS_FIELDS", "ADDRESS_COLUMNS", "SEARCHED_COLUMNS", "words_sql", "index_addresses",
                 "rebuild_search_index", "search_terms", "_clean_address", "_check_columns"):
        assert not hasattr(crmkit.crm, name), name
    assert not hasattr(CRM, "_address_filter") and not hasattr(CRM, "_run_filter")
    a = crm.add_address(company="Alpha", city="Berlin")
    crm.update_address(a, city="Hamburg")
    assert crm.addresses(search="hamb")["id"].tolist() == addresses.addresses(crm.store, search="hamb")["id"].tolist()
    assert crm.count_addresses(city="Hamburg") == addresses.count_addresses(crm.store, city="Hamburg") == 1
    assert crm.address(a) == addresses.address(crm.store, a)
    frame, total = crm.address_page(0, 5, search="alpha")
    assert total == 1 and frame["id"].tolist() == [a]


def test_privacy_needs_no_session_module_either() -> None:
    """A guard: crmkit.privacy took ADDRESS_FIELDS from crm.py inside a function; it imports neither now."""
    out = _fresh("import json, sys, crmkit.privacy\n"
                 "print(json.dumps({'modules': sorted(m for m in sys.modules if m.startswith('crmkit'))}))")
    assert "crmkit.crm" not in out["modules"]  # type: ignore[operator]
