"""The PostgreSQL backend of :class:`crmkit.store.Store` (``CRMKIT_DB=postgresql://...``), on psycopg 3.

crmkit's SQL is written once, in DuckDB's dialect with ``?`` parameters. What PostgreSQL needs
differently is translated here, and only here (the dialect differences):

- parameters: ``?`` becomes ``%s`` and ``$name`` ``%(name)s``; a literal ``%`` is doubled;
- DDL: DuckDB's ``JSON`` is a text type that checks its input; it maps to ``TEXT``, so documents come
  back byte for byte as written and compare with ``=`` as on DuckDB;
- a DML statement without ``RETURNING`` yields one row holding its row count, as DuckDB's do;
- ``Tx.register(name, frame)`` (a DataFrame queried by name) becomes a temporary table filled by ``COPY``;
- sessions run in UTC, so ``current_timestamp`` stored in a ``TIMESTAMP`` column is naive UTC as on DuckDB.

Connections come from one pool per database URL and process (psycopg_pool), shared by every Store of
that URL. Writes run at REPEATABLE READ, DuckDB's snapshot isolation: a serialization failure or a
deadlock is retried from the start by ``Store.write`` like a DuckDB write-write conflict. Reads run in a
read-only transaction, so no read path can write.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import psycopg
import psycopg.errors
from psycopg import sql as pgsql
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import DatabaseLocked, DatabaseLoginRefused, DatabaseUnavailable, StoreError, catalog_error
from .tx import Tracer, Tx

if TYPE_CHECKING:
    import duckdb

__all__ = ["PgTx", "PostgresBackend", "close_pools", "display_url", "translate"]

CONNECT_TIMEOUT = 10  # seconds for one connection attempt; a server that is down answers at once
POOL_MAX = 8  # connections per database and process; a Voila kernel or a worker needs one or two
_COPY_PIECE = 1 << 20  # bytes per COPY write in copy_frame

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|\$[A-Za-z_]\w*|%|\bJSON\b", re.IGNORECASE)


def translate(sql: str) -> str:
    """DuckDB-dialect SQL with ``?``/``$name`` parameters as psycopg's PostgreSQL SQL (see the module doc)."""

    def one(m: re.Match[str]) -> str:
        piece = m.group(0)
        if piece[0] in "'\"-":  # a literal, a quoted name or a comment stays as it is (its % doubled)
            return piece.replace("%", "%%")
        if piece == "?":
            return "%s"
        if piece == "%":
            return "%%"
        if piece[0] == "$":
            return f"%({piece[1:]})s"
        return "TEXT"  # the JSON type

    return _TOKEN.sub(one, sql)


