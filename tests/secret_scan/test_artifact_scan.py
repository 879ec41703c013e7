"""The last tier: every file the test run left behind, scanned at once for secrets in plain text.

Runs after every other tier (tests/conftest.py orders it last) over pytest's temporary folders
(DuckDB files, WAL files, CRM and sandbox state, worker and sandbox logs, token caches) and
``test-output/`` (Voila logs, screenshots, executed notebooks with their outputs). It looks for what
the identity platform hands out and what users type: JWTs (access and ID tokens), refresh tokens,
device codes, the sandbox users' password and the wrong one the tests type. DuckDB files are read
through DuckDB, because their string columns are compressed and a byte search would miss a token.

The one place a token may be is an MSAL token cache (``token-caches/``, 0600 inside the 0700
``CRMKIT_HOME``; tests/auth checks the modes); there the patterns must find the real tokens, which
shows they match what the sandbox really issues.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from support.secret_patterns import ALLOWED_DIR, scan

pytestmark = pytest.mark.secrets

ROOT = Path(__file__).resolve().parents[2]
PLANTED = "planted-secrets"  # the control test's folder, left out of the sweep


def test_the_scan_finds_what_it_looks_for(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    planted = tmp_path_factory.mktemp(PLANTED)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbm5hQGNvbnRvc28uZXhhbXBsZSJ9.c2lnbmF0dXJlLW9mLWEtZmFrZS10b2tlbg"
    con = duckdb.connect(str(planted / "planted.duckdb"))
    # many similar rows: DuckDB then compresses the column, and a plain byte search finds nothing
    con.execute("CREATE TABLE t AS SELECT 'note ' || i || ' ' || ? AS v FROM range(5000) r(i)", [jwt])
    con.close()
    (planted / "planted.log").write_text(f"grant refresh_token=0.sbx.{'A' * 40}\n", encoding="utf-8")
    (planted / "token-caches").mkdir()
    (planted / "token-caches" / "cache.json").write_text(f'{{"secret": "{jwt}"}}', encoding="utf-8")
    findings, in_caches = scan(planted.rglob("*"), tmp_path)
    assert {(f.path.name, f.kind) for f in findings} == {("planted.duckdb", "JWT"), ("planted.log", "refresh token")}
    assert in_caches["JWT"] == 1
    assert "eyJ" not in " ".join(map(str, findings))


def _artefacts(tmp_path_factory: pytest.TempPathFactory, own: Path) -> list[Path]:
    """Every file of the run but this module's own (its scratch copies, the planted control)."""
    base = tmp_path_factory.getbasetemp()
    mine = [own, *(d for d in base.iterdir() if d.name.startswith(PLANTED))]
    roots = [base, ROOT / "test-output"]
    return [p for root in roots if root.is_dir() for p in root.rglob("*")
            if p.is_file() and not any(m == p or m in p.parents for m in mine)]


def test_nothing_the_run_left_behind_holds_a_secret(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    files = _artefacts(tmp_path_factory, tmp_path)
    if not files:
        pytest.skip("no other tier ran in this session: nothing to scan")
    findings, in_caches = scan(files, tmp_path)
    assert not findings, "\n".join(map(str, findings))
    caches = [p for p in files if ALLOWED_DIR in p.parts]
    if caches:  # the patterns match what the sandbox really issued
        assert in_caches["refresh token"] > 0 and in_caches["JWT"] > 0, in_caches
