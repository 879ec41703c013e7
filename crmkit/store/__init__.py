"""One facade over the record store, with a backend per database: a DuckDB file (the default) or PostgreSQL.

``Store(path)`` takes a file path or ``":memory:"`` (DuckDB) or a ``postgresql://`` URL (PostgreSQL, through
:mod:`crmkit.store.postgres`, loaded only then). Both give the same operations: ``read(fn)``/``write(fn)`` run
``fn`` with a :class:`Tx`, a write in one transaction; the same DataFrames; the same typed errors.

DuckDB lets one process at a time write a database file, and every Voila page is its own kernel
process. So the DuckDB backend never holds the file across user think time: each operation ATTACHes the
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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args

import pandas as pd

from ..errors import ValidationError
from .duckdb_backend import DuckDBBackend
from .tx import Tracer, Tx

if TYPE_CHECKING:
    import duckdb

    from .postgres import PostgresBackend

__all__ = ["DEFAULT_DB", "DuckDBBackend", "Isolation", "Store", "Tracer", "Tx", "default_path", "is_postgres_url"]

DEFAULT_DB = "crm.duckdb"
T = TypeVar("T")
# PostgreSQL's levels a write may ask for (Store.write); REPEATABLE READ, DuckDB's snapshot isolation, is the default.
Isolation = Literal["read committed", "repeatable read", "serializable"]


def default_path() -> str:
    """The database path from ``CRMKIT_DB``, else ``./crm.duckdb``."""
    return os.environ.get("CRMKIT_DB") or DEFAULT_DB


def is_postgres_url(text: str) -> bool:
    """Whether a ``CRMKIT_DB`` value names a PostgreSQL database rather than a DuckDB file."""
    return text.startswith(("postgresql://", "postgres://"))


class Store:
    """crmkit's database, opened per operation: a DuckDB file (or ``":memory:"``) or a PostgreSQL URL.

    Args:
        path: file path, ``":memory:"``, a ``postgresql://`` URL, or None for :func:`default_path`.
        tracer: called with ``(sql, params)`` before every statement; for tests and debugging.
        lock_timeout: seconds to wait for another process's lock (DuckDB's file lock, PostgreSQL's row
            locks and a free pooled connection) before :class:`DatabaseLocked`.

    Raises:
        DatabasePathError: the folder does not exist or the path is a directory.
        NotACrmkitDatabase: the file or database is corrupt, foreign, or from a newer crmkit.
        DatabaseUnavailable, DatabaseLoginRefused: the PostgreSQL server is down or refuses the login.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, tracer: Tracer | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        raw = default_path() if path is None else os.fspath(path)
        self.tracer = tracer
        self.backend: DuckDBBackend | PostgresBackend
        if is_postgres_url(raw):
            from .postgres import PostgresBackend

            self.backend = PostgresBackend(raw, lock_timeout)
        else:
            self.backend = DuckDBBackend(raw, lock_timeout)
        self.dialect = self.backend.dialect
        self.memory = self.backend.memory
        self.path = self.backend.path  # what messages name: the file, or the URL without its password
        from ..migrations import migrate

        self.applied_migrations = migrate(self)

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    @property
    def lock_timeout(self) -> float:
        return self.backend.lock_timeout

    @property
    def lock_waits(self) -> int:
        """How often another process's lock was waited out; for tests and benches."""
        return self.backend.lock_waits

    @property
    def file_attaches(self) -> int:
        """How often the DuckDB file was attached (0 on PostgreSQL); for tests and benches."""
        return getattr(self.backend, "file_attaches", 0)

    @property
    def _engine(self) -> duckdb.DuckDBPyConnection:  # the DuckDB backend's engine, for tests that count attaches
        return self.backend.engine  # type: ignore[union-attr]

    @_engine.setter
    def _engine(self, engine: Any) -> None:
        self.backend.engine = engine  # type: ignore[union-attr]

    def exists(self) -> bool:
        """Whether the database holds anything yet (an existing file; any table on PostgreSQL)."""
        return self.backend.exists()

    @contextmanager
    def read_session(self) -> Iterator[Store]:
        """Let the reads inside this block share one read-only connection or attachment.

        For a burst of reads such as building a page: on DuckDB one ATTACH instead of one per read. The
        file is detached when the block ends, so do not keep it open across user think time (another
        process may want to write). Writes inside the block still work: they attach the file
        writable on their own, and the next read attaches it read-only again. Nests; other threads'
        operations wait for each statement as before (the store's lock).
        """
        with self.backend.read_session():
            yield self

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` with a read-only view of the database."""
        with self.backend.transaction(read_only=True, tracer=self.tracer) as tx:
            return fn(tx)

    @contextmanager
    def lock_wait(self, seconds: float) -> Iterator[None]:
        """Within the block, writes wait at most ``seconds`` for a lock (other threads wait for the block)."""
        with self.backend.lock_wait(seconds):
            yield

    def write(self, fn: Callable[[Tx], T], *, retries: int = 20, isolation: Isolation | None = None) -> T:
        """Run ``fn`` in one transaction: all of it commits, or nothing does.

        A write-write conflict (DuckDB's, or PostgreSQL's serialization failure or deadlock) is retried
        from the start; DuckDB's file lock of another process is waited out while attaching.

        ``isolation``: PostgreSQL runs this transaction (each attempt) at that level instead of REPEATABLE READ,
        e.g. ``"read committed"`` for a claim with ``FOR UPDATE SKIP LOCKED`` (a row another claimer committed
        meanwhile is re-checked against the WHERE instead of failing the claim); DuckDB has one level and
        ignores it.

        Raises:
            ValidationError: ``isolation`` is not one of :data:`Isolation`'s levels (nothing ran).
        """
        if isolation is not None and isolation not in get_args(Isolation):
            raise ValidationError(f"isolation must be one of {', '.join(get_args(Isolation))}, not {isolation!r}.")
        level = isolation.upper() if isolation is not None and self.dialect == "postgresql" else None
        attempt = 0
        while True:
            try:
                with self.backend.transaction(read_only=False, tracer=self.tracer) as tx:
                    if level is not None:  # before the first query of each attempt (the backend's SET LOCAL is none)
                        tx.execute(f"SET TRANSACTION ISOLATION LEVEL {level}")
                    return fn(tx)
            except BaseException as exc:
                if self.backend.is_conflict(exc) and attempt < retries:
                    attempt += 1
                    time.sleep(0.01 * attempt * (0.5 + random.random()))  # noqa: S311 - jitter, not security
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
        self.backend.close()
