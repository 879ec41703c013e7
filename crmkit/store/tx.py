"""The statements of one store operation (:class:`Tx`) and the tracer type; shared by both backends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import pandas as pd

__all__ = ["Tracer", "Tx"]

Tracer = Callable[[str, Sequence[Any]], None]


class Tx:
    """The statements of one operation; given to the callable passed to ``Store.write``/``read``.

    SQL is written once, in DuckDB's dialect with ``?`` parameters; ``dialect`` says which database runs
    it, for the few statements that differ (PostgreSQL's Tx, in crmkit.store_postgres, translates the rest).
    """

    dialect = "duckdb"

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
