"""One facade over the DuckDB record store.

DuckDB lets one process at a time write a database file, and every Voila page is its own kernel
process. So the store never holds the file across user think time: each operation ATTACHes the
file to a long-lived in-memory engine, runs, and DETACHes it, which releases the lock. (Creating a
DuckDB instance costs ~40 ms here; ATTACH + query + DETACH costs ~4 ms.) A lock held by another
process is waited out with backoff instead of surfacing.

Reads attach READ_ONLY, so many readers share the file and an analyst's SQL cannot write.

A page that makes several reads in a row (a dashboard's build) wraps them in
:meth:`Store.read_session`: the file is attached read-only once for all of them and detached when
the block ends, so the lock is still never held across user think time.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd

from .errors import DatabaseLocked, DatabasePathError, NotACrmkitDatabase, StoreError, catalog_error

__all__ = ["DEFAULT_DB", "Store", "Tracer", "Tx", "default_path"]

DEFAULT_DB = "crm.duckdb"
ALIAS = "crm"

Tracer = Callable[[str, Sequence[Any]], None]
T = TypeVar("T")


def default_path() -> str:
    """The database path from ``CRMKIT_DB``, else ``./crm.duckdb``."""
    return os.environ.get("CRMKIT_DB") or DEFAULT_DB


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def _is_write_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.TransactionException) and "onflict" in str(exc)


class Tx:
    """The statements of one operation; given to the callable passed to ``Store.write``/``read``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, tracer: Tracer | None) -> None:
        self._con = con
        self._tracer = tracer

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> duckdb.DuckDBPyConnection:
        if self._tracer is not None:
            self._tracer(sql, params if isinstance(params, Sequence) else list(params.values()))
        return self._con.execute(sql, params)

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self.execute(sql, params).df()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """First column of the first row, or None."""
        rows = self.execute(sql, params).fetchall()  # fetch all: a half-read result blocks register()
        return rows[0][0] if rows else None

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """Make a DataFrame queryable by name (bulk loads insert from it in one statement)."""
        self._con.register(name, frame)

    def unregister(self, name: str) -> None:
        self._con.unregister(name)


