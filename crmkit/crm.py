"""The CRM session: one user working on one store.

``crmkit.open()`` returns a :class:`CRM`. Every privileged operation checks the session user's
rights here, in the core; views only show what the core allows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from . import sql_filter
from .errors import NotFound, PermissionDenied, UnknownUser, ValidationError, catalog_error
from .i18n import t
from .rights import RIGHTS
from .settings import SETTINGS, USER_SETTINGS, Setting
from .store import Store, Tracer, Tx
from .text_rules import check_text

if TYPE_CHECKING:
    from .campaigns import Campaigns
    from .teams.send import TeamsService

__all__ = ["ADDRESS_FIELDS", "CRM", "User", "open"]

# Columns a caller may set on an address; the rest (id, created/modified) the core maintains.
ADDRESS_FIELDS = (
    "parent_id", "kind", "company", "salutation", "title", "first_name", "last_name", "department",
    "street", "postal_code", "city", "country", "phone", "email", "owner",
)
ADDRESS_COLUMNS = ("id", *ADDRESS_FIELDS, "created_by", "created_at", "modified_by", "modified_at")
ADDRESS_KINDS = ("company", "person")
MAX_PAGE = 10_000


@dataclass(frozen=True)
class User:
    name: str
    display_name: str
    rights: frozenset[str] = field(default_factory=frozenset)
    roles: tuple[str, ...] = ()

    def can(self, right: str) -> bool:
        return right in self.rights


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def _load_user(tx: Tx, name: str) -> User:
    row = tx.rows("SELECT name, display_name, active FROM users WHERE name = ?", [name])
    if not row or not row[0][2]:
        known = [r[0] for r in tx.rows("SELECT name FROM users WHERE active ORDER BY name LIMIT 8")]
        raise UnknownUser(
            f"No active CRM user {name!r}. Known users: {', '.join(known)}. "
            "Pass user=... to crmkit.open(), set CRMKIT_USER, or ask an admin to add you."
        )
    roles = tuple(r[0] for r in tx.rows("SELECT role FROM user_roles WHERE user_name = ? ORDER BY role", [name]))
    rights = frozenset(
        r[0] for r in tx.rows(
            'SELECT DISTINCT rr."right" FROM user_roles ur JOIN role_rights rr ON rr.role = ur.role '
            "WHERE ur.user_name = ?", [name],
        )
    )
    return User(name=row[0][0], display_name=row[0][1], rights=rights, roles=roles)


class CRM:
    """A user's session on a crmkit store. Create it with :func:`crmkit.open`."""

    def __init__(self, store: Store, user: str) -> None:
        self.store = store
        self.user = store.read(lambda tx: _load_user(tx, user))
        self.opened_at = _now()
        self._teams: TeamsService | None = None
        self._campaigns: Campaigns | None = None
        from .teams.sessions import register_session

        # Remembers what this session saw of the Teams switch, so the UI can say "reopen to apply".
        register_session(self)

    def __repr__(self) -> str:
        return f"<CRM {self.store.path!r} user={self.user.name!r}>"

    @property
    def campaigns(self) -> Campaigns:
        """Campaigns, activities, reactions and their Teams actions (see :mod:`crmkit.campaigns`)."""
        if self._campaigns is None:
            from .campaigns import Campaigns

            self._campaigns = Campaigns(self)
        return self._campaigns

    @property
    def teams(self) -> TeamsService:
        """Send records via Microsoft Teams (see :class:`crmkit.teams.send.TeamsService`)."""
        if self._teams is None:
            from .teams.send import TeamsService

            self._teams = TeamsService(self)
        return self._teams

    # -- rights ------------------------------------------------------------------------------------

    def require(self, right: str) -> None:
        """Raise :class:`PermissionDenied` unless the session user holds ``right``."""
        if right not in RIGHTS:
            raise ValueError(f"unknown right {right!r}")
        if not self.user.can(right):
            de, en = RIGHTS[right]
            params = {"user": self.user.name, "right": right, "label_de": de, "label_en": en}
            raise PermissionDenied(t("error.msg.permission", "en", **params), right=right,
                                   user=self.user.name).localized("error.msg.permission", **params)

    # -- users and roles -----------------------------------------------------------------------------

    def users(self) -> pd.DataFrame:
        return self.store.df(
            "SELECT u.name, u.display_name, u.email, u.active, string_agg(ur.role, ', ' ORDER BY ur.role) "
            "AS roles FROM users u LEFT JOIN user_roles ur ON ur.user_name = u.name "
            "GROUP BY ALL ORDER BY u.name"
        )

    def roles(self) -> pd.DataFrame:
        return self.store.df(
            'SELECT r.name, r.label_de, r.label_en, string_agg(rr."right", \', \' ORDER BY rr."right") AS rights '
            "FROM roles r LEFT JOIN role_rights rr ON rr.role = r.name GROUP BY ALL ORDER BY r.name"
        )

    def add_user(self, name: str, display_name: str, *, roles: Sequence[str] = (), email: str | None = None) -> None:
        """Create a CRM user (needs ``system.admin``)."""
        self.require("system.admin")
        if not isinstance(name, str) or not name.strip() or len(name) > 64:
            raise ValidationError("A user name is 1-64 characters.")
        check_text(name, "name")
        check_text(display_name, "display_name")
        check_text(email, "email")

        def run(tx: Tx) -> None:
            if tx.one("SELECT count(*) FROM users WHERE name = ?", [name]):
                raise ValidationError(f"A user {name!r} exists already; choose another name.")
            known = {r[0] for r in tx.rows("SELECT name FROM roles")}
            unknown = set(roles) - known
            if unknown:
                raise ValidationError(f"Unknown roles {sorted(unknown)}; known roles: {sorted(known)}.")
            tx.execute("INSERT INTO users (name, display_name, email) VALUES (?, ?, ?)", [name, display_name, email])
            for role in roles:
                tx.execute("INSERT INTO user_roles VALUES (?, ?)", [name, role])
            self._audit(tx, "users", name, None, {"display_name": display_name, "roles": list(roles)})

        self.store.write(run)

    def set_roles(self, name: str, roles: Sequence[str]) -> None:
        """Replace a user's roles (needs ``system.admin``)."""
        self.require("system.admin")

        def run(tx: Tx) -> None:
            _load_user(tx, name)
            known = {r[0] for r in tx.rows("SELECT name FROM roles")}
            if set(roles) - known:
                raise ValidationError(f"Unknown roles {sorted(set(roles) - known)}; known: {sorted(known)}.")
            old = [r[0] for r in tx.rows("SELECT role FROM user_roles WHERE user_name = ? ORDER BY role", [name])]
            tx.execute("DELETE FROM user_roles WHERE user_name = ?", [name])
            for role in roles:
                tx.execute("INSERT INTO user_roles VALUES (?, ?)", [name, role])
            self._audit(tx, "users", f"{name}.roles", old, sorted(roles))

        self.store.write(run)

    # -- settings ------------------------------------------------------------------------------------

    def setting(self, name: str) -> Any:
        """A system-wide setting's current value (its default when never set)."""
        spec = _spec(SETTINGS, name)
        raw = self.store.one("SELECT value FROM system_settings WHERE key = ?", [name])
        return spec.default if raw is None else json.loads(raw)

    def settings(self) -> pd.DataFrame:
        stored = dict(self.store.read(lambda tx: tx.rows("SELECT key, value FROM system_settings")))
        return pd.DataFrame(
            [(s.name, json.loads(stored[s.name]) if s.name in stored else s.default, s.right, s.help)
             for s in SETTINGS.values()],
            columns=["name", "value", "right", "help"],
        )

    def set_setting(self, name: str, value: Any) -> None:
        """Change a system-wide setting; needs the setting's right; audited with old and new value."""
        spec = _spec(SETTINGS, name)
        self.require(spec.right)
        _check_value(spec, value)
        if name == "teams.enabled":  # switching on also creates the contact type TS, in one transaction
            from .teams import activation

            activation.set_enabled(self, value)
            return
        self.store.write(lambda tx: self._set_setting(tx, name, value))

    def _set_setting(self, tx: Tx, name: str, value: Any) -> None:
        """Write a setting inside a caller's transaction (rights already checked)."""
        raw = tx.one("SELECT value FROM system_settings WHERE key = ?", [name])
        old = SETTINGS[name].default if raw is None else json.loads(raw)
        tx.execute(
            "INSERT OR REPLACE INTO system_settings VALUES (?, ?, ?, ?)",
            [name, json.dumps(value), _now(), self.user.name],
        )
        self._audit(tx, "system", name, old, value)

    def user_setting(self, name: str) -> Any:
        spec = _spec(USER_SETTINGS, name)
        raw = self.store.one(
            "SELECT value FROM user_settings WHERE user_name = ? AND key = ?", [self.user.name, name]
        )
        return spec.default if raw is None else json.loads(raw)

    def set_user_setting(self, name: str, value: Any) -> None:
        """Change one of the session user's own settings; audited."""
        spec = _spec(USER_SETTINGS, name)
        _check_value(spec, value)

        def run(tx: Tx) -> None:
            raw = tx.one("SELECT value FROM user_settings WHERE user_name = ? AND key = ?", [self.user.name, name])
            old = spec.default if raw is None else json.loads(raw)
            tx.execute(
                "INSERT OR REPLACE INTO user_settings VALUES (?, ?, ?, ?)",
                [self.user.name, name, json.dumps(value), _now()],
            )
            self._audit(tx, f"user:{self.user.name}", name, old, value)

        self.store.write(run)

    @property
    def language(self) -> str:
        """The UI language: the user's own setting, else the system default."""
        return self.user_setting("language") or self.setting("ui.default_language")

    def audit_log(self, *, scope: str | None = None, limit: int = 500) -> pd.DataFrame:
        """The audit trail of settings and rights changes (needs ``system.admin``)."""
        self.require("system.admin")
        where, params = ("WHERE scope = ?", [scope]) if scope else ("", [])
        return self.store.df(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", [*params, int(limit)])

    def _audit(self, tx: Tx, scope: str, key: str, old: Any, new: Any) -> None:
        tx.execute(
            "INSERT INTO audit (changed_at, user_name, scope, key, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?)",
            [_now(), self.user.name, scope, key, json.dumps(old, default=str), json.dumps(new, default=str)],
        )

    # -- contact types -------------------------------------------------------------------------------

    def contact_types(self) -> pd.DataFrame:
        return self.store.df("SELECT code, label FROM contact_types ORDER BY code")

    def add_contact_type(self, code: str, label: str) -> None:
        """Create a contact type with a unique short code (needs ``system.admin``)."""
        self.require("system.admin")
        code = _check_code(code)
        if not isinstance(label, str) or not label.strip():
            raise ValidationError("A contact type needs a label.")
        check_text(label, "label")

        def run(tx: Tx) -> None:
            other = tx.one("SELECT label FROM contact_types WHERE code = ?", [code])
            if other is not None:
                raise ValidationError(f"The short code {code!r} is used by the contact type {other!r}.")
            tx.execute("INSERT INTO contact_types (code, label) VALUES (?, ?)", [code, label])
            self._audit(tx, "contact_types", code, None, label)

        self.store.write(run)

    def change_contact_type_code(self, code: str, new_code: str) -> None:
        """Give a contact type another short code; its contacts follow (needs ``system.admin``).

        The contact-type screen (:mod:`crmkit.contact_types`) also lets a Teams administrator do it.
        """
        self.require("system.admin")
        from .contact_types import change_code

        change_code(self, code, new_code)

    # -- addresses -----------------------------------------------------------------------------------

    def addresses(
        self, where: str | None = None, params: Sequence[Any] = (), *, search: str | None = None,
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
        clause, values = self._address_filter(where, params, search, filters)
        cols = ", ".join(_check_columns(columns or ADDRESS_COLUMNS))
        order = _check_order(order_by)
        page = ""
        if limit is not None:
            if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE or not isinstance(offset, int) or offset < 0:
                raise ValidationError(f"limit must be 1..{MAX_PAGE} and offset ≥ 0.")
            page = f" LIMIT {limit} OFFSET {offset}"
        sql = f"SELECT {cols} FROM addresses{clause} ORDER BY {order}{page}"
        return self.store.read(lambda tx: self._run_filter(tx, sql, values))

    def count_addresses(
        self, where: str | None = None, params: Sequence[Any] = (), *, search: str | None = None, **filters: Any
    ) -> int:
        clause, values = self._address_filter(where, params, search, filters)
        sql = f"SELECT count(*) FROM addresses{clause}"
        return int(self.store.read(lambda tx: self._run_filter(tx, sql, values, scalar=True)))

    def address_page(
        self, page: int = 0, size: int = 25, *, where: str | None = None, params: Sequence[Any] = (),
        search: str | None = None, order_by: str = "id", columns: Sequence[str] | None = None, **filters: Any,
    ) -> tuple[pd.DataFrame, int]:
        """One page of addresses and the total count, in one attach (what a record table shows)."""
        clause, values = self._address_filter(where, params, search, filters)
        if not isinstance(size, int) or not 0 < size <= MAX_PAGE or not isinstance(page, int) or page < 0:
            raise ValidationError(f"page must be ≥ 0 and size 1..{MAX_PAGE}.")
        cols = ", ".join(_check_columns(columns or ADDRESS_COLUMNS))
        order = _check_order(order_by)
        keys = ", ".join(dict.fromkeys([str(order_by).split()[0], "id"]))
        # Filter once into (sort key, id), page over that narrow set, then fetch only the page's rows:
        # sorting every column of every match made deep pages cost ~1 s at 1M addresses.
        sql = (
            f"WITH hits AS MATERIALIZED (SELECT {keys} FROM addresses{clause}), "
            f"page AS (SELECT id FROM hits ORDER BY {order} LIMIT {size} OFFSET {page * size}) "
            f"SELECT (SELECT count(*) FROM hits) AS _total, {cols} FROM addresses "
            f"WHERE id IN (SELECT id FROM page) ORDER BY {order}"
        )

        def run(tx: Tx) -> tuple[pd.DataFrame, int]:
            frame = self._run_filter(tx, sql, values)
            if frame.empty:  # past the last page: the count still matters to the caller
                total = self._run_filter(tx, f"SELECT count(*) FROM addresses{clause}", values, scalar=True)
                return frame.drop(columns="_total"), int(total)
            return frame.drop(columns="_total").reset_index(drop=True), int(frame["_total"].iloc[0])

        return self.store.read(run)

    def _address_filter(
        self, where: str | None, params: Sequence[Any], search: str | None, filters: Mapping[str, Any]
    ) -> tuple[str, list[Any]]:
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
            if terms:
                hits = " INTERSECT ".join(
                    "SELECT address_id FROM address_words WHERE word >= ? AND word < ?" for _ in terms)
                join = f" JOIN ({hits}) AS _hits ON addresses.id = _hits.address_id"
                join_values = [v for term in terms for v in (term, _prefix_end(term))]
        if where is not None:
            sql_filter.check(where, sql_filter.address_columns(self.store))  # address columns only
            if not isinstance(params, (list, tuple)):
                raise catalog_error(ValidationError, "error.msg.filter_params")
            parts.append(f"({where})")
            values.extend(params)
        if join and len(terms) == 1:
            join = join.replace("SELECT address_id", "SELECT DISTINCT address_id")  # INTERSECT is distinct
        return join + (" WHERE " + " AND ".join(parts) if parts else ""), [*join_values, *values]

    @staticmethod
    def _run_filter(tx: Tx, sql: str, values: list[Any], *, scalar: bool = False) -> Any:
        try:
            return tx.one(sql, values) if scalar else tx.df(sql, values)
        except duckdb.Error as exc:
            # Binder, catalog, conversion … errors of a checked filter (wrong argument types, a value that
            # does not cast, a missing parameter) are bad input; a write the read-only attach stopped is unsafe.
            typed = sql_filter.run_error(exc)
            if typed is None:
                raise
            raise typed from exc

    def address(self, address_id: int) -> dict[str, Any]:
        """One address as a dict; :class:`NotFound` when there is none."""
        frame = self.addresses(id=_check_id(address_id))
        if frame.empty:
            raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
        return {k: (None if _isna(v) else v) for k, v in frame.iloc[0].to_dict().items()}

    def add_address(self, **fields: Any) -> int:
        """Create an address; returns its id."""
        data = _clean_address(fields, creating=True)

        def run(tx: Tx) -> int:
            if data.get("parent_id") is not None and not tx.one(
                "SELECT count(*) FROM addresses WHERE id = ?", [data["parent_id"]]
            ):
                raise ValidationError(f"parent_id {data['parent_id']} is not an address.")
            new_id = int(tx.one("SELECT coalesce(max(id), 0) + 1 FROM addresses"))
            now = _now()
            row = {**data, "id": new_id, "created_by": self.user.name, "created_at": now,
                   "modified_by": self.user.name, "modified_at": now}
            names = list(row)
            tx.execute(
                f"INSERT INTO addresses ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [row[n] for n in names],
            )
            index_addresses(tx, "id = ?", [new_id])
            return new_id

        return self.store.write(run)

    def update_address(self, address_id: int, **fields: Any) -> None:
        """Change fields of an address; records who and when."""
        data = _clean_address(fields, creating=False)
        address_id = _check_id(address_id)

        def run(tx: Tx) -> None:
            if not tx.one("SELECT count(*) FROM addresses WHERE id = ?", [address_id]):
                raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
            sets = ", ".join(f"{k} = ?" for k in data)
            tx.execute(
                f"UPDATE addresses SET {sets}, modified_by = ?, modified_at = ? WHERE id = ?",
                [*data.values(), self.user.name, _now(), address_id],
            )
            if set(data) & set(SEARCHED_COLUMNS):
                tx.execute("DELETE FROM address_words WHERE address_id = ?", [address_id])
                index_addresses(tx, "id = ?", [address_id])

        self.store.write(run)

    # -- contacts ------------------------------------------------------------------------------------

    def contacts(self, address_id: int | None = None, *, type_code: str | None = None,
                 limit: int = 1000) -> pd.DataFrame:
        """Logged interactions (not persons), newest first."""
        parts, values = [], []
        if address_id is not None:
            parts.append("address_id = ?")
            values.append(_check_id(address_id))
        if type_code is not None:
            parts.append("type_code = ?")
            values.append(type_code)
        where = " WHERE " + " AND ".join(parts) if parts else ""
        return self.store.df(
            f"SELECT * FROM contacts{where} ORDER BY happened_at DESC, id DESC LIMIT ?", [*values, int(limit)]
        )

    def add_contact(
        self, address_id: int, type_code: str, subject: str, *, notes: str | None = None,
        source: str = "manual", at: datetime | None = None,
    ) -> int:
        """Log an interaction on an address; returns the contact id."""
        address_id = _check_id(address_id)
        if not isinstance(subject, str) or not subject.strip():
            raise ValidationError("A contact needs a subject.")
        check_text(subject, "subject")
        check_text(notes, "notes", lines=True)  # notes may run over several lines
        return self.store.write(
            lambda tx: self._add_contact(tx, address_id, type_code, subject, notes, source, at)
        )

    def _add_contact(self, tx: Tx, address_id: int, type_code: str, subject: str, notes: str | None,
                     source: str, at: datetime | None = None) -> int:
        if not tx.one("SELECT count(*) FROM addresses WHERE id = ?", [address_id]):
            raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
        if not tx.one("SELECT count(*) FROM contact_types WHERE code = ?", [type_code]):
            raise ValidationError(f"Unknown contact type {type_code!r}; see crm.contact_types().")
        new_id = int(tx.one("SELECT coalesce(max(id), 0) + 1 FROM contacts"))
        tx.execute(
            "INSERT INTO contacts (id, address_id, happened_at, type_code, subject, notes, user_name, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [new_id, address_id, at or _now(), type_code, subject, notes, self.user.name, source],
        )
        return new_id


# -- the search word index ---------------------------------------------------------------------------

SEARCHED_COLUMNS = ("company", "first_name", "last_name", "city", "email")
_WORD_SPLIT = r"[^\p{L}\p{N}]+"  # RE2: any run of characters that are not letters or digits


def words_sql(where: str = "TRUE") -> str:
    """SELECT (word, address_id) for the addresses matching ``where``: lower-case words, each also
    without accents, so "muller" finds "Müller"."""
    return (
        "SELECT DISTINCT w AS word, id AS address_id FROM ("
        "  SELECT id, unnest(list_distinct(list_concat(ws, list_transform(ws, lambda x: strip_accents(x))))) AS w"
        f"  FROM (SELECT id, string_split_regex(lower(concat_ws(' ', {', '.join(SEARCHED_COLUMNS)})), "
        f"'{_WORD_SPLIT}') AS ws FROM addresses WHERE {where})) WHERE w <> ''"
    )


def index_addresses(tx: Tx, where: str, params: Sequence[Any] = ()) -> None:
    """Add the search words of the addresses matching ``where`` (inside the caller's transaction)."""
    tx.execute(f"INSERT INTO address_words {words_sql(where)}", params)


def rebuild_search_index(tx: Tx) -> None:
    """Rebuild the whole word index in word order, so a prefix lookup reads only a few row groups.

    Bulk loads call this once at the end instead of indexing row by row.
    """
    tx.execute("DELETE FROM address_words")
    tx.execute(f"INSERT INTO address_words SELECT * FROM ({words_sql()}) ORDER BY word")


def search_terms(text: str) -> list[str]:
    """The words of a search text, as the index stores them."""
    return [w for w in re.split(r"[\W_]+", text.lower()) if w]


def _prefix_end(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# -- validation helpers ------------------------------------------------------------------------------

def _spec(table: Mapping[str, Setting], name: str) -> Setting:
    if name not in table:
        raise ValidationError(f"Unknown setting {name!r}; known: {', '.join(sorted(table))}.")
    return table[name]


def _check_value(spec: Setting, value: Any) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ValidationError(f"{spec.name} must be one of {list(spec.choices)}, not {value!r}.")
    if spec.default is not None and value is not None and type(value) is not type(spec.default):
        raise ValidationError(f"{spec.name} takes a {type(spec.default).__name__}, not {value!r}.")
    try:
        json.dumps(value)
    except TypeError as exc:
        raise ValidationError(f"{spec.name}: value {value!r} cannot be stored.") from exc
    # Every setting's text is one line (a prefix, ids, host names); the prefix leads every subject.
    check_text(value, spec.name, bidi=True)


def _check_code(code: str) -> str:
    if not isinstance(code, str) or not code.strip() or len(code.strip()) > 8:
        raise ValidationError("A contact type short code has 1-8 characters.")
    check_text(code, "code")
    return code.strip().upper()


def _check_id(value: Any) -> int:
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
            data[key] = None if value is None else _check_id(value)
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


def open(path: str | os.PathLike[str] | None = None, user: str | None = None, *,
         tracer: Tracer | None = None) -> CRM:
    """Open a CRM session.

    Args:
        path: the DuckDB file (default ``CRMKIT_DB``, else ``./crm.duckdb``), or ``":memory:"``.
        user: the CRM user (default ``CRMKIT_USER``, else ``admin``).
        tracer: called with ``(sql, params)`` before each statement.

    Raises:
        DatabasePathError, NotACrmkitDatabase: the path cannot hold or is not a crmkit database.
        UnknownUser: no active user of that name.
    """
    store = Store(path, tracer=tracer)
    return CRM(store, user or os.environ.get("CRMKIT_USER") or "admin")
