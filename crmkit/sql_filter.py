"""The rules for an analyst's SQL filter: one expression over the address columns, nothing else.

A filter (``crm.addresses(where=...)``, ``count_addresses``, ``address_page``, the record table,
``teams.preview/send(records="...")``) is pasted into ``WHERE (...)`` of a query on ``addresses``.
Its truth value is an answer, so a filter that may look at another table leaks that table one
yes/no at a time (``EXISTS (SELECT 1 FROM transfer_log WHERE recipient_name LIKE ?)``), read-only
or not. :func:`check` therefore decides from DuckDB's own parse tree (``json_serialize_sql``), by an
allow-list, never a deny-list:

* column references: a column of the address table (read from the schema), bare or as
  ``addresses.<column>``, and the clock names :data:`CLOCK_NAMES`;
* constants, ``?``/``$n`` parameters;
* comparisons, AND/OR/NOT, IS [NOT] NULL, [NOT] IN (a list), BETWEEN, CASE, COALESCE, COLLATE
  (:data:`COLLATIONS`), the operators :data:`OPERATORS` (arithmetic, ``||``, LIKE/ILIKE/GLOB);
* casts to the plain types :data:`CAST_TYPES`;
* the scalar functions :data:`FUNCTIONS`.

Everything else is refused with a typed error naming it: subqueries of any kind (EXISTS, IN
(SELECT ...), scalar), other tables and qualified references to them, table functions, any other
function (aggregates, window functions, ``getenv``, ``read_csv``, macros), several statements, and a
filter that closes a parenthesis it did not open (``city = 'x') OR (1=1`` would otherwise escape the
other conditions it is AND-ed with). Reads still attach the file read-only (defence in depth).

On PostgreSQL the filter is checked the same way, on DuckDB's parse tree, and then runs there in the
read-only transaction with ``SET LOCAL statement_timeout`` (:data:`STATEMENT_TIMEOUT_SECONDS`). A few
DuckDB functions PostgreSQL knows under another name are renamed before it runs (:data:`PG_RENAMES`:
``year(x)`` → ``date_part('year', x)``, ``lcase`` → ``lower`` …); the DuckDB-only rest is refused there with
the way to write it for PostgreSQL (:data:`PG_REFUSED`), and so are COLLATE, TRY_CAST, GLOB, ``//``, ``$n``
and ``INTERVAL 3 DAY`` (PostgreSQL spells it ``INTERVAL '3 days'``). What PostgreSQL itself refuses while
running (an unknown type, a value that does not cast) is a ValidationError as on DuckDB (:func:`run_error`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import weakref
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

import duckdb

from .errors import CrmkitError, UnsafeQuery, ValidationError, catalog_error

if TYPE_CHECKING:
    from .store import Store

__all__ = ["CAST_TYPES", "CLOCK_NAMES", "COLLATIONS", "FUNCTIONS", "OPERATORS", "PG_REFUSED", "PG_RENAMES",
           "STATEMENT_TIMEOUT_SECONDS", "address_columns", "check", "run_error"]

TABLE = "addresses"

# The one list of functions a filter may call: pure scalar functions of their arguments (text, numbers,
# dates). Some are what the parser writes for SQL syntax: EXTRACT -> date_part, SIMILAR TO ->
# regexp_full_match, POSITION(a IN b) -> position, INTERVAL 3 DAY -> to_days(CAST(trunc(3) AS BIGINT)).
# coalesce and ifnull parse as the COALESCE operator; they are listed so the refusal message names them.
FUNCTIONS: frozenset[str] = frozenset({
    # text
    "lower", "upper", "lcase", "ucase", "trim", "ltrim", "rtrim", "length", "substr", "substring", "left",
    "right", "concat", "replace", "strpos", "position", "instr", "contains", "starts_with", "ends_with",
    "prefix", "suffix", "lpad", "rpad", "strip_accents", "regexp_matches", "regexp_full_match",
    # values
    "coalesce", "ifnull", "nullif", "abs", "round", "floor", "ceil", "ceiling", "trunc", "greatest", "least",
    # dates and times
    "strftime", "date_part", "datepart", "date_trunc", "datetrunc", "date_diff", "datediff", "year", "month",
    "day", "dayofweek", "isodow", "week", "quarter", "now", "today", "current_date",
    "to_years", "to_months", "to_weeks", "to_days", "to_hours", "to_minutes", "to_seconds",
})

# Operators the parser writes as functions: arithmetic, concatenation, LIKE / ILIKE / GLOB and their NOT.
OPERATORS: frozenset[str] = frozenset({
    "+", "-", "*", "/", "//", "%", "||", "~~", "!~~", "~~*", "!~~*", "~~~",
    "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape",
})

# Plain types a value may be cast to (the parser spells aliases like INT as INTEGER).
CAST_TYPES: frozenset[str] = frozenset({
    "BOOLEAN", "BOOL", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
    "UINTEGER", "UBIGINT", "FLOAT", "REAL", "DOUBLE", "DECIMAL", "NUMERIC", "VARCHAR", "TEXT", "STRING", "CHAR",
    "BPCHAR", "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE", "INTERVAL",
})

# PostgreSQL: how long one filtered query may run before it is cancelled (a ValidationError saying so).
STATEMENT_TIMEOUT_SECONDS = 5

# PostgreSQL: allowed DuckDB functions it has under another name, as the text a call's "name(" becomes there
# (the arguments stay as written; every replacement is itself a plain scalar function).
PG_RENAMES: dict[str, str] = {
    "lcase": "lower(", "ucase": "upper(", "ifnull": "coalesce(", "instr": "strpos(", "prefix": "starts_with(",
    "datepart": "date_part(", "datetrunc": "date_trunc(", "year": "date_part('year', ",
    "month": "date_part('month', ", "day": "date_part('day', ", "quarter": "date_part('quarter', ",
    "week": "date_part('week', ", "isodow": "date_part('isodow', ", "dayofweek": "date_part('dow', ",
    "today": "(current_date",  # today() -> (current_date)
}

# PostgreSQL: allowed DuckDB functions (and operators) it does not have, with what to write there instead.
PG_REFUSED: dict[str, str] = {
    "contains": "strpos(text, part) > 0", "ends_with": "text LIKE '%' || part", "suffix": "text LIKE '%' || part",
    "strip_accents": "ILIKE, or the address search (it ignores accents)",
    "regexp_matches": "text ~ 'pattern'", "regexp_full_match": "text ~ '^pattern$'",
    "strftime": "date_part('year', created_at) = 2026", "date_diff": "created_at >= now() - INTERVAL '30 days'",
    "datediff": "created_at >= now() - INTERVAL '30 days'",
    **{f"to_{unit}": "INTERVAL '3 days'" for unit in ("years", "months", "weeks", "days", "hours", "minutes",
                                                      "seconds")},
    "//": "floor(a / b)", "~~~": "LIKE with % and _",
}
_PG_TOKEN_CALLS = frozenset(PG_RENAMES) | {"regexp_matches"}  # decided from the text: an operator form is fine
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Bare names the parser reads as column references but DuckDB binds to the clock.
CLOCK_NAMES: frozenset[str] = frozenset({"current_date", "current_timestamp", "current_time", "localtimestamp"})

COLLATIONS: frozenset[str] = frozenset({"nocase", "noaccent", "nfc", "binary"})

_COMPARISONS = frozenset({
    "COMPARE_EQUAL", "COMPARE_NOTEQUAL", "COMPARE_LESSTHAN", "COMPARE_GREATERTHAN",
    "COMPARE_LESSTHANOREQUALTO", "COMPARE_GREATERTHANOREQUALTO", "COMPARE_DISTINCT_FROM",
    "COMPARE_NOT_DISTINCT_FROM",
})
_LOGIC = frozenset({"CONJUNCTION_AND", "CONJUNCTION_OR"})
_OPERATOR_NODES = frozenset({
    "OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN", "OPERATOR_COALESCE",
})
_AGGREGATE_NAMES = {"count_star": "count"}  # what the parser calls count(*)
_POSITION_KEYS = frozenset({"query_location", "query_location_length"})
_DETAIL_CHARS = 300

# json_serialize_sql only parses, it reads no table: one private in-memory connection (not DuckDB's
# process-wide default one, which a notebook may use), serialised because a connection is not
# safe for concurrent use.
_parser: duckdb.DuckDBPyConnection | None = None
_parser_lock = threading.Lock()
_columns: weakref.WeakKeyDictionary[Store, tuple[str, ...]] = weakref.WeakKeyDictionary()


def address_columns(store: Store) -> tuple[str, ...]:
    """The address table's columns as the store's schema has them (read once per store)."""
    cached = _columns.get(store)
    if cached is None:
        cached = tuple(store.read(lambda tx: [r[0] for r in tx.rows(
            "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
            "AND table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position", [TABLE])]))
        _columns[store] = cached
    return cached


def check(where: Any, columns: Iterable[str], dialect: str = "duckdb") -> str:
    """Refuse ``where`` unless it is one expression over ``columns`` built only from allowed parts; return the
    text to run on ``dialect`` (``where`` itself on DuckDB; on PostgreSQL with :data:`PG_RENAMES` applied).

    Raises:
        ValidationError: empty, not text, or not a WHERE expression (does not parse, unknown column).
        UnsafeQuery: a construct outside the allow-list, several statements, or an escape from the
            filter's parentheses; on PostgreSQL also a DuckDB-only part (:data:`PG_REFUSED`). The message
            names what was refused; nothing was run.
    """
    if not isinstance(where, str) or not where.strip():
        raise catalog_error(ValidationError, "error.msg.filter_empty")
    _check_parentheses(where)
    wrapped = f"SELECT * FROM {TABLE} WHERE ({where})"
    try:
        with _parser_lock:
            statements = _connection().extract_statements(wrapped)
    except duckdb.Error as exc:
        raise catalog_error(ValidationError, "error.msg.filter_parse", detail=_detail(exc)) from exc
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise catalog_error(UnsafeQuery, "error.msg.filter_statements")
    try:
        expression = _one_expression(wrapped, where)
        _Walker(tuple(columns)).walk(expression)
        if dialect == "postgresql":
            _refuse_duckdb_only(expression)
    except RecursionError as exc:  # DuckDB allows 1,000 levels; Python's own limit may come first
        raise catalog_error(ValidationError, "error.msg.filter_parse",
                            detail="the expression is nested too deeply") from exc
    return _for_postgres(where) if dialect == "postgresql" else where


def _pg_refusal(what: str, instead: str) -> UnsafeQuery:
    return catalog_error(UnsafeQuery, "error.msg.filter_postgres", what=what, instead=instead)


def _refuse_duckdb_only(expression: dict[str, Any]) -> None:
    """PostgreSQL: refuse the parts of a checked filter that only DuckDB runs (parse-tree view)."""
    for node in _find_classes(expression, {"FUNCTION", "COLLATE", "CAST"}):
        kind = node.get("class")
        if kind == "COLLATE":
            raise _pg_refusal(f"COLLATE {node.get('collation')}", "lower(city) = lower(?), or ILIKE")
        if kind == "CAST":
            if node.get("try_cast"):
                raise _pg_refusal("TRY_CAST", "CAST(… AS …)")
            continue
        name = str(node.get("function_name", "")).lower()
        # regexp_matches is also what DuckDB makes of the ~ operator, which PostgreSQL has: the text decides
        if name in PG_REFUSED and name not in _PG_TOKEN_CALLS:
            raise _pg_refusal(name, PG_REFUSED[name])


def _calls(where: str) -> list[tuple[int, int, str]]:
    """(start of name, end of its "(", lower-case name) of every unquoted ``name(`` in ``where``'s tokens."""
    try:
        tokens = _tokenize(where)
    except duckdb.Error:  # check() tokenized it already; not reached
        return []
    found = []
    kinds = (duckdb.token_type.identifier, duckdb.token_type.keyword)
    for (start, kind), (after, _) in itertools.pairwise(tokens):
        match = _IDENTIFIER.match(where, start)
        if kind in kinds and match and where[after] == "(":
            found.append((start, after + 1, match.group(0).lower()))
    return found


def _for_postgres(where: str) -> str:
    """The checked filter as PostgreSQL runs it: the renamed calls, refusing ``$n`` and regexp_matches(…)."""
    edits: list[tuple[int, int, str]] = []
    for start, kind in _tokenize(where):
        if kind != duckdb.token_type.string_const and where.startswith("$", start):
            raise _pg_refusal("$1, $2 … parameters", "? placeholders")
        if kind == duckdb.token_type.identifier and where.startswith('"', start):
            # DuckDB's names are case-insensitive even quoted ("Country" is country), PostgreSQL's quoted
            # ones are not: lower-case them, as the check compared them
            end = where.index('"', start + 1)
            while where.startswith('"', end + 1):  # "" inside a quoted name
                end = where.index('"', end + 2)
            edits.append((start, end + 1, where[start:end + 1].lower()))
    for start, end, name in _calls(where):
        if name == "regexp_matches":
            raise _pg_refusal(name, PG_REFUSED[name])
        if name in PG_RENAMES:
            edits.append((start, end, PG_RENAMES[name]))
    out, last = [], 0
    for start, end, text in sorted(edits):
        out += [where[last:start], text]
        last = end
    return "".join([*out, where[last:]])


def _tokenize(where: str) -> list[tuple[int, Any]]:
    """duckdb.tokenize with character offsets: DuckDB counts UTF-8 bytes, so after an "ü" every offset
    would point one character too far."""
    tokens = duckdb.tokenize(where)
    if where.isascii():
        return list(tokens)
    chars, at = {}, 0
    for i, ch in enumerate(where):
        chars[at] = i
        at += len(ch.encode("utf-8"))
    chars[at] = len(where)
    return [(chars[start], kind) for start, kind in tokens]


def _find_classes(node: Any, classes: set[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("class") in classes:
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _one_expression(wrapped: str, where: str) -> dict[str, Any]:
    """The parsed WHERE expression of ``wrapped``, or UnsafeQuery when it is not exactly the filter."""
    node = _select(wrapped)
    expression = node.pop("where_clause", None)
    negated = _select(f"SELECT * FROM {TABLE} WHERE NOT ({where})").get("where_clause") or {}
    # One expression, inside its parentheses: the statement around it is exactly the template, and
    # NOT (...) applies to all of it (an escaped OR would end up above the NOT).
    if (node != _template() or not isinstance(expression, dict) or negated.get("type") != "OPERATOR_NOT"
            or negated.get("children") != [expression]):
        raise catalog_error(UnsafeQuery, "error.msg.filter_parenthesis")
    return expression


@cache
def _template() -> dict[str, Any]:
    node = _select(f"SELECT * FROM {TABLE} WHERE TRUE")
    node.pop("where_clause", None)
    return node


def run_error(exc: BaseException) -> CrmkitError | None:
    """The typed error for what DuckDB or PostgreSQL raised while binding or running a filter query, or None."""
    if not isinstance(exc, duckdb.Error):
        return _pg_run_error(exc)
    if "read-only" in str(exc).lower():
        return catalog_error(UnsafeQuery, "error.msg.filter_read_only")
    if isinstance(exc, (duckdb.BinderException, duckdb.ParserException, duckdb.InvalidInputException,
                        duckdb.ConversionException, duckdb.CatalogException, duckdb.OutOfRangeException,
                        duckdb.TypeMismatchException, duckdb.NotImplementedException)):
        return catalog_error(ValidationError, "error.msg.filter_cannot_run", detail=_detail(exc))
    return None


def _pg_run_error(exc: BaseException) -> CrmkitError | None:
    """PostgreSQL's side of :func:`run_error` (psycopg is loaded only when it raised)."""
    if type(exc).__module__.split(".")[0] != "psycopg":
        return None
    import psycopg
    import psycopg.errors

    if isinstance(exc, psycopg.errors.QueryCanceled):  # statement_timeout
        return catalog_error(ValidationError, "error.msg.filter_timeout", seconds=STATEMENT_TIMEOUT_SECONDS)
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return catalog_error(UnsafeQuery, "error.msg.filter_read_only")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):  # the database role may not read it
        return catalog_error(UnsafeQuery, "error.msg.filter_cannot_run", detail=_detail(exc))
    state = getattr(exc, "sqlstate", None) or ""
    # 22: a value that does not cast or fit; 42: an unknown function, type or operator for these arguments;
    # 0A: not supported (a set-returning function in WHERE); no state: psycopg's own check of the parameters.
    if state[:2] in ("22", "42", "0A") or (not state and isinstance(exc, psycopg.ProgrammingError)):
        return catalog_error(ValidationError, "error.msg.filter_cannot_run", detail=_detail(exc))
    return None


# -- internals --------------------------------------------------------------------------------------------

def _detail(exc: BaseException) -> str:
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line if len(line) <= _DETAIL_CHARS else line[:_DETAIL_CHARS] + "…"


def _connection() -> duckdb.DuckDBPyConnection:
    """The private parsing connection (call with ``_parser_lock`` held)."""
    global _parser
    if _parser is None:
        _parser = duckdb.connect(":memory:")
    return _parser


def _select(sql: str) -> dict[str, Any]:
    """The parsed SELECT node of ``sql`` without source positions (so two parses compare equal)."""
    with _parser_lock:
        try:
            row = _connection().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
        except duckdb.Error as exc:
            raise catalog_error(ValidationError, "error.msg.filter_parse", detail=_detail(exc)) from exc
    tree = json.loads(row[0]) if row else {"error": True}
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise catalog_error(ValidationError, "error.msg.filter_parse",
                            detail=str(tree.get("error_message") or "not one SELECT statement")[:_DETAIL_CHARS])
    node: dict[str, Any] = _strip(tree["statements"][0]["node"])
    return node


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in _POSITION_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _check_parentheses(where: str) -> None:
    """The filter's own tokens never close more parentheses than they opened, close all they open,
    and hold no statement separator.

    Strings, quoted names and comments are single tokens to DuckDB's tokenizer, so their brackets
    do not count. (The parse-tree comparison in :func:`check` is the second, independent guard.)
    """
    try:
        tokens = _tokenize(where)
    except duckdb.Error as exc:
        raise catalog_error(ValidationError, "error.msg.filter_parse", detail=_detail(exc)) from exc
    # The operator tokens' text (a token runs to the next one's start); brackets are operator tokens.
    operators = "".join(where[start:tokens[i + 1][0] if i + 1 < len(tokens) else len(where)]
                        for i, (start, kind) in enumerate(tokens) if kind == duckdb.token_type.operator)
    if ";" in operators:  # outside strings and comments a semicolon ends a statement
        raise catalog_error(UnsafeQuery, "error.msg.filter_statements")
    depth = 0
    for ch in operators:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise catalog_error(UnsafeQuery, "error.msg.filter_parenthesis")
    if depth != 0:
        raise catalog_error(ValidationError, "error.msg.filter_parse", detail="a '(' is never closed")


def _construct(what_en: str, what_de: str) -> UnsafeQuery:
    return catalog_error(UnsafeQuery, "error.msg.filter_construct", what_en=what_en, what_de=what_de)


def _find(node: Any, kind: str) -> list[dict[str, Any]]:
    """Every dict below ``node`` (itself included) whose ``type`` is ``kind``, in document order."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("type") == kind:
                found.append(item)
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return found


class _Walker:
    """Checks every node of a parsed expression against the allow-list; refuses at the first other one.

    Each node's class must have a checker here; the checker judges the node itself, and the walk then
    goes into every value of every node (not only the keys a checker knows), so no sub-expression is
    left unchecked whatever DuckDB puts into its tree.
    """

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = frozenset(c.lower() for c in columns)
        self.listed = ", ".join(columns)
        self.checks = {
            "CONSTANT": _nothing, "PARAMETER": _nothing, "BETWEEN": _nothing, "CASE": _nothing,
            "COLUMN_REF": self._column_ref, "COMPARISON": _comparison, "CONJUNCTION": _conjunction,
            "OPERATOR": _operator, "COLLATE": _collate, "CAST": _nothing, "TYPE": _type, "FUNCTION": _function,
            "WINDOW": _window, "SUBQUERY": _subquery,
        }

    def walk(self, root: Any) -> None:
        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, list):
                stack.extend(reversed(node))
                continue
            if not isinstance(node, dict):
                continue
            kind = node.get("class")
            if kind is not None:
                check = self.checks.get(str(kind))
                if check is None:
                    raise _construct(f"the expression {kind}", f"der Ausdruck {kind}")
                check(node)
            # Wrappers without a class (a function argument, a CASE branch) and every node's parts.
            stack.extend(reversed(list(node.values())))

    def _column_ref(self, node: dict[str, Any]) -> None:
        names = [str(n) for n in node.get("column_names", [])]
        lowered = [n.lower() for n in names]  # DuckDB names are case-insensitive, quoted or not
        if len(names) == 1 and (lowered[0] in self.columns or lowered[0] in CLOCK_NAMES):
            return
        if len(names) == 2 and lowered[0] == TABLE and lowered[1] in self.columns:
            return
        # A bare unknown name is most likely a typo; one qualified by anything but the address table
        # points at another table.
        ours = len(names) == 1 or (len(names) == 2 and lowered[0] == TABLE)
        raise catalog_error(ValidationError if ours else UnsafeQuery, "error.msg.filter_column",
                            name=".".join(names), columns=self.listed)


def _nothing(node: dict[str, Any]) -> None:
    """Allowed as such; its parts are checked by the walk."""


def _comparison(node: dict[str, Any]) -> None:
    if node.get("type") not in _COMPARISONS:
        raise _construct(f"the comparison {node.get('type')}", f"der Vergleich {node.get('type')}")


def _conjunction(node: dict[str, Any]) -> None:
    if node.get("type") not in _LOGIC:
        raise _construct(f"the operator {node.get('type')}", f"der Operator {node.get('type')}")


def _operator(node: dict[str, Any]) -> None:
    if node.get("type") not in _OPERATOR_NODES:
        raise _construct(f"the operator {node.get('type')}", f"der Operator {node.get('type')}")


def _collate(node: dict[str, Any]) -> None:
    collation = str(node.get("collation", ""))
    if not collation or any(part.lower() not in COLLATIONS for part in collation.split(".")):
        raise _construct(f"the collation '{collation}'", f"die Sortierfolge '{collation}'")


def _type(node: dict[str, Any]) -> None:
    """A cast's target: a plain type; DECIMAL(p, s) with constant precision and scale."""
    name = str(node.get("type_name", ""))
    children = node.get("children") or []
    plain = (not node.get("catalog") and not node.get("schema") and name.upper() in CAST_TYPES
             and (not children or name.upper() in ("DECIMAL", "NUMERIC")))
    if not plain or any(not isinstance(c, dict) or c.get("class") != "CONSTANT" for c in children):
        raise _construct(f"cast to {name}", f"die Umwandlung in {name}")


def _function(node: dict[str, Any]) -> None:
    raw = str(node.get("function_name", ""))
    name = _AGGREGATE_NAMES.get(raw, raw)
    if node.get("catalog") or node.get("schema") or name.lower() not in FUNCTIONS | OPERATORS:
        qualified = ".".join(str(p) for p in (node.get("catalog"), node.get("schema"), name) if p)
        raise catalog_error(UnsafeQuery, "error.msg.filter_function", name=qualified,
                            functions=", ".join(sorted(FUNCTIONS)))
    if (node.get("distinct") or node.get("filter") is not None or node.get("export_state")
            or (node.get("order_bys") or {}).get("orders")):
        raise _construct(f"DISTINCT, ORDER BY or FILTER in '{name}'", f"DISTINCT, ORDER BY oder FILTER in '{name}'")
    for argument in node.get("arguments") or []:
        if isinstance(argument, dict) and argument.get("name"):
            label = argument["name"]
            raise _construct(f"the named argument '{label}'", f"das benannte Argument '{label}'")


def _window(node: dict[str, Any]) -> None:
    raise catalog_error(UnsafeQuery, "error.msg.filter_window", name=str(node.get("function_name", "")))


def _subquery(node: dict[str, Any]) -> None:
    # Name the most telling part: a table function first (files, URLs, any table), else the tables read.
    for table in _find(node, "TABLE_FUNCTION"):
        function = table.get("function") or {}
        raise catalog_error(UnsafeQuery, "error.msg.filter_table_function",
                            name=str(function.get("function_name") or "?"))
    tables = list(dict.fromkeys(str(t.get("table_name")) for t in _find(node, "BASE_TABLE")))
    if tables:
        names = ", ".join(tables)
        raise catalog_error(UnsafeQuery, "error.msg.filter_subquery",
                            reads_en=f"it reads {names}", reads_de=f"sie liest {names}")
    raise catalog_error(UnsafeQuery, "error.msg.filter_subquery",
                        reads_en="a query of its own", reads_de="eine eigene Abfrage")
