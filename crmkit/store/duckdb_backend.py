"""The DuckDB backend of :class:`crmkit.store.Store`: a file attached per operation, or an in-memory database."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ..errors import DatabaseLocked, DatabasePathError, NotACrmkitDatabase, StoreError, catalog_error
from .tx import Tracer, Tx

__all__ = ["ALIAS", "DuckDBBackend"]

ALIAS = "crm"


def _is_lock_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


def _is_write_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.TransactionException) and "onflict" in str(exc)


class DuckDBBackend:
    """A DuckDB file attached per operation to one in-memory engine (or an in-memory database)."""

    dialect = "duckdb"

    def __init__(self, raw: str, lock_timeout: float) -> None:
        self.memory = raw == ":memory:"
        self.path = raw if self.memory else str(Path(raw).expanduser().resolve())
        self.lock_timeout = lock_timeout
        self.engine = duckdb.connect(":memory:")
        self._mutex = threading.RLock()
        self.lock_waits = 0
        self.file_attaches = 0
        self._session_depth = 0  # > 0 inside read_session(): reads share one read-only attachment
        self._session_attached = False
        if self.memory:
            self.engine.execute(f"ATTACH ':memory:' AS {ALIAS}")
            self.engine.execute(f"USE {ALIAS}")
        else:
            self._check_path()

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

    def exists(self) -> bool:
        return self.memory or Path(self.path).exists()

    @contextmanager
    def transaction(self, *, read_only: bool, tracer: Tracer | None) -> Iterator[Tx]:
        with self._attached(read_only) as con:
            tx = Tx(con, tracer)
            if read_only:  # a read-only attachment (or a read of the in-memory database) needs no transaction
                yield tx
                return
            tx.execute("BEGIN TRANSACTION")
            try:
                yield tx
                tx.execute("COMMIT")
            except BaseException:
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed statement may already have aborted the transaction
                raise

    @staticmethod
    def is_conflict(exc: BaseException) -> bool:
        return _is_write_conflict(exc)

    # -- attaching ---------------------------------------------------------------------------------

    @contextmanager
    def _attached(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._mutex:
            if self.memory:
                yield self.engine
                return
            if self._session_depth:
                if read_only:  # inside read_session(): attach once, detach when the session ends
                    if not self._session_attached:
                        self._attach(read_only=True)
                        self._session_attached = True
                    yield self.engine
                    return
                self._detach_session()  # a write needs the file writable: re-attach read-only later
            self._attach(read_only)
            try:
                yield self.engine
            finally:
                self._detach()

    def _attach(self, read_only: bool) -> None:
        """ATTACH the file (read-only or writable) and USE it, waiting out another process's lock."""
        mode = " (READ_ONLY)" if read_only else ""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.005
        while True:
            try:
                self.engine.execute(f"ATTACH '{_sql_quote(self.path)}' AS {ALIAS}{mode}")
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
            self.engine.execute(f"USE {ALIAS}")
        except BaseException:
            self._detach()
            raise

    def _detach(self) -> None:
        self.engine.execute("USE memory")
        self.engine.execute(f"DETACH {ALIAS}")

    def _detach_session(self) -> None:
        if self._session_attached:
            self._session_attached = False
            self._detach()

    @contextmanager
    def read_session(self) -> Iterator[None]:
        with self._mutex:
            self._session_depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self._session_depth -= 1
                if not self._session_depth:
                    self._detach_session()

    @contextmanager
    def lock_wait(self, seconds: float) -> Iterator[None]:
        with self._mutex:  # the shortened wait applies to this block's writes only
            saved = self.lock_timeout
            self.lock_timeout = min(saved, seconds)
            try:
                yield
            finally:
                self.lock_timeout = saved

    def close(self) -> None:
        with self._mutex:
            self.engine.close()


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