class Store:
    """A DuckDB file (or ``":memory:"``) with crmkit's schema, opened per operation.

    Args:
        path: file path, ``":memory:"``, or None for :func:`default_path`.
        tracer: called with ``(sql, params)`` before every statement; for tests and debugging.
        lock_timeout: seconds to wait for another process's lock before :class:`DatabaseLocked`.

    Raises:
        DatabasePathError: the folder does not exist or the path is a directory.
        NotACrmkitDatabase: the file is corrupt, not DuckDB, or a DuckDB file of something else.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, tracer: Tracer | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        raw = default_path() if path is None else os.fspath(path)
        self.memory = raw == ":memory:"
        self.path = raw if self.memory else str(Path(raw).expanduser().resolve())
        self.tracer = tracer
        self.lock_timeout = lock_timeout
        self._engine = duckdb.connect(":memory:")
        self._mutex = threading.RLock()
        self.lock_waits = 0  # how often another process's lock was waited out; for tests and benches
        self.file_attaches = 0  # how often the file was attached; for tests and benches
        self._session_depth = 0  # > 0 inside read_session(): reads share one read-only attachment
        self._session_attached = False
        if self.memory:
            self._engine.execute(f"ATTACH ':memory:' AS {ALIAS}")
            self._engine.execute(f"USE {ALIAS}")
        else:
            self._check_path()
        from .migrations import migrate

        self.applied_migrations = migrate(self)

    def _check_path(self) -> None:
        p = Path(self.path)
        if p.is_dir():
            raise DatabasePathError(f"{self.path} is a folder; give the path of a database file inside it.")
        if not p.parent.is_dir():
            raise DatabasePathError(
                f"The folder {p.parent} does not exist; create it first or choose another path "
                "(CRMKIT_DB or crmkit.open(path=...))."
            )
        if p.exists() and not os.access(p, os.R_OK):
            raise DatabasePathError(f"{self.path} is not readable by this user; check its permissions.")

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    # -- attaching ---------------------------------------------------------------------------------

    @contextmanager
    def _attached(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._mutex:
            if self.memory:
                yield self._engine
                return
            if self._session_depth:
                if read_only:  # inside read_session(): attach once, detach when the session ends
                    if not self._session_attached:
                        self._attach(read_only=True)
                        self._session_attached = True
                    yield self._engine
                    return
                self._detach_session()  # a write needs the file writable: re-attach read-only later
            self._attach(read_only)
            try:
                yield self._engine
            finally:
                self._detach()

    def _attach(self, read_only: bool) -> None:
        """ATTACH the file (read-only or writable) and USE it, waiting out another process's lock."""
        mode = " (READ_ONLY)" if read_only else ""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                self._engine.execute(f"ATTACH '{_sql_quote(self.path)}' AS {ALIAS}{mode}")
                break
            except duckdb.IOException as exc:
                if _is_lock_conflict(exc):
                    if time.monotonic() > deadline:
                        raise catalog_error(DatabaseLocked, "error.msg.locked", path=self.path,
                                            seconds=f"{self.lock_timeout:.0f}") from exc
                    self.lock_waits += 1
                    time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not security
                    delay = min(delay * 2, 0.25)
                    continue
                raise _open_error(self.path, exc) from exc
            except duckdb.Error as exc:
                raise _open_error(self.path, exc) from exc
        self.file_attaches += 1
        try:
            self._engine.execute(f"USE {ALIAS}")
        except BaseException:
            self._detach()
            raise

    def _detach(self) -> None:
        self._engine.execute("USE memory")
        self._engine.execute(f"DETACH {ALIAS}")

    def _detach_session(self) -> None:
        if self._session_attached:
            self._session_attached = False
            self._detach()

    @contextmanager
    def read_session(self) -> Iterator[Store]:
        """Let the reads inside this block share one read-only attachment of the file.

        For a burst of reads such as building a page: one ATTACH instead of one per read. The file
        is detached when the block ends, so do not keep it open across user think time (another
        process may want to write). Writes inside the block still work: they attach the file
        writable on their own, and the next read attaches it read-only again. Nests; other threads'
        operations wait for each statement as before (the store's lock).
        """
        with self._mutex:
            self._session_depth += 1
        try:
            yield self
        finally:
            with self._mutex:
                self._session_depth -= 1
                if not self._session_depth:
                    self._detach_session()

    # -- public operations ---------------------------------------------------------------------------

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` with a read-only view of the database."""
        with self._attached(read_only=True) as con:
            return fn(Tx(con, self.tracer))

    @contextmanager
    def lock_wait(self, seconds: float) -> Iterator[None]:
        """Within the block, writes wait at most ``seconds`` for a lock (other threads wait for the block)."""
        with self._mutex:  # the shortened wait applies to this block's writes only
            saved = self.lock_timeout
            self.lock_timeout = min(saved, seconds)
            try:
                yield
            finally:
                self.lock_timeout = saved

    def write(self, fn: Callable[[Tx], T], *, retries: int = 20) -> T:
        """Run ``fn`` in one transaction: all of it commits, or nothing does.

        A write-write conflict inside this process is retried; the file lock of another process
        is waited out while attaching.
        """
        attempt = 0
        while True:
            with self._attached(read_only=False) as con:
                tx = Tx(con, self.tracer)
                tx.execute("BEGIN TRANSACTION")
                try:
                    result = fn(tx)
                    tx.execute("COMMIT")
                    return result
                except BaseException as exc:
                    try:
                        con.execute("ROLLBACK")
                    except duckdb.Error:
                        pass  # the failed statement may already have aborted the transaction
                    if _is_write_conflict(exc) and attempt < retries:
                        attempt += 1
                        time.sleep(0.01 * attempt)
                        continue
                    raise

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """A read-only query as a DataFrame."""
        return self.read(lambda tx: tx.df(sql, params))

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.read(lambda tx: tx.one(sql, params))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One write statement in its own transaction."""
        self.write(lambda tx: tx.execute(sql, params) and None)

    def close(self) -> None:
        with self._mutex:
            self._engine.close()


def _sql_quote(text: str) -> str:
    return text.replace("'", "''")


def _open_error(path: str, exc: BaseException) -> StoreError:
    text = str(exc)
    if ("not a valid DuckDB database" in text or "Corrupt" in text or "checksum" in text.lower()
            or "Could not read enough bytes" in text):  # a truncated file
        return NotACrmkitDatabase(
            f"{path} is not a readable crmkit database ({text.splitlines()[0]}). "
            "Point CRMKIT_DB at a crmkit database, or run `crmkit init --db NEW_PATH` for a new one."
        )
    if "newer" in text.lower() or "version" in text.lower():
        return NotACrmkitDatabase(f"{path} was written by a newer DuckDB/crmkit; upgrade crmkit to open it.")
    if "Permission denied" in text or "Read-only file system" in text:
        return DatabasePathError(f"{path} cannot be opened for writing here ({text}); check its permissions.")
    return StoreError(f"Could not open {path}: {text}")
