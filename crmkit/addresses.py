"""Addresses: their columns, the queries (filter, search, paging), the writes and the search word index.

The session (:class:`crmkit.crm.CRM`) delegates its address methods here. These functions take only
what they need - the store, and for a write the user's name - and import no session or feature
module, so a service, a view model or a bulk load can use them without ``crmkit.crm``
(``tests/core/test_addresses_imports.py``).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from . import sql_filter
from .errors import NotFound, ValidationError, catalog_error
from .text_rules import check_text

if TYPE_CHECKING:
    from .store import Store, Tx

__all__ = [
    "ADDRESS_COLUMNS",
    "ADDRESS_FIELDS",
    "ADDRESS_KINDS",
    "MAX_PAGE",
    "SEARCHED_COLUMNS",
    "add_address",
    "address",
    "address_filter",
    "address_page",
    "addresses",
    "check_id",
    "count_addresses",
    "index_addresses",
    "rebuild_search_index",
    "run_filter",
    "search_terms",
    "update_address",
    "words_sql",
    "write_new",
]

T = TypeVar("T")

# Columns a caller may set on an address; the rest (id, created/modified) the core maintains.
ADDRESS_FIELDS = (
    "parent_id", "kind", "company", "salutation", "title", "first_name", "last_name", "department",
    "street", "postal_code", "city", "country", "phone", "email", "owner",
)
ADDRESS_COLUMNS = ("id", *ADDRESS_FIELDS, "created_by", "created_at", "modified_by", "modified_at")
ADDRESS_KINDS = ("company", "person")
MAX_PAGE = 10_000


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def addresses(
    store: Store, /, where: str | None = None, params: Sequence[Any] = (), *, search: str | None = None,
    columns: Sequence[str] | None = None, order_by: str = "id", limit: int | None = None,
    offset: int = 0, **filters: Any,
) -> pd.DataFrame:
    """Addresses as a DataFrame.

    Args:
        where: an analyst's SQL WHERE expression over the address columns with ``?`` placeholders,
            run read-only (what it may contain: :mod:`crmkit.sql_filter`).
        params: values for the placeholders in ``where``.
        search: case-insensitive text found in company, name, city or e-mail.
        columns: the columns to return (default all).
        order_by: a column name, optionally followed by ``desc``.
        limit, offset: paging.
        **filters: column=value equality filters (a list or tuple means IN).

    Raises:
        ValidationError: unknown column, bad paging.
        UnsafeQuery: ``where`` reaches beyond the address columns (a subquery, another table, a
            function not on the list), leaves its parentheses, or runs more than one statement.
    """
    clause, values = address_filter(store, where, params, search, filters)
    cols = ", ".join(_check_columns(columns or ADDRESS_COLUMNS))
    order = _check_order(order_by)
    page = ""
    if limit is not None:
        if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE or not isinstance(offset, int) or offset < 0:
            raise ValidationError(f"limit must be 1..{MAX_PAGE} and offset ≥ 0.")
        page = f" LIMIT {limit} OFFSET {offset}"
    sql = f"SELECT {cols} FROM addresses{clause} ORDER BY {order}{page}"
    return store.read(lambda tx: run_filter(tx, sql, values))


def count_addresses(
    store: Store, /, where: str | None = None, params: Sequence[Any] = (), *, search: str | None = None,
    **filters: Any,
) -> int:
    """How many addresses match; the filters of :func:`addresses`."""
    clause, values = address_filter(store, where, params, search, filters)
    sql = f"SELECT count(*) FROM addresses{clause}"
    return int(store.read(lambda tx: run_filter(tx, sql, values, scalar=True)))


def address_page(
    store: Store, /, page: int = 0, size: int = 25, *, where: str | None = None, params: Sequence[Any] = (),
    search: str | None = None, order_by: str = "id", columns: Sequence[str] | None = None, **filters: Any,
) -> tuple[pd.DataFrame, int]:
    """One page of addresses and the total count, in one attach (what a record table shows)."""
    clause, values = address_filter(store, where, params, search, filters)
    if not isinstance(size, int) or not 0 < size <= MAX_PAGE or not isinstance(page, int) or page < 0:
        raise ValidationError(f"page must be ≥ 0 and size 1..{MAX_PAGE}.")
    cols = ", ".join(_check_columns(columns or ADDRESS_COLUMNS))
    order = _check_order(order_by)
    keys = ", ".join(dict.fromkeys([str(order_by).split()[0], "id"]))
    if store.dialect == "postgresql":
        hint = (store.path, clause, order, tuple(values))
        return store.read(lambda tx: _pg_page(tx, clause, values, cols, order, keys, size, page * size, hint))
    # Filter once into (sort key, id), page over that narrow set, then fetch only the page's rows:
    # sorting every column of every match made deep pages cost ~1 s at 1M addresses.
    sql = (
        f"WITH hits AS MATERIALIZED (SELECT {keys} FROM addresses{clause}), "
        f"page AS (SELECT id FROM hits ORDER BY {order} LIMIT {size} OFFSET {page * size}) "
        f"SELECT (SELECT count(*) FROM hits) AS _total, {cols} FROM addresses "
        f"WHERE id IN (SELECT id FROM page) ORDER BY {order}"
    )

    def run(tx: Tx) -> tuple[pd.DataFrame, int]:
        frame = run_filter(tx, sql, values)
        if frame.empty:  # past the last page: the count still matters to the caller
            total = run_filter(tx, f"SELECT count(*) FROM addresses{clause}", values, scalar=True)
            return frame.drop(columns="_total"), int(total)
        return frame.drop(columns="_total").reset_index(drop=True), int(frame["_total"].iloc[0])

    return store.read(run)


# The last total seen per filter (store, clause, order, values) in this process: only which end a page is read
# from follows it (a page in the back half is read from the end), never what the page holds, which the statement
# checks against the total of its own snapshot.
_TOTALS: dict[tuple[Any, ...], int] = {}
_TOTALS_KEPT = 256


def _pg_page(tx: Tx, clause: str, values: list[Any], cols: str, order: str, keys: str, size: int,
             offset: int, hint: tuple[Any, ...]) -> tuple[pd.DataFrame, int]:
    """PostgreSQL's page and its total, in one statement where it can (each statement was a round trip that a
    loaded machine stretched; a page cost ~10 of them).

    - A search: its hits (the word index, migration 12) once into (sort key, id), the total and the page from
      that, as DuckDB's page query does; the count and the page each ran the word lookup before.
    - Otherwise the page's ids in sort order (an index-only scan of the record table's indexes, migration 12:
      (city, id), (city, last_name, id), the primary key; materialising every match made PostgreSQL scan and
      sort them all: 180 ms for 1,000,000 addresses, 3 ms this way), the total beside them: the trigger-kept
      ``address_count`` without a filter (count(*) cost ~50 ms at 1,000,000), else count(*). A page in the back
      half is read from the end in reverse order (OFFSET 999,975 walked the index ~33 ms, its mirror from the
      end 0.3 ms); which half it is in follows the total last seen for this filter (``_TOTALS``), and the rows
      are taken only if the statement's own total still equals it.
    - No rows (no hits, past the end, or the total changed): the total on its own, then the page as before.
    """
    _pg_prepare_filter(tx)
    words = _pg_words_only(clause, order)
    if words is not None or " JOIN (" in clause:  # a search: its hits once, then their total and the page
        # a search alone, in id order, takes its hits from the word index without the addresses (migration 13)
        hits = f"SELECT address_id AS id FROM ({words}) AS _w" if words is not None else \
            f"SELECT {keys} FROM addresses{clause}"
        sql = (f"WITH hits AS MATERIALIZED ({hits}), "
               f"page AS (SELECT id FROM hits ORDER BY {order} LIMIT {size} OFFSET {offset}) "
               f"SELECT (SELECT count(*) FROM hits) AS _total, {cols} FROM addresses "
               f"WHERE id IN (SELECT id FROM page) ORDER BY {order}")
        frame = run_filter(tx, sql, values, prepared=True)
        check = ""
    else:
        count = f"SELECT count(*) AS n FROM addresses{clause}" if clause else "SELECT n FROM address_count"
        count_values = values if clause else []
        known = _TOTALS.get(hint)
        check = ""
        pick, skip, take = order, offset, size
        if known is not None and known > offset and offset * 2 > known:
            pick, skip, take = _reversed_order(order), max(known - offset - size, 0), min(size, known - offset)
            check = f" AND (SELECT n FROM total) = {int(known)}"
        sql = (f"WITH total AS MATERIALIZED ({count}) SELECT (SELECT n FROM total) AS _total, {cols} FROM addresses "
               f"WHERE id IN (SELECT addresses.id FROM addresses{clause} ORDER BY {pick} LIMIT {take} OFFSET {skip})"
               f"{check} ORDER BY {order}")
        frame = run_filter(tx, sql, [*count_values, *values], prepared=True)
    if not frame.empty or (offset == 0 and not check):  # no rows from the first page: nothing matches
        total = int(frame["_total"].iloc[0]) if not frame.empty else 0
        _remember(hint, total)
        return frame.drop(columns="_total").reset_index(drop=True), total
    # the exact path: the total first, then the page from the end it is nearer to
    if clause:
        total = int(run_filter(tx, f"SELECT count(*) FROM addresses{clause}", values, scalar=True, prepared=True))
    else:
        total = int(run_filter(tx, "SELECT n FROM address_count", [], scalar=True, prepared=True))
    _remember(hint, total)
    pick, skip, take = order, offset, size
    if offset * 2 > total and offset < total:
        pick, skip, take = _reversed_order(order), max(total - offset - size, 0), min(size, total - offset)
    sql = (f"SELECT {cols} FROM addresses WHERE id IN (SELECT addresses.id FROM addresses{clause} "
           f"ORDER BY {pick} LIMIT {take} OFFSET {skip}) ORDER BY {order}")
    frame = run_filter(tx, sql, values, prepared=True)
    return frame.reset_index(drop=True), total


_WORDS_JOIN = (" JOIN (", ") AS _hits ON addresses.id = _hits.address_id")


def _pg_words_only(clause: str, order: str) -> str | None:
    """The word-index query of ``clause`` (:func:`address_filter`'s) when the clause is a search and nothing else
    and the order is by id alone, else None. On PostgreSQL the word index holds only existing addresses (migration
    13's triggers drop a deleted one's words), so these hits need no join to the addresses."""
    start, end = _WORDS_JOIN
    if order.split()[0] != "id" or "," in order or not (clause.startswith(start) and clause.endswith(end)):
        return None
    inner = clause[len(start):-len(end)]
    return None if ") AS _hits" in inner else inner


def _remember(hint: tuple[Any, ...], total: int) -> None:
    _TOTALS.pop(hint, None)
    if len(_TOTALS) >= _TOTALS_KEPT:
        _TOTALS.pop(next(iter(_TOTALS)))  # the oldest
    _TOTALS[hint] = total


def _reversed_order(order: str) -> str:
    """``order`` (from :func:`_check_order`) backwards: each key's direction flipped (NULLs move with it)."""
    keys = []
    for key in order.split(", "):
        name, _, direction = key.partition(" ")
        keys.append(f"{name} {'ASC' if direction.lower() == 'desc' else 'DESC'}")
    return ", ".join(keys)


def address_filter(
    store: Store, where: str | None, params: Sequence[Any], search: str | None, filters: Mapping[str, Any]
) -> tuple[str, list[Any]]:
    """The FROM tail (search join + WHERE) and its values for :func:`addresses`' filters, all checked."""
    parts: list[str] = []
    values: list[Any] = []
    for name, value in filters.items():
        _check_columns([name])
        if isinstance(value, (list, tuple, set, frozenset)):
            if not value:
                parts.append("FALSE")
                continue
            parts.append(f"{name} IN ({', '.join('?' * len(value))})")
            values.extend(value)
        elif value is None:
            parts.append(f"{name} IS NULL")
        else:
            parts.append(f"{name} = ?")
            values.append(value)
    join, join_values = "", []
    if search:
        if not isinstance(search, str):
            raise ValidationError("search takes text.")
        # Every word of the search must start a word of the address (company, names, city, e-mail),
        # looked up in the sorted word index: a range scan instead of ILIKE over every row. An inner
        # join on the (small) set of hits is ~8x faster in DuckDB than `id IN (subquery)`.
        terms = list(dict.fromkeys(search_terms(search)))
        if terms and store.dialect == "postgresql":
            # A prefix LIKE is what PostgreSQL's text_pattern_ops index (migration 12) serves, whatever the
            # database's collation; a range compares by that collation, where 'mü' < x < 'mv' is no prefix
            # test. The terms are letters and digits only (search_terms), so hold no LIKE wildcard.
            hits = " INTERSECT ".join("SELECT address_id FROM address_words WHERE word LIKE ?" for _ in terms)
            join_values = [f"{term}%" for term in terms]
        elif terms:
            hits = " INTERSECT ".join(
                "SELECT address_id FROM address_words WHERE word >= ? AND word < ?" for _ in terms)
            join_values = [v for term in terms for v in (term, _prefix_end(term))]
        if terms:
            join = f" JOIN ({hits}) AS _hits ON addresses.id = _hits.address_id"
    if where is not None:
        # address columns only; on PostgreSQL the text it runs there (a few DuckDB names renamed)
        runs = sql_filter.check(where, sql_filter.address_columns(store), store.dialect)
        if not isinstance(params, (list, tuple)):
            raise catalog_error(ValidationError, "error.msg.filter_params")
        parts.append(f"({runs})")
        values.extend(params)
    if join and len(terms) == 1:
        join = join.replace("SELECT address_id", "SELECT DISTINCT address_id")  # INTERSECT is distinct
    return join + (" WHERE " + " AND ".join(parts) if parts else ""), [*join_values, *values]


def run_filter(tx: Tx, sql: str, values: list[Any], *, scalar: bool = False, prepared: bool = False) -> Any:
    """Run a query built on :func:`address_filter` (a frame, or one value); the database's errors become typed
    ones. On PostgreSQL it runs under ``statement_timeout`` (:data:`crmkit.sql_filter.STATEMENT_TIMEOUT_SECONDS`)
    and, where crmkit's database roles are synced, as the filter role, which can read the address columns and
    nothing else (crmkit.store.pg_roles): the database's guard behind the allow-list of the parse tree.
    ``prepared``: the caller ran :func:`_pg_prepare_filter` in this transaction already."""
    try:
        if tx.dialect == "postgresql" and not prepared:
            _pg_prepare_filter(tx)
        return tx.one(sql, values) if scalar else tx.df(sql, values)
    except Exception as exc:
        # Binder, catalog, conversion … errors of a checked filter (wrong argument types, a value that
        # does not cast, a missing parameter) are bad input; a write the read-only attach stopped is unsafe.
        typed = sql_filter.run_error(exc)
        if typed is None:
            raise
        raise typed from exc


def _pg_prepare_filter(tx: Tx) -> None:
    """PostgreSQL, before a filter's statements in a transaction, in one statement with the switch to the filter
    role (pg_roles.enter_filter_role): the statement timeout, no JIT (compiling a page query cost more, 20-80 ms,
    than running it) and no parallel workers (a page is an index walk; two more processes per query only
    competed with the sessions for the cores: a broad search 238 ms with them, 209 without). They were three to
    four round trips, twice per page."""
    if tx.dialect != "postgresql":
        return
    from .store.pg_roles import enter_filter_role

    enter_filter_role(tx, {"statement_timeout": str(int(sql_filter.STATEMENT_TIMEOUT_SECONDS * 1000)),
                           "jit": "off", "max_parallel_workers_per_gather": "0"})


def address(store: Store, address_id: int) -> dict[str, Any]:
    """One address as a dict; :class:`NotFound` when there is none."""
    frame = addresses(store, id=check_id(address_id))
    if frame.empty:
        raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
    return {k: (None if _isna(v) else v) for k, v in frame.iloc[0].to_dict().items()}


def add_address(store: Store, user_name: str, /, **fields: Any) -> int:
    """Create an address as ``user_name``; returns its id."""
    data = _clean_address(fields, creating=True)

    def run(tx: Tx) -> int:
        if data.get("parent_id") is not None and not tx.one(
            "SELECT count(*) FROM addresses WHERE id = ?", [data["parent_id"]]
        ):
            raise ValidationError(f"parent_id {data['parent_id']} is not an address.")
        new_id = int(tx.one("SELECT coalesce(max(id), 0) + 1 FROM addresses"))
        now = _now()
        row = {**data, "id": new_id, "created_by": user_name, "created_at": now,
               "modified_by": user_name, "modified_at": now}
        names = list(row)
        tx.execute(
            f"INSERT INTO addresses ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [row[n] for n in names],
        )
        index_addresses(tx, "id = ?", [new_id])
        return new_id

    return write_new(store, run)


def write_new(store: Store, run: Callable[[Tx], T], *, attempts: int = 20) -> T:
    """``store.write(run)`` for a transaction that numbers new rows ``max(id) + 1`` (addresses, contacts).

    DuckDB lets one process write at a time, so two of them never see the same maximum. PostgreSQL runs
    them side by side on snapshots: both take the same id, and when the first commits the second one's
    INSERT hits the primary key (UniqueViolation, not a serialization failure). Such a transaction is run
    again from the start on a new snapshot, which sees the first one's rows; any other duplicate is raised.
    """
    if store.dialect != "postgresql":
        return store.write(run)
    import psycopg.errors

    for attempt in range(1, attempts + 1):
        try:
            return store.write(run)
        except psycopg.errors.UniqueViolation as exc:
            if attempt == attempts or not str(exc.diag.constraint_name or "").endswith("_pkey"):
                raise
            time.sleep(0.01 * attempt * (0.5 + random.random()))  # noqa: S311 - jitter, not security
    raise AssertionError("not reached")


def update_address(store: Store, user_name: str, /, address_id: int, **fields: Any) -> None:
    """Change fields of an address; records who (``user_name``) and when."""
    data = _clean_address(fields, creating=False)
    address_id = check_id(address_id)

    def run(tx: Tx) -> None:
        if not tx.one("SELECT count(*) FROM addresses WHERE id = ?", [address_id]):
            raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
        sets = ", ".join(f"{k} = ?" for k in data)
        tx.execute(
            f"UPDATE addresses SET {sets}, modified_by = ?, modified_at = ? WHERE id = ?",
            [*data.values(), user_name, _now(), address_id],
        )
        if set(data) & set(SEARCHED_COLUMNS):
            tx.execute("DELETE FROM address_words WHERE address_id = ?", [address_id])
            index_addresses(tx, "id = ?", [address_id])

    store.write(run)



# -- the search word index ---------------------------------------------------------------------------

SEARCHED_COLUMNS = ("company", "first_name", "last_name", "city", "email")
_WORD_SPLIT = r"[^\p{L}\p{N}]+"  # RE2: any run of characters that are not letters or digits
# PostgreSQL's regex classes follow the database's character type: a UTF-8 locale (C.UTF-8, de_DE.UTF-8)
# counts ü or ß as letters, as RE2's \p{L} does.
_PG_WORD_SPLIT = "[^[:alnum:]]+"
# DuckDB's strip_accents decomposes and drops the combining marks; PostgreSQL (no extension needed; unaccent
# would also turn ß into ss and ø into o, which DuckDB keeps): NFD, drop the combining-mark blocks, NFC.
_PG_MARKS = r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"


def words_sql(where: str = "TRUE", dialect: str = "duckdb", table: str = "addresses") -> str:
    """SELECT (word, address_id) for the addresses matching ``where``: lower-case words, each also
    without accents, so "muller" finds "Müller". The same words on both databases, in each one's functions.

    ``table``: where the address rows are (a bulk load's staging table; default the addresses)."""
    text = f"lower(concat_ws(' ', {', '.join(SEARCHED_COLUMNS)}))"
    if dialect == "postgresql":
        stripped = f"normalize(regexp_replace(normalize(s.w, NFD), '{_PG_MARKS}', '', 'g'), NFC)"
        return (
            "SELECT DISTINCT v.w AS word, a.id AS address_id "
            f"FROM (SELECT id, {text} AS t FROM {table} WHERE {where}) AS a "
            f"CROSS JOIN LATERAL regexp_split_to_table(a.t, '{_PG_WORD_SPLIT}') AS s(w) "
            # the accent-free spelling only of words that have a non-ASCII letter (byte length > length)
            f"CROSS JOIN LATERAL (SELECT s.w UNION ALL SELECT {stripped} "
            "WHERE octet_length(s.w) <> length(s.w)) AS v(w) WHERE v.w <> ''"
        )
    return (
        "SELECT DISTINCT w AS word, id AS address_id FROM ("
        "  SELECT id, unnest(list_distinct(list_concat(ws, list_transform(ws, lambda x: strip_accents(x))))) AS w"
        f"  FROM (SELECT id, string_split_regex({text}, "
        f"'{_WORD_SPLIT}') AS ws FROM {table} WHERE {where})) WHERE w <> ''"
    )


def index_addresses(tx: Tx, where: str, params: Sequence[Any] = ()) -> None:
    """Add the search words of the addresses matching ``where`` (inside the caller's transaction)."""
    tx.execute(f"INSERT INTO address_words {words_sql(where, tx.dialect)}", params)


def rebuild_search_index(tx: Tx) -> None:
    """Rebuild the whole word index in word order, so a prefix lookup reads only a few row groups.

    Bulk loads call this once at the end instead of indexing row by row.
    """
    tx.execute("DELETE FROM address_words")
    tx.execute(f"INSERT INTO address_words SELECT * FROM ({words_sql(dialect=tx.dialect)}) AS w ORDER BY word")


def search_terms(text: str) -> list[str]:
    """The words of a search text, as the index stores them."""
    return [w for w in re.split(r"[\W_]+", text.lower()) if w]


def _prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)



