"""Move a CRM between stores: :func:`migrate_store` copies every table of one crmkit database into an empty one
(DuckDB file → PostgreSQL database and back), verified, in one transaction of the target.

- Both stores are opened first, which brings them to this crmkit's schema; their tables and columns must then
  match. The target must hold no user data: every table as a new database has it (the seeded roles, rights,
  admin user and contact types; timestamps aside), else :class:`StoreNotEmpty` names the tables with rows.
- Tables and columns come from the catalog (nothing is hard-coded), rows are read from one snapshot of the
  source in chunks and written with COPY on PostgreSQL and from a registered DataFrame on DuckDB. The seeded
  rows of the target are replaced by the source's, ``_crmkit_migrations`` included, so a round trip gives the
  same database back.
- Verified before the commit: per table the row count and a checksum over a canonical rendering of each row
  (``repr`` of the Python values both drivers return: ints, str, bool, naive datetimes with microseconds,
  lists for ``VARCHAR[]``, None), read back inside the target's transaction. The checksum is the sum of the
  rows' hashes (mod 2**128): independent of row order, so no ``ORDER BY`` is needed — text orders by collation
  and a server's collation need not be DuckDB's byte order — while a changed, missing or extra row (a
  duplicate too) changes it. A mismatch raises and the transaction rolls back: the target stays as it was.
- Sequences are moved past what the source handed out (its position, at least the highest id of the columns
  defaulting to it), so a new row on the target does not collide: PostgreSQL by ``setval``; DuckDB cannot
  alter a sequence (nor replace one a table default depends on), so it draws ``nextval`` the missing number
  of times in one statement (1,000,000 draws take ~30 ms). Done last, after verifying: neither database
  rolls a sequence back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import CrmkitError, DatabasePathError, StoreError, StoreNotEmpty, catalog_error
from ..migrations import DERIVED_TABLES
from . import Store, is_postgres_url
from .tx import Tx

__all__ = ["CHUNK_ROWS", "CopyReport", "TableCopy", "migrate_store", "table_checksums"]

CHUNK_ROWS = 10_000  # rows per read and write: bounded memory for tables of millions of rows
Progress = Callable[[str, int, int], None]  # (table, rows copied so far, rows in the table)
_MOD = 1 << 128
_NEXTVAL = re.compile(r"nextval\('\"?([^'\"]+)\"?'")


@dataclass(frozen=True)
class TableCopy:
    """One table as copied: its rows and checksum, the same on both sides (else the copy raised)."""

    name: str
    rows: int
    checksum: str


@dataclass
class CopyReport:
    """What :func:`migrate_store` did. ``source``/``target`` are display paths (a URL without its password)."""

    source: str
    target: str
    tables: list[TableCopy] = field(default_factory=list)
    sequences: dict[str, int] = field(default_factory=dict)  # the last value each target sequence handed out
    seconds: float = 0.0
    verified: bool = False

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


# -- the catalog -----------------------------------------------------------------------------------------

def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _columns(tx: Tx) -> dict[str, list[tuple[str, str, str | None]]]:
    """``{table: [(column, type, default), ...]}`` of the current schema's base tables, in column order."""
    rows = tx.rows(
        "SELECT c.table_name, c.column_name, c.data_type, c.column_default FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_catalog = c.table_catalog "
        "AND t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE t.table_type = 'BASE TABLE' AND c.table_catalog = current_database() "
        "AND c.table_schema = current_schema() ORDER BY c.table_name, c.ordinal_position"
    )
    out: dict[str, list[tuple[str, str, str | None]]] = {}
    for table, column, dtype, default in rows:
        if table not in DERIVED_TABLES:  # kept by the target's own triggers from the tables copied
            out.setdefault(table, []).append((column, dtype, default))
    return out


def _pg_type_oids(tx: Tx, table: str) -> list[int]:
    """The type oids of a PostgreSQL table's columns in order, for COPY's dumpers (varchar[] included)."""
    return [r[0] for r in tx.rows(
        "SELECT atttypid FROM pg_attribute WHERE attrelid = CAST(? AS regclass) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", [_ident(table)])]


