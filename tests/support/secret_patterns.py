"""Finding secrets in files: what the identity platform hands out and what users type.

Used by the last test tier (tests/secret_scan) over every artefact of the run, and by tests/auth for
the database. DuckDB files are read through DuckDB, because their string columns are compressed and
a byte search would miss a token.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from crmkit.sandbox import SANDBOX_PASSWORD

WRONG_PASSWORD = "Wrong-Pass-4711"  # typed by tests/auth/test_secrets.py
PATTERNS: dict[str, re.Pattern[bytes]] = {
    "JWT": re.compile(rb"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "refresh token": re.compile(rb"0\.sbx\.[A-Za-z0-9_-]{20,}"),
    "device code": re.compile(rb"DAQABAAEAAAD\.[A-Za-z0-9_-]{20,}"),
    "password": re.compile(re.escape(SANDBOX_PASSWORD.encode()) + rb"|" + re.escape(WRONG_PASSWORD.encode())),
}
ALLOWED_DIR = "token-caches"  # where MSAL keeps refresh tokens by design
SKIP_SUFFIXES = {".pyc"}


@dataclass(frozen=True)
class Finding:
    path: Path
    kind: str
    where: str

    def __str__(self) -> str:  # never the secret itself: a failing assert must not print it
        return f"{self.kind} in {self.path} ({self.where})"


def is_duckdb(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(12)[8:12] == b"DUCK"


def _open_duckdb(path: Path, scratch: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
    # still open in a live process (the session's sandbox tenant): read a copy
    copy = scratch / f"{len(list(scratch.iterdir()))}-{path.name}"
    shutil.copyfile(path, copy)
    wal = path.with_name(path.name + ".wal")
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    return duckdb.connect(str(copy), read_only=True)


def duckdb_text(path: Path, scratch: Path) -> Iterator[tuple[str, bytes]]:
    """Every table's rows as text, decompressed by DuckDB itself."""
    con = _open_duckdb(path, scratch)
    try:
        tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        for schema, table in tables:
            rows = con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            yield f"table {schema}.{table}", "\n".join(map(repr, rows)).encode("utf-8", "replace")
    finally:
        con.close()


def scan(paths: Iterable[Path], scratch: Path) -> tuple[list[Finding], dict[str, int]]:
    """Secrets found in ``paths`` outside token caches, and how many matches each kind had inside them.

    ``scratch`` is an empty folder for copies of DuckDB files another process holds open."""
    findings: list[Finding] = []
    in_caches = {kind: 0 for kind in PATTERNS}
    for path in paths:
        if not path.is_file() or path.suffix in SKIP_SUFFIXES:
            continue
        parts: list[tuple[str, bytes]] = [("bytes", path.read_bytes())]
        if is_duckdb(path):
            try:
                parts += list(duckdb_text(path, scratch))
            except duckdb.Error:
                pass  # a file the tests broke on purpose (truncated, foreign): its bytes are scanned above
        for where, data in parts:
            for kind, pattern in PATTERNS.items():
                hits = len(pattern.findall(data))
                if not hits:
                    continue
                if ALLOWED_DIR in path.parts:
                    in_caches[kind] += hits
                else:
                    findings.append(Finding(path, kind, where))
    return findings, in_caches