# -- validation helpers ------------------------------------------------------------------------------


def check_id(value: Any) -> int:
    # numpy integers come out of DataFrames; bools are ints to Python but never ids.
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValidationError(f"An address id is an integer, not {value!r}.")
    return int(value.__index__())


def _check_columns(columns: Iterable[str]) -> list[str]:
    cols = list(columns)
    bad = [c for c in cols if c not in ADDRESS_COLUMNS]
    if bad:
        raise ValidationError(f"Unknown address columns {bad}; known: {', '.join(ADDRESS_COLUMNS)}.")
    return cols


def _check_order(order_by: str) -> str:
    parts = str(order_by).split()
    if not parts or len(parts) > 2 or parts[0] not in ADDRESS_COLUMNS or (
        len(parts) == 2 and parts[1].lower() not in ("asc", "desc")
    ):
        raise ValidationError(f"order_by must be a column, optionally followed by asc/desc; got {order_by!r}.")
    return " ".join(parts) + ("" if parts[0] == "id" else ", id")


def _clean_address(fields: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    unknown = set(fields) - set(ADDRESS_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown address fields {sorted(unknown)}; known: {', '.join(ADDRESS_FIELDS)}.")
    data: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "parent_id":
            data[key] = None if value is None else check_id(value)
        elif value is None or isinstance(value, str):
            if isinstance(value, str) and len(value) > 500:
                raise ValidationError(f"{key} is longer than 500 characters.")
            # Every address field is one line (the display format shows one line per field).
            data[key] = check_text(value.strip(), key) if isinstance(value, str) else None
        else:
            raise ValidationError(f"{key} takes text, not {type(value).__name__}.")
    if creating:
        data.setdefault("kind", "person" if data.get("last_name") else "company")
    if "kind" in data and data["kind"] not in ADDRESS_KINDS:
        raise ValidationError(f"kind must be one of {ADDRESS_KINDS}.")
    if creating and not (data.get("company") or data.get("last_name")):
        raise ValidationError("An address needs a company or a last name.")
    if not creating and not data:
        raise ValidationError("Nothing to change; pass field=value.")
    return data


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False