def _sequences(tx: Tx) -> dict[str, int | None]:
    """``{sequence: last value handed out, None when never used}`` of the current schema."""
    if tx.dialect == "postgresql":
        sql = "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = current_schema()"
    else:
        sql = ("SELECT sequence_name, last_value FROM duckdb_sequences() "
               "WHERE database_name = current_database() AND schema_name = current_schema()")
    return {name: (None if last is None else int(last)) for name, last in tx.rows(sql)}


# -- reading rows ----------------------------------------------------------------------------------------

def _chunks(tx: Tx, table: str, columns: Sequence[str]) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` in chunks of CHUNK_ROWS, streamed (a server-side cursor on PostgreSQL)."""
    sql = f"SELECT {', '.join(_ident(c) for c in columns)} FROM {_ident(table)}"
    if tx.dialect == "postgresql":
        conn = tx._pg  # type: ignore[attr-defined]  # PgTx: its connection, inside its transaction
        with conn.cursor(name=f"crmkit_copy_{table}") as cur:
            cur.itersize = CHUNK_ROWS
            cur.execute(sql)  # no parameters: psycopg sends a % as it is
            while rows := cur.fetchmany(CHUNK_ROWS):
                yield rows
        return
    result = tx._con.execute(sql)  # DuckDB: fetchmany streams the result
    while rows := result.fetchmany(CHUNK_ROWS):
        yield rows


class _Checksum:
    """Row count and order-independent sum of row hashes (see the module doc)."""

    def __init__(self) -> None:
        self.rows = 0
        self._sum = 0

    def add(self, rows: Sequence[tuple[Any, ...]]) -> None:
        total = self._sum
        for row in rows:
            total += int.from_bytes(hashlib.blake2b(repr(row).encode("utf-8"), digest_size=16).digest(), "big")
        self._sum = total % _MOD
        self.rows += len(rows)

    @property
    def hex(self) -> str:
        return f"{self._sum:032x}"


def _checksum(tx: Tx, table: str, columns: Sequence[str]) -> _Checksum:
    summed = _Checksum()
    for rows in _chunks(tx, table, columns):
        summed.add(rows)
    return summed


def table_checksums(location: str) -> dict[str, tuple[int, str]]:
    """``{table: (rows, checksum)}`` of every table of a crmkit database, as :func:`migrate_store` verifies
    them; two databases with the same answer hold the same rows. For tests and checks after a move."""
    store = Store(location)
    try:
        def run(tx: Tx) -> dict[str, tuple[int, str]]:
            out = {}
            for table, cols in sorted(_columns(tx).items()):
                summed = _checksum(tx, table, [c[0] for c in cols])
                out[table] = (summed.rows, summed.hex)
            return out

        return store.read(run)
    finally:
        store.close()


# -- writing rows ----------------------------------------------------------------------------------------

Rows = list[tuple[Any, ...]]
Columns = dict[str, list[tuple[str, str, str | None]]]  # {table: [(column, type, default), ...]}


def _writer(tx: Tx, table: str, columns: Sequence[tuple[str, str, str | None]]) -> Callable[[Rows], None]:
    """A function that appends rows to ``table`` on the target: COPY on PostgreSQL, an INSERT from a
    registered DataFrame on DuckDB (each column cast to its type, so JSON text and lists arrive as they are)."""
    names = [c[0] for c in columns]
    cols = ", ".join(_ident(c) for c in names)
    if tx.dialect == "postgresql":
        conn = tx._pg  # type: ignore[attr-defined]
        oids = _pg_type_oids(tx, table)
        statement = f"COPY {_ident(table)} ({cols}) FROM STDIN"

        def copy_rows(rows: list[tuple[Any, ...]]) -> None:
            with conn.cursor() as cur, cur.copy(statement) as copy:
                copy.set_types(oids)
                for row in rows:
                    copy.write_row(row)

        return copy_rows
    casts = ", ".join(f"CAST({_ident(name)} AS {dtype})" for name, dtype, _ in columns)
    insert = f"INSERT INTO {_ident(table)} ({cols}) SELECT {casts} FROM _crmkit_copy_chunk"

    def insert_rows(rows: list[tuple[Any, ...]]) -> None:
        # object columns: DuckDB reads the Python values themselves (datetimes to the microsecond, lists, None)
        frame = pd.DataFrame({name: pd.Series([r[i] for r in rows], dtype=object) for i, name in enumerate(names)})
        tx.register("_crmkit_copy_chunk", frame)
        try:
            tx.execute(insert)
        finally:
            tx.unregister("_crmkit_copy_chunk")

    return insert_rows


# -- the move --------------------------------------------------------------------------------------------

def _seeded() -> dict[str, list[str]]:
    """What a new database holds: ``{table: sorted reprs of its rows, TIMESTAMP columns left out}``."""
    fresh = Store(":memory:")
    try:
        def run(tx: Tx) -> dict[str, list[str]]:
            out = {}
            for table, cols in _columns(tx).items():
                kept = [c[0] for c in cols if not c[1].upper().startswith("TIMESTAMP")]
                out[table] = sorted(repr(r) for rows in _chunks(tx, table, kept) for r in rows)
            return out

        return fresh.read(run)
    finally:
        fresh.close()


def _tables_with_data(tx: Tx, columns: dict[str, list[tuple[str, str, str | None]]]) -> list[str]:
    """The target's tables holding rows a new database does not have (seeded rows with changed values too)."""
    seeded = _seeded()
    found = []
    for table, cols in sorted(columns.items()):
        count = tx.one(f"SELECT count(*) FROM {_ident(table)}")
        expected = seeded.get(table, [])
        if count != len(expected):
            found.append(table)
        elif count:
            kept = [c[0] for c in cols if not c[1].upper().startswith("TIMESTAMP")]
            if sorted(repr(r) for rows in _chunks(tx, table, kept) for r in rows) != expected:
                found.append(table)
    return found


def _copy_table(stx: Tx, ttx: Tx, table: str, columns: Sequence[tuple[str, str, str | None]],
                progress: Progress | None) -> _Checksum:
    """Append the source's rows of ``table`` to the target's, chunk by chunk; their count and checksum."""
    names = [c[0] for c in columns]
    total = stx.one(f"SELECT count(*) FROM {_ident(table)}") or 0
    write = _writer(ttx, table, columns)
    summed = _Checksum()
    for rows in _chunks(stx, table, names):
        write(rows)
        summed.add(rows)
        if progress is not None:
            progress(table, summed.rows, max(total, summed.rows))
    if progress is not None and not summed.rows:
        progress(table, 0, 0)
    return summed


def _same_location(source: str, target: str) -> bool:
    if is_postgres_url(source) or is_postgres_url(target):
        return source == target
    return Path(source).expanduser().resolve() == Path(target).expanduser().resolve()


def _schema_problems(src: dict[str, list[tuple[str, str, str | None]]],
                     dst: dict[str, list[tuple[str, str, str | None]]]) -> list[str]:
    problems = [f"only in the source: {t}" for t in sorted(set(src) - set(dst))]
    problems += [f"only in the target: {t}" for t in sorted(set(dst) - set(src))]
    for table in sorted(set(src) & set(dst)):
        if [c[0] for c in src[table]] != [c[0] for c in dst[table]]:
            problems.append(f"columns of {table} differ")
    return problems


def _move_sequences(stx: Tx, ttx: Tx, columns: dict[str, list[tuple[str, str, str | None]]]) -> dict[str, int]:
    """Advance each target sequence to the source's position and past the ids in the columns using it."""
    wanted: dict[str, int] = {name: last or 0 for name, last in _sequences(stx).items()}
    for table, cols in columns.items():
        for column, _dtype, default in cols:
            m = _NEXTVAL.search(default or "")
            if m:
                top = ttx.one(f"SELECT max({_ident(column)}) FROM {_ident(table)}")
                name = m.group(1).split(".")[-1]
                wanted[name] = max(wanted.get(name, 0), int(top or 0))
    current = _sequences(ttx)
    moved = {}
    for name, last in sorted(wanted.items()):
        if name not in current:
            continue  # a sequence the target does not have (the schemas matched, so none of its tables use it)
        now = current[name] or 0
        if last > now:
            if ttx.dialect == "postgresql":
                ttx.execute("SELECT setval(?, ?, true)", [name, last])
            else:
                ttx.execute(f"SELECT max(nextval('{name}')) FROM range(?)", [last - now])
        moved[name] = max(last, now)
    return moved


def migrate_store(source: str, target: str, *, progress: Progress | None = None) -> CopyReport:
    """Copy the crmkit database ``source`` into the empty crmkit database ``target``, verified.

    Both are Store locations: a DuckDB file path or a ``postgresql://`` URL. ``progress(table, done, total)``
    is called after each chunk of rows. Returns a :class:`CopyReport` of the tables, rows and checksums.

    Raises:
        StoreNotEmpty: the target holds data (its tables with rows are named); nothing was changed.
        DatabasePathError: there is no DuckDB file at ``source`` (opening it would create an empty one).
        StoreError: the two are the same database, their schemas differ, or the copy did not verify (the
            target's transaction was rolled back); and every error of opening a Store.
    """
    started = time.perf_counter()
    if _same_location(source, target):
        raise catalog_error(StoreError, "error.msg.store_same", target=_display(target))
    if not is_postgres_url(source) and (source == ":memory:" or not Path(source).expanduser().exists()):
        raise DatabasePathError(f"There is no database at {source}; give the path of the DuckDB file to copy "
                                "(opening a missing file would create an empty one).")
    created = not is_postgres_url(target) and target != ":memory:" and not Path(target).expanduser().exists()
    src = Store(source)
    dst: Store | None = None
    try:
        dst = Store(target)
        report = CopyReport(source=src.path, target=dst.path)
        sources, targets = src, dst

        def copy_all(ttx: Tx) -> None:
            def inside(stx: Tx) -> None:
                report.tables.clear()
                columns = _columns(stx)
                target_columns = _columns(ttx)
                problems = _schema_problems(columns, target_columns)
                applied = sorted(r[0] for r in stx.rows("SELECT id FROM _crmkit_migrations"))
                if not problems and applied != sorted(r[0] for r in ttx.rows("SELECT id FROM _crmkit_migrations")):
                    problems.append("applied migrations differ")
                if problems:
                    raise catalog_error(StoreError, "error.msg.store_schema_differs", source=sources.path,
                                        target=targets.path, problems="; ".join(problems))
                full = _tables_with_data(ttx, target_columns)
                if full:
                    raise catalog_error(StoreNotEmpty, "error.msg.store_not_empty", target=targets.path,
                                        tables=", ".join(full))
                for table in sorted(target_columns):  # the seeded rows give way to the source's
                    if ttx.one(f"SELECT count(*) FROM {_ident(table)}"):
                        ttx.execute(f"DELETE FROM {_ident(table)}")
                copied: dict[str, _Checksum] = {}
                for table in sorted(columns):
                    try:
                        copied[table] = _copy_table(stx, ttx, table, target_columns[table], progress)
                    except CrmkitError:
                        raise
                    except Exception as exc:  # the database's own error (a value the target refuses): name the table
                        if targets.backend.is_conflict(exc):
                            raise  # Store.write retries a serialization failure from the start
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        raise StoreError(f"Copying table {table} into {targets.path} failed ({first}); "
                                         f"{targets.path} was left unchanged.") from exc
                mismatched = []
                for table in sorted(columns):  # read back inside the target's transaction
                    back = _checksum(ttx, table, [c[0] for c in columns[table]])
                    if (back.rows, back.hex) != (copied[table].rows, copied[table].hex):
                        mismatched.append(f"{table}: {copied[table].rows} rows sent, {back.rows} rows back"
                                          + ("" if back.rows != copied[table].rows else ", checksums differ"))
                    report.tables.append(TableCopy(table, back.rows, back.hex))
                if mismatched:
                    raise catalog_error(StoreError, "error.msg.store_copy_mismatch", source=sources.path,
                                        target=targets.path, problems="; ".join(mismatched))
                report.sequences = _move_sequences(stx, ttx, target_columns)
                report.verified = True

            sources.read(inside)

        dst.write(copy_all, retries=3)
    except BaseException:
        if dst is not None:
            dst.close()
            dst = None
        if created:  # a DuckDB file this call made: a failed copy leaves nothing behind
            for leftover in (Path(target).expanduser(), Path(str(Path(target).expanduser()) + ".wal")):
                with contextlib.suppress(OSError):
                    os.remove(leftover)
        raise
    finally:
        src.close()
        if dst is not None:
            dst.close()
    report.seconds = time.perf_counter() - started
    return report


def _display(location: str) -> str:
    if is_postgres_url(location):
        from .postgres import display_url

        return display_url(location)
    return location