def display_url(url: str) -> str:
    """The URL as messages and logs may show it: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class _TextLoader(Loader):
    """json/jsonb as the text stored (DuckDB's JSON comes back as text too)."""

    def load(self, data: Any) -> str:
        return bytes(data).decode("utf-8")


class _NumericLoader(Loader):
    """numeric (PostgreSQL's sum of integers) as an int when whole, else a float, like DuckDB's results."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode("ascii"))
        return int(value) if value == value.to_integral_value() else float(value)


def _configure(conn: psycopg.Connection[Any]) -> None:
    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, _TextLoader)
    conn.adapters.register_loader("numeric", _NumericLoader)


def _connect_error(url: str, exc: BaseException) -> StoreError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = display_url(url)
    if "FATAL:" in text:  # the server answered and refused: role, password, database or pg_hba
        return catalog_error(DatabaseLoginRefused, "error.msg.db_login_refused", where=where,
                             detail=text.split("FATAL:", 1)[1].strip())
    return catalog_error(DatabaseUnavailable, "error.msg.db_unavailable", where=where, detail=text)


class PgTx(Tx):
    """A :class:`Tx` on one PostgreSQL connection inside its transaction."""

    dialect = "postgresql"

    def __init__(self, conn: psycopg.Connection[Any], tracer: Tracer | None) -> None:
        super().__init__(conn, tracer)  # type: ignore[arg-type]
        self._pg = conn
        self._registered: set[str] = set()

    @property
    def database(self) -> str:
        """The database's name as the connection knows it (no round trip)."""
        return str(self._pg.info.dbname)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> _Result:  # type: ignore[override]
        if self._tracer is not None:
            self._tracer(sql, params if isinstance(params, Sequence) else list(params.values()))
        cur = self._pg.cursor()
        try:
            cur.execute(translate(sql), params if isinstance(params, dict) else list(params))
        except psycopg.errors.LockNotAvailable as exc:
            raise DatabaseLocked(f"A row lock in {display_url(self._pg.info.dsn)} was held too long: {exc}") from exc
        except psycopg.OperationalError as exc:
            if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected
                          | psycopg.errors.QueryCanceled):
                raise
            raise DatabaseUnavailable(f"The PostgreSQL server stopped answering: {str(exc).strip()}") from exc
        return _Result(cur)

    def df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        return self.execute(sql, params).df()

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """A temporary table ``name`` holding ``frame``, filled by COPY; dropped at commit or unregister."""
        columns = [pgsql.SQL("{} {}").format(pgsql.Identifier(str(c)), pgsql.SQL(_pg_type(frame[c])))
                   for c in frame.columns]
        ident = pgsql.Identifier(name)
        with self._pg.cursor() as cur:
            cur.execute(pgsql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                ident, pgsql.SQL(", ").join(columns)))
            clean = frame.astype(object).where(frame.notna(), None)  # NaN/NA as NULL, not the text 'nan'
            with cur.copy(pgsql.SQL("COPY {} FROM STDIN").format(ident)) as copy:
                for row in clean.itertuples(index=False, name=None):
                    copy.write_row(row)
        self._registered.add(name)

    def copy_frame(self, table: str, frame: pd.DataFrame | duckdb.DuckDBPyRelation) -> int:
        """Append ``frame`` (its columns name ``table``'s) to ``table`` by COPY; returns the rows written.

        The bulk path of demo data and imports: DuckDB writes the rows as CSV (a DataFrame is read through
        a private in-memory DuckDB; a DuckDB relation, e.g. demo data's generated rows, is written as it is),
        fed to COPY in 1 MB pieces. A CSV writer fed to COPY was ~4x faster than ``write_row`` here
        (STACK-NOTES-2, P). DuckDB quotes an empty string (``""``) and leaves NULL empty, which is what
        PostgreSQL's CSV COPY reads back as '' and NULL.
        """
        import duckdb

        local = None
        if isinstance(frame, pd.DataFrame):
            local = duckdb.connect(":memory:")
            frame = local.from_df(frame)
        try:
            columns = pgsql.SQL(", ").join(pgsql.Identifier(str(c)) for c in frame.columns)
            query = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(pgsql.Identifier(table), columns)
            with tempfile.TemporaryDirectory(prefix="crmkit-copy-") as folder:
                path = os.path.join(folder, "rows.csv")
                frame.write_csv(path, header=False)
                with self._pg.cursor() as cur, open(path, "rb") as rows:
                    with cur.copy(query) as copy:
                        while piece := rows.read(_COPY_PIECE):
                            copy.write(piece)
                    return max(cur.rowcount, 0)
        finally:
            if local is not None:
                local.close()

    def unregister(self, name: str) -> None:
        if name in self._registered:
            self._registered.discard(name)
            if self._pg.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                # A failed statement aborted the transaction; its rollback drops the table. A DROP now would
                # raise InFailedSqlTransaction over that error (a serialization failure would not be retried).
                return
            with self._pg.cursor() as cur:
                cur.execute(pgsql.SQL("DROP TABLE IF EXISTS {}").format(pgsql.Identifier(name)))


def _pg_type(column: pd.Series) -> str:
    kind = column.dtype.kind
    if kind == "b" or str(column.dtype) == "boolean":
        return "BOOLEAN"
    if kind in "iu":
        return "BIGINT"
    if kind == "f":
        return "DOUBLE PRECISION"
    if kind == "M":
        return "TIMESTAMP"
    return "TEXT"


# integer columns as DuckDB gives them: SMALLINT int16, INTEGER int32, BIGINT int64 (oid: int64); the capitalised
# (nullable) dtype when a NULL is among the values, as DuckDB's df() does
_INT_DTYPES = {21: "int16", 23: "int32", 20: "int64", 26: "int64"}
_FLOAT_OIDS = {700, 701, 1700}
_BOOL_OID = 16
_TIMESTAMP_OIDS = {1114, 1184}


class _Result:
    """What ``Tx.execute`` returns on PostgreSQL: DuckDB's result methods over a psycopg cursor."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def fetchall(self) -> list[tuple[Any, ...]]:
        if self._cur.description is None:  # DML without RETURNING: its row count, as DuckDB answers
            return [(self._cur.rowcount,)]
        return self._cur.fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._cur.description is None:
            return (self._cur.rowcount,)
        return self._cur.fetchone()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self) -> Any:
        return self._cur.description

    def df(self) -> pd.DataFrame:
        """The rows as a DataFrame with DuckDB's dtypes: int16/int32/int64 by the column's type (Int16/Int32/Int64
        with NULLs), float64, boolean,
        datetime64[us], text as pandas' strings."""
        desc = self._cur.description or []
        names = [d.name for d in desc]
        rows = self._cur.fetchall() if desc else []
        data: dict[str, Any] = {}
        for i, d in enumerate(desc):
            values = [r[i] for r in rows]
            has_null = any(v is None for v in values)
            if d.type_code in _INT_DTYPES:
                dtype = _INT_DTYPES[d.type_code]
                data[names[i]] = pd.array(values, dtype=dtype.capitalize() if has_null else dtype)
            elif d.type_code in _FLOAT_OIDS:
                data[names[i]] = pd.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
            elif d.type_code == _BOOL_OID:
                data[names[i]] = pd.array(values, dtype="boolean") if has_null else pd.array(values, dtype="bool")
            elif d.type_code in _TIMESTAMP_OIDS:
                data[names[i]] = pd.to_datetime(pd.Series(values, dtype=object)).astype("datetime64[us]")
            else:
                data[names[i]] = pd.Series(values, dtype=object) if not rows else pd.Series(values)
        return pd.DataFrame(data, columns=names)


CHECK_AFTER_IDLE_S = 5.0  # a pooled connection unused this long is checked (one round trip) before it is lent


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    """The pool's check on lending a connection: only one idle for :data:`CHECK_AFTER_IDLE_S` or more. The check is
    a round trip (an empty query); lent before every operation it was one of ~10 per record-table page, and a
    connection used a moment ago is alive (a broken one is still found: its next statement raises
    DatabaseUnavailable, and the pool drops it)."""
    if time.monotonic() - getattr(conn, "_crmkit_used", float("-inf")) >= CHECK_AFTER_IDLE_S:
        ConnectionPool.check_connection(conn)


_pools: dict[str, ConnectionPool[Any]] = {}
_pools_lock = threading.Lock()


def _pool(url: str) -> ConnectionPool[Any]:
    """The process's pool for ``url`` (one per database and login)."""
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None or pool.closed:
            pool = ConnectionPool(
                url, min_size=1, max_size=POOL_MAX, open=True, configure=_configure,
                check=_check_idle, name=display_url(url),
                kwargs={"connect_timeout": CONNECT_TIMEOUT, "application_name": "crmkit",
                        "options": "-c TimeZone=UTC"},
            )
            _pools[url] = pool
    return pool


def close_pools(url: str | None = None) -> None:
    """Close the pool of ``url`` (all pools when None): before dropping a database, and at exit."""
    with _pools_lock:
        urls = [url] if url is not None else list(_pools)
        pools = [_pools.pop(u) for u in urls if u in _pools]
    for pool in pools:
        pool.close()


atexit.register(close_pools)


class PostgresBackend:
    """A PostgreSQL database reached through the process's pool for its URL."""

    dialect = "postgresql"
    memory = False

    def __init__(self, url: str, lock_timeout: float) -> None:
        self.url = url
        self.path = display_url(url)
        self.lock_timeout = lock_timeout
        self.lock_waits = 0
        self._local = threading.local()  # read_session(): the connection this thread's reads share
        try:  # one direct attempt first: a server that is down or a refused login gets its own clear error
            with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, application_name="crmkit") as probe:
                probe.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            raise _connect_error(url, exc) from None  # psycopg's chain may repeat the URL
        self._pool = _pool(url)

    def exists(self) -> bool:
        return True  # a server database exists once it can be connected to; migrate() tells empty from foreign

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        shared = getattr(self._local, "conn", None)
        if shared is not None:
            yield shared
            return
        try:
            with self._pool.connection(timeout=self.lock_timeout) as conn:
                yield conn
        except PoolTimeout as exc:
            raise catalog_error(DatabaseLocked, "error.msg.locked", path=self.path,
                                seconds=f"{self.lock_timeout:.0f}") from exc

    @contextmanager
    def transaction(self, *, read_only: bool, tracer: Tracer | None) -> Iterator[Tx]:
        with self._connection() as conn:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()  # a read_session's snapshot ends before each operation
            conn.read_only = read_only
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            tx = PgTx(conn, tracer)
            # lock_timeout is set for the session, and only when it changes (lock_wait, another Store's timeout):
            # a SET LOCAL per transaction was a round trip of its own. A rollback undoes a SET made in its
            # transaction, so the value is recorded only once the transaction committed.
            lock_ms = int(self.lock_timeout * 1000)
            changed = getattr(conn, "_crmkit_lock_ms", None) != lock_ms
            try:
                if changed:
                    conn.execute(f"SET lock_timeout = {lock_ms}")
                yield tx
                conn.commit()
                if changed:
                    conn._crmkit_lock_ms = lock_ms  # type: ignore[attr-defined]
            except BaseException:
                conn._crmkit_lock_ms = None  # type: ignore[attr-defined]
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
                raise
            finally:
                conn._crmkit_used = time.monotonic()  # type: ignore[attr-defined]

    @staticmethod
    def is_conflict(exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected)

    @contextmanager
    def read_session(self) -> Iterator[None]:
        """The reads of this thread inside the block share one pooled connection (one checkout)."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        with self._connection() as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    @contextmanager
    def lock_wait(self, seconds: float) -> Iterator[None]:
        saved = self.lock_timeout
        self.lock_timeout = min(saved, seconds)
        try:
            yield
        finally:
            self.lock_timeout = saved

    def close(self) -> None:
        """Nothing to release per Store: the process's pool serves every Store of this URL."""


def wait_for_server(url: str, seconds: float = 30.0) -> None:
    """Wait until the server of ``url`` accepts a login (for launchers and tests that just started one)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise _connect_error(url, exc) from None
            time.sleep(0.1)
