"""crmkit's rights in PostgreSQL itself: a database role per CRM user, granted what that user's rights need.

A notebook runs whatever its person types. On a shared PostgreSQL database a session therefore holds only
its person's login, and the database refuses what crmkit's API would refuse: raw SQL can do no more than
the API lets that person do.

Roles (names are per database, since PostgreSQL's roles are per cluster: ``P = crmkit_<database>``, e.g.
``crmkit_crm`` for a database ``crm``; names are lower-case ``[a-z0-9_]``, a name that had to change or be
shortened gets 8 hex digits of its sha256, so no two names meet):

- ``P_base`` (NOLOGIN): what every signed-in user needs (:data:`BASE`): CONNECT on the database, reading
  the addresses, contacts, users and rights, the system settings (crmkit reads them to run: language,
  Teams switch; they hold no secret), campaigns; writing their own rows of ``user_settings`` and
  ``sessions`` and their own audit rows (row-level security, below).
- ``P_r_<right>`` (NOLOGIN), one per crmkit right (``P_r_teams_send``, ``P_r_system_admin``, …):
  exactly the tables and columns that right's operations write (:data:`RIGHT_GRANTS`). Built per right,
  not per built-in role, so a role an admin made in the roles table works too: a user is a member of the
  group of every right they hold (admin: all of them).
- ``P_filter`` (NOLOGIN): SELECT on ``addresses`` (the columns a filter may name are that table's,
  crmkit.sql_filter.address_columns), on ``address_words`` (the search words, made of those columns,
  which the record table's query joins beside the filter) and on ``address_count`` (their number),
  nothing else. An analyst's SQL filter runs under it
  (:func:`enter_filter_role`, ``SET LOCAL ROLE`` inside the read-only transaction); every user role is a
  member (through ``P_base``), so the switch needs nothing else.
- ``P_u_<user>`` (LOGIN), one per active CRM user, member of ``P_base`` and of its rights' groups, holding
  no privilege of its own. Its password is random, set by :func:`rotate_password` as a SCRAM-SHA-256
  verifier computed here (the plain password is never in a statement, so never in a server log), and
  written to a 0600 libpq passfile in the person's ``CRMKIT_HOME`` or returned once; never in a CRM table.

:func:`sync_database_roles` (run by the database owner — the role that ran the migrations — with CREATEROLE,
e.g. ``crmkit --db postgresql://owner@host/crm db-roles``) makes the database mirror the users table: creates
missing roles, grants and revokes memberships, drops the roles of removed or inactive users, re-grants every
table (revoke all, then grant: idempotent, and a grant crmkit no longer wants goes) and brings its row-level
policies up to date, all in one transaction. A policy is named after a hash of its definition, so a sync that
changes nothing creates or drops none and waits for no open transaction (CREATE POLICY locks its table
exclusively); run one that does change something at a quiet moment. It revokes PUBLIC's CONNECT and TEMPORARY on
the database and CREATE on the schema; TEMPORARY goes to the groups whose writes use ``Tx.register`` (a temp
table filled by COPY: senders, the admins of Teams, campaigns, privacy and the system). Run it again after a
crmkit upgrade: a table a new migration made has no grant until then (:func:`unclassified_tables` names the
tables no list here knows; sync reports them too).

Append-only, and what grants cannot say:

- ``transfer_log``: senders INSERT (their own name: row-level check) and read back only the four columns
  the duplicate check needs (dedupe_key, message_key, address_id, recipient_id); nobody gets UPDATE; only
  ``privacy.admin`` may DELETE (the retention purge), only it and ``privacy.read_log`` read whole rows.
- ``outbox``: the sending session delivers its own batch (its person's Microsoft token), so senders need
  to change delivery state. They may UPDATE the delivery columns only (status, attempts, times, chat and
  message id, error, batch_id for a staged send becoming its batch, and any column a later migration adds
  except the content): never the payload, recipients, members or address ids of a queued message
  (:data:`OUTBOX_CONTENT`). Column grants rather than SECURITY DEFINER functions: crmkit's SQL stays the
  same on both databases. Row-level security keeps a sender to their own batches (``outbox_batches.user_name``)
  and to staged rows (``batch_id`` ``staging:…``, not yet a batch; DELETE only those).
- ``user_settings``, ``sessions``, ``m365_accounts``, ``audit``, ``contacts``, ``outbox_batches``,
  ``transfer_log``: rows carry ``user_name``; the policies compare it with :sql:`crmkit_user()`, a SQL
  function sync generates that maps ``current_user`` (a ``P_u_`` role) to its CRM user name (NULL for
  any other role). A user writes rows in their own name only; the admin groups (and the workers'
  ``teams.admin``/``campaign.admin``, which deliver others' batches and campaign runs recorded by others)
  write any.
- ``system_settings``: each right may write only the keys whose ``Setting.right`` it is
  (crmkit.settings), ``system.admin`` all.
- Recording a campaign reaction is ``records.write`` work, and crmkit runs its immediate actions in the
  recorder's process from the campaign account: so ``records.write`` may claim and finish campaign runs and
  read the campaign account's row (its password is ciphertext; the key is a file on the machine that set it,
  crmkit.auth._secrets), never set it. A sign-in records what it learned about consent (``consent_state``).
- Decisions against the letter of "a viewer touches no settings or accounts": every session reads
  ``system_settings`` (crmkit cannot open without them), none but the right's admins writes them; a viewer
  has no access at all to ``m365_accounts`` (a viewer never sends), so the accounts section of a viewer's
  own settings page shows its error box on PostgreSQL.

Not covered: a viewer recording a campaign reaction (crmkit's API lets anyone; the database refuses it
without ``records.write``); which addresses or contacts a ``records.write`` user may change (crmkit has no per-row rule
either); outbox rows of another user's *staged* (not yet activated) send can be deleted by any sender (the
send then fails whole, nothing goes out); a table's owner and superusers bypass all of this (run crmkit
as a user's role, never as the owner, in a team); table-owner-only commands need the owner — but for the
one crmkit runs as a user, the transfer-log compaction (PostgreSQL's CLUSTER), sync makes a SECURITY DEFINER
function of the owner's that only ``privacy.admin`` may execute (:func:`compact_transfer_log`;
:data:`OWNER_FUNCTIONS`): an admin operation through a function only admins hold.

Workers: a ``crmkit worker`` that delivers other people's queued sends or campaign runs acts as a CRM user
holding ``teams.admin`` or ``campaign.admin`` (its login may write any user's outbox, log and contact rows);
one acting for its own user's sends needs that user's rights only.

Connecting as a user: ``crmkit.open("postgresql://crmkit_crm_u_anna@host/crm?passfile=/home/anna/.crmkit/pgpass")``
(or ``PGPASSFILE``); libpq reads the password from the file. :func:`crm_user_of_login` (called by
``crmkit.open``) makes such a session anna's: no ``user=`` needed, another name is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import PermissionDenied, StoreError, UnknownUser
from ..rights import RIGHTS
from ..settings import SETTINGS

if TYPE_CHECKING:
    from . import Store, Tx

__all__ = [
    "BASE", "OUTBOX_CONTENT", "RIGHT_GRANTS", "SyncReport", "UserLogin", "compact_transfer_log", "crm_user_of_login",
    "drop_database_roles", "enter_filter_role", "group_role", "login_crm_user", "passfile_line", "role_prefix",
    "rotate_password",
    "scram_verifier", "sync_database_roles", "unclassified_tables", "user_role",
]

# What every signed-in user may do, by table. Writes of own rows only where a policy below says so.
BASE: dict[str, str] = {
    "_crmkit_migrations": "SELECT",
    "roles": "SELECT", "role_rights": "SELECT", "users": "SELECT", "user_roles": "SELECT",
    "system_settings": "SELECT",
    "user_settings": "SELECT, INSERT, UPDATE",  # own rows
    "audit": "INSERT",  # own name; reading the trail is system.admin's
    "contact_types": "SELECT", "addresses": "SELECT", "address_words": "SELECT", "contacts": "SELECT",
    "address_count": "SELECT",  # kept by a SECURITY DEFINER trigger: nobody writes it
    "sessions": "SELECT, INSERT, UPDATE, DELETE",  # writes: own rows
    "display_formats": "SELECT", "privacy_settings": "SELECT", "address_flags": "SELECT",
    "consent_state": "SELECT",
    "directory_links": "SELECT",  # own row (crmkit.directory_links; user_for runs as the owner, in the hub)
    "outbox_batches": "SELECT", "outbox": "SELECT",
    "campaigns": "SELECT", "campaign_activities": "SELECT", "campaign_participants": "SELECT",
    "campaign_reactions": "SELECT", "campaign_actions": "SELECT", "campaign_recorded_reactions": "SELECT",
    "campaign_runs": "SELECT",
    "teams_replies": "SELECT", "teams_reply_watermarks": "SELECT",  # replies filed (crmkit.teams.replies)
}

# The columns of a queued message nobody but the owner may change once written.
OUTBOX_CONTENT = ("id", "seq", "marker", "chat_kind", "members", "topic", "recipients", "address_ids",
                  "field_names", "payload", "contact_subject", "contact_notes")
_DELIVERY = "{outbox_delivery}"  # placeholder: the outbox's columns but OUTBOX_CONTENT, read at sync
_DEDUPE = "SELECT (dedupe_key, message_key, address_id, recipient_id)"
_PACING = "SELECT, INSERT, UPDATE"  # Teams' limits shared by every delivering process (crmkit/teams/pacing.py)
# A reply pass (crmkit/teams/replies.py) files a reply once and moves its conversation's watermark.
_REPLIES = {"teams_replies": "INSERT", "teams_reply_watermarks": "INSERT, UPDATE"}

# What delivering a send needs: its batch and rows, their delivery state, the log and Teams' shared pacing.
_SENDING: dict[str, str] = {
    "outbox_batches": "INSERT", "outbox": f"INSERT, UPDATE ({_DELIVERY}), DELETE",
    "transfer_log": f"INSERT, {_DEDUPE}", "contacts": "INSERT, UPDATE (recipients)", "teams_pacing": _PACING,
    **_REPLIES,
}
# The rights whose sessions deliver their own sends: teams.send (by hand), records.write (the campaign runs of a
# reaction it records).
_SENDERS = ("teams.send", "records.write")

# What each right adds, by table (crmkit/rights.py; the services that check the right write these).
RIGHT_GRANTS: dict[str, dict[str, str]] = {
    "records.write": {
        **_SENDING,
        "addresses": "INSERT, UPDATE", "address_words": "INSERT, DELETE", "contacts": "INSERT, UPDATE",
        # Recording a reaction (crmkit.campaigns.record_reaction) runs its immediate actions in the recorder's
        # process from the campaign account: the run's claim and state, and the account's row. Its password is
        # ciphertext whose key is a file on the machine that set it (crmkit.auth._secrets), not in the database.
        "campaign_recorded_reactions": "INSERT", "campaign_runs": "INSERT, UPDATE",
        "campaign_account": "SELECT, UPDATE (home_account_id, display_name)",
    },
    "teams.send": {
        **_SENDING,
        "m365_accounts": "SELECT, INSERT, UPDATE, DELETE",  # own accounts
        # what a sign-in learns from Microsoft about consent (crmkit.auth.consent.record_consent: delete + insert);
        # a wrong row changes only the consent hint an admin is shown
        "consent_state": "INSERT, DELETE",
    },
    "teams.admin": {
        "system_settings": "INSERT, UPDATE", "display_formats": "INSERT, UPDATE, DELETE",
        "consent_state": "INSERT, UPDATE, DELETE", "consent_requests": "SELECT, INSERT, UPDATE, DELETE",
        "m365_accounts": "SELECT, UPDATE", "campaign_account": "SELECT, INSERT, UPDATE, DELETE",
        "contact_types": "INSERT, UPDATE, DELETE", "contacts": "INSERT, UPDATE (type_code, recipients)",
        "outbox_batches": "INSERT", "outbox": f"INSERT, UPDATE ({_DELIVERY}), DELETE",
        "transfer_log": f"INSERT, {_DEDUPE}",
        "teams_pacing": _PACING, **_REPLIES,
    },
    "campaign.admin": {
        "campaigns": "INSERT, UPDATE, DELETE", "campaign_activities": "INSERT, UPDATE, DELETE",
        "campaign_participants": "INSERT, UPDATE, DELETE", "campaign_reactions": "INSERT, UPDATE, DELETE",
        "campaign_actions": "INSERT, UPDATE, DELETE", "campaign_recorded_reactions": "INSERT",
        "campaign_runs": "INSERT, UPDATE", "campaign_worker_lease": "SELECT, INSERT, UPDATE, DELETE",
        "campaign_account": "SELECT, INSERT, UPDATE, DELETE", "system_settings": "INSERT, UPDATE",
        "outbox_batches": "INSERT", "outbox": f"INSERT, UPDATE ({_DELIVERY}), DELETE",
        "transfer_log": f"INSERT, {_DEDUPE}", "contacts": "INSERT, UPDATE (recipients)",
        "teams_pacing": _PACING, **_REPLIES,
    },
    "privacy.admin": {
        "privacy_settings": "INSERT, UPDATE, DELETE", "address_flags": "INSERT, UPDATE, DELETE",
        "transfer_log": "SELECT, INSERT, DELETE", "system_settings": "INSERT, UPDATE",
    },
    "privacy.read_log": {"transfer_log": "SELECT"},
    "system.admin": {
        "users": "INSERT, UPDATE, DELETE", "user_roles": "INSERT, UPDATE, DELETE",
        "roles": "INSERT, UPDATE, DELETE", "role_rights": "INSERT, UPDATE, DELETE",
        "audit": "SELECT", "system_settings": "INSERT, UPDATE, DELETE", "user_settings": "DELETE",
        "contact_types": "INSERT, UPDATE, DELETE", "addresses": "INSERT, UPDATE, DELETE",
        "address_words": "INSERT, DELETE", "contacts": "INSERT, UPDATE, DELETE",
        "directory_links": "INSERT, UPDATE, DELETE",  # link and unlink (crmkit.directory_links)
    },
}

# Tables only the owner touches (crmkit runs nothing on them as a user): listed so none is unclassified.
OWNER_ONLY = ("_crmkit_migrations",)

_TEMP_RIGHTS = (*_SENDERS, "teams.admin", "campaign.admin", "privacy.admin", "system.admin")

_OWN = "user_name = crmkit_user()"
_MINE_OR_STAGED = ("(batch_id LIKE 'staging:%' OR batch_id IN "
                   "(SELECT b.id FROM outbox_batches b WHERE b.user_name = crmkit_user()))")
_WORKERS = ("teams.admin", "campaign.admin")

# Row-level security: (table, group key, command, USING, WITH CHECK). Group key: "base" or a right.
POLICIES: tuple[tuple[str, str, str, str | None, str | None], ...] = (
    ("user_settings", "base", "ALL", _OWN, _OWN),
    ("user_settings", "system.admin", "ALL", "true", "true"),
    ("sessions", "base", "SELECT", "true", None),
    ("sessions", "base", "INSERT", None, _OWN),
    ("sessions", "base", "UPDATE", _OWN, _OWN),
    ("sessions", "base", "DELETE", _OWN, None),
    ("sessions", "system.admin", "ALL", "true", "true"),
    ("audit", "base", "INSERT", None, _OWN),
    ("audit", "system.admin", "ALL", "true", "true"),
    ("directory_links", "base", "SELECT", _OWN, None),
    ("directory_links", "system.admin", "ALL", "true", "true"),
    ("m365_accounts", "teams.send", "ALL", _OWN, _OWN),
    ("m365_accounts", "teams.admin", "ALL", "true", "true"),
    ("contacts", "base", "SELECT", "true", None),
    *(("contacts", r, "INSERT", None, _OWN) for r in _SENDERS),
    *(("contacts", r, "UPDATE", "true", "true") for r in _SENDERS),
    *(("contacts", w, "ALL", "true", "true") for w in (*_WORKERS, "system.admin")),
    ("outbox_batches", "base", "SELECT", "true", None),
    *(("outbox_batches", r, "INSERT", None, _OWN) for r in _SENDERS),
    *(("outbox_batches", w, "ALL", "true", "true") for w in _WORKERS),
    ("outbox", "base", "SELECT", "true", None),
    *(("outbox", r, "INSERT", None, _MINE_OR_STAGED) for r in _SENDERS),
    *(("outbox", r, "UPDATE", _MINE_OR_STAGED, _MINE_OR_STAGED) for r in _SENDERS),
    *(("outbox", r, "DELETE", "status = 'staged'", None) for r in _SENDERS),
    *(("outbox", w, "ALL", "true", "true") for w in _WORKERS),
    *(("transfer_log", r, "SELECT", "true", None) for r in _SENDERS),  # the four dedupe columns (grant)
    *(("transfer_log", r, "INSERT", None, _OWN) for r in _SENDERS),
    *(("transfer_log", w, "SELECT", "true", None) for w in _WORKERS),
    *(("transfer_log", w, "INSERT", None, "true") for w in _WORKERS),
    ("transfer_log", "privacy.read_log", "SELECT", "true", None),
    ("transfer_log", "privacy.admin", "SELECT", "true", None),
    ("transfer_log", "privacy.admin", "INSERT", None, _OWN),
    ("transfer_log", "privacy.admin", "DELETE", "true", None),
    ("system_settings", "base", "SELECT", "true", None),
    ("system_settings", "system.admin", "ALL", "true", "true"),
    # + one ALL policy per right over the keys crmkit.settings gives it (_settings_policies)
)

_UNSAFE = re.compile(r"[^a-z0-9_]")
NAME_MAX = 63  # PostgreSQL's identifier length (bytes)


def _ident(text: str, limit: int) -> str:
    """``text`` as a role-name part: lower-case [a-z0-9_]; a changed or long name gets 8 hex of its hash."""
    clean = _UNSAFE.sub("_", text.lower())
    if clean == text and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return f"{clean[:max(1, limit - 9)]}_{digest}"


def role_prefix(database: str) -> str:
    """``crmkit_<database>``: the start of every role crmkit makes for that database."""
    return f"crmkit_{_ident(database, 24)}"


def group_role(database: str, key: str) -> str:
    """The group role of ``key`` ("base", "filter" or a right such as ``teams.send``) in ``database``."""
    prefix = role_prefix(database)
    if key in ("base", "filter"):
        return f"{prefix}_{key}"
    if key not in RIGHTS:
        raise ValueError(f"unknown right {key!r}")
    return f"{prefix}_r_{key.replace('.', '_')}"


def user_role(database: str, user: str) -> str:
    """The login role of CRM user ``user`` in ``database`` (``crmkit_crm_u_anna``)."""
    prefix = f"{role_prefix(database)}_u_"
    return prefix + _ident(user, NAME_MAX - len(prefix))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- sync ----------------------------------------------------------------------------------------------

@dataclass
class SyncReport:
    """What :func:`sync_database_roles` changed (role names only; no secret)."""

    database: str
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    granted: list[tuple[str, str]] = field(default_factory=list)  # (member, group)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    users: dict[str, str] = field(default_factory=dict)  # CRM user -> login role
    unclassified: list[str] = field(default_factory=list)  # tables no list here knows: no grant at all


def _require_pg(store: Store) -> None:
    if store.dialect != "postgresql":
        raise StoreError(f"{store.path} is a DuckDB file: database roles exist on PostgreSQL only.")


def _tables(tx: Tx) -> set[str]:
    return {r[0] for r in tx.rows(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}


def unclassified_tables(tables: Iterable[str]) -> list[str]:
    """The tables of ``tables`` that no grant list here mentions (a new migration's, until classified)."""
    known = set(BASE) | set(OWNER_ONLY) | {t for grants in RIGHT_GRANTS.values() for t in grants}
    return sorted(set(tables) - known)


def _privileges(tx: Tx, table: str, text: str) -> str:
    if _DELIVERY not in text:
        return text
    cols = [r[0] for r in tx.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position", [table])]
    return text.replace(_DELIVERY, ", ".join(_q(c) for c in cols if c not in OUTBOX_CONTENT))


def _settings_policies() -> list[tuple[str, str, str, str | None, str | None]]:
    by_right: dict[str, list[str]] = {}
    for s in SETTINGS.values():
        by_right.setdefault(s.right, []).append(s.name)
    out = []
    for right, keys in sorted(by_right.items()):
        if right == "system.admin":
            continue  # all keys (POLICIES)
        cond = f"key IN ({', '.join(_lit(k) for k in sorted(keys))})"
        out.append(("system_settings", right, "ALL", cond, cond))
    return out


def _active_users(tx: Tx) -> dict[str, set[str]]:
    users: dict[str, set[str]] = {r[0]: set() for r in tx.rows("SELECT name FROM users WHERE active")}
    for name, right in tx.rows(
        'SELECT ur.user_name, rr."right" FROM user_roles ur JOIN role_rights rr ON rr.role = ur.role'
    ):
        if name in users and right in RIGHTS:
            users[name].add(right)
    return users


def _existing_roles(tx: Tx, prefix: str) -> set[str]:
    return {r[0] for r in tx.rows("SELECT rolname FROM pg_roles WHERE starts_with(rolname, ?)", [prefix + "_"])}


def _memberships(tx: Tx, prefix: str) -> set[tuple[str, str]]:
    return {(m, g) for m, g in tx.rows(
        "SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member "
        "JOIN pg_roles g ON g.oid = a.roleid WHERE starts_with(m.rolname, ?)", [prefix + "_"])}


def sync_database_roles(store: Store) -> SyncReport:
    """Make the database's roles, grants and row-level policies mirror the users table (see the module doc).

    Run as the database owner with CREATEROLE (or a superuser); idempotent; one transaction.

    Raises:
        StoreError: the store is a DuckDB file.
        psycopg.errors.InsufficientPrivilege: the login may not create roles or is not the tables' owner.
    """
    _require_pg(store)

    def run(tx: Tx) -> SyncReport:
        database = str(tx.one("SELECT current_database()"))
        prefix = role_prefix(database)
        report = SyncReport(database)
        tables = _tables(tx)
        report.unclassified = unclassified_tables(tables)
        existing = _existing_roles(tx, prefix)
        groups = {key: group_role(database, key) for key in ("base", "filter", *RIGHTS)}

        for name in groups.values():
            if name not in existing:
                tx.execute(f"CREATE ROLE {_q(name)} NOLOGIN")
                report.created.append(name)
        users = _active_users(tx)
        wanted_logins = {user_role(database, u): u for u in users}
        report.users = {u: r for r, u in wanted_logins.items()}
        for role in sorted(wanted_logins):
            if role not in existing:
                tx.execute(f"CREATE ROLE {_q(role)} LOGIN")  # no password until rotate_password
                report.created.append(role)
        for role in sorted(existing - set(wanted_logins) - set(groups.values())):
            if role.startswith(f"{prefix}_u_"):  # a removed or inactive user: no login any more
                tx.execute(f"DROP OWNED BY {_q(role)}")
                tx.execute(f"DROP ROLE {_q(role)}")
                report.dropped.append(role)

        # memberships: every user in base and in the group of each right they hold; base in filter
        wanted = {(groups["base"], groups["filter"])}
        for role, user in wanted_logins.items():
            wanted.add((role, groups["base"]))
            wanted |= {(role, groups[r]) for r in users[user]}
        have = _memberships(tx, prefix)
        for member, group in sorted(wanted - have):
            tx.execute(f"GRANT {_q(group)} TO {_q(member)}")
            report.granted.append((member, group))
        for member, group in sorted(have - wanted):
            if group.startswith(prefix + "_"):
                tx.execute(f"REVOKE {_q(group)} FROM {_q(member)}")
                report.revoked.append((member, group))

        _grant_all(tx, database, groups, tables)
        _function(tx, wanted_logins)
        _owner_functions(tx, groups)
        _policies(tx, groups, tables)
        return report

    return store.write(run, retries=3)


def _grant_all(tx: Tx, database: str, groups: Mapping[str, str], tables: set[str]) -> None:
    db = _q(database)
    everyone = ", ".join(_q(g) for g in groups.values())
    tx.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")  # CONNECT and TEMPORARY: crmkit's roles only
    tx.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # PostgreSQL 15's default; older clusters differ
    tx.execute(f"REVOKE ALL ON DATABASE {db} FROM {everyone}")
    tx.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, {everyone}")  # columns go with them
    tx.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC, {everyone}")
    tx.execute(f"GRANT CONNECT ON DATABASE {db} TO {_q(groups['base'])}")
    tx.execute(f"GRANT TEMPORARY ON DATABASE {db} TO {', '.join(_q(groups[r]) for r in _TEMP_RIGHTS)}")
    tx.execute(f"GRANT USAGE ON SCHEMA public TO {_q(groups['base'])}, {_q(groups['filter'])}")
    tx.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {_q(groups['base'])}")  # id defaults
    plan = [("base", BASE), *RIGHT_GRANTS.items()]
    for key, grants in plan:
        for table, text in grants.items():
            if table in tables:
                tx.execute(f"GRANT {_privileges(tx, table, text)} ON {_q(table)} TO {_q(groups[key])}")
    # The columns an analyst's filter may name are the table's (sql_filter.address_columns); the search words,
    # which the record table's query joins beside the filter, are made of those columns.
    for table in ("addresses", "address_words", "address_count"):
        if table in tables:
            tx.execute(f"GRANT SELECT ON {_q(table)} TO {_q(groups['filter'])}")


def _function(tx: Tx, logins: Mapping[str, str]) -> None:
    """``crmkit_user()``: the CRM user name of ``current_user`` (NULL for a role that is no CRM user's)."""
    cases = " ".join(f"WHEN {_lit(role)} THEN {_lit(user)}" for role, user in sorted(logins.items()))
    body = f"SELECT CASE CAST(current_user AS text) {cases} ELSE NULL END" if cases else "SELECT CAST(NULL AS text)"
    tx.execute("CREATE OR REPLACE FUNCTION crmkit_user() RETURNS text LANGUAGE sql STABLE "
               f"SET search_path = pg_catalog AS {_lit(body)}")


# Operations PostgreSQL allows a table's owner only, run for a right's group by a SECURITY DEFINER function (the
# owner's): name -> (the right, the index it needs, the body). Nobody else may EXECUTE it (not PUBLIC).
COMPACT_INDEX = "transfer_log_address_time"  # migration 12 (crmkit.privacy.retention clusters by it)
OWNER_FUNCTIONS: dict[str, tuple[str, str, str]] = {
    "crmkit_compact_transfer_log": (
        "privacy.admin", COMPACT_INDEX,
        "BEGIN CLUSTER {schema}.transfer_log USING " + COMPACT_INDEX + "; "
        "RETURN (SELECT count(*) FROM {schema}.transfer_log); END",
    ),
}


def _owner_functions(tx: Tx, groups: Mapping[str, str]) -> None:
    schema = _q(str(tx.one("SELECT current_schema()")))
    indexes = {r[0] for r in tx.rows("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
    for name, (right, index, body) in OWNER_FUNCTIONS.items():
        if index not in indexes:  # a database before that index: the operation needs the owner itself
            tx.execute(f"DROP FUNCTION IF EXISTS {name}()")
            continue
        tx.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER "
                   f"SET search_path = pg_catalog, pg_temp AS {_lit(body.format(schema=schema))}")
        tx.execute(f"REVOKE ALL ON FUNCTION {name}() FROM PUBLIC")
        tx.execute(f"GRANT EXECUTE ON FUNCTION {name}() TO {_q(groups[right])}")


def compact_transfer_log(tx: Tx) -> int | None:
    """Rewrite the transfer log in address order (PostgreSQL's CLUSTER, the owner's command) through the owner's
    function, as a ``privacy.admin`` login may; its row count. None when the database has no such function
    (roles never synced): then only the owner can, with CLUSTER itself.

    Raises:
        psycopg.errors.InsufficientPrivilege: the login holds no ``privacy.admin``.
    """
    if tx.dialect != "postgresql" or tx.one("SELECT to_regprocedure('crmkit_compact_transfer_log()') IS NULL"):
        return None
    return int(tx.one("SELECT crmkit_compact_transfer_log()"))


def _policies(tx: Tx, groups: Mapping[str, str], tables: set[str]) -> None:
    """Each policy is named after a hash of its definition, so a sync that changes nothing touches none (CREATE
    and DROP POLICY lock their table exclusively, waiting for every transaction on it)."""
    wanted: dict[tuple[str, str], str] = {}
    for table, key, command, using, check in (*POLICIES, *_settings_policies()):
        if table not in tables:
            continue
        sql = f"FOR {command} TO {_q(groups[key])}"
        if using is not None:
            sql += f" USING ({using})"
        if check is not None:
            sql += f" WITH CHECK ({check})"
        digest = hashlib.sha256(f"{table} {sql}".encode()).hexdigest()[:12]
        wanted[(table, f"crmkit_{digest}")] = sql
    have = {(t, n) for t, n in tx.rows("SELECT tablename, policyname FROM pg_policies WHERE schemaname = "
                                       "current_schema() AND starts_with(policyname, 'crmkit_')")}
    for table, name in sorted(have - set(wanted)):
        tx.execute(f"DROP POLICY {_q(name)} ON {_q(table)}")
    for table, name in sorted(set(wanted) - have):
        tx.execute(f"CREATE POLICY {_q(name)} ON {_q(table)} {wanted[(table, name)]}")
    for (table,) in tx.rows("SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                            "AND relkind = 'r' AND NOT relrowsecurity"):
        if table in {t for t, _ in wanted}:
            tx.execute(f"ALTER TABLE {_q(table)} ENABLE ROW LEVEL SECURITY")  # the owner is not subject to it


def drop_database_roles(store: Store) -> list[str]:
    """Drop every role :func:`sync_database_roles` made for this database (before dropping the database, or
    to stop enforcing rights in it); returns their names. Row-level security stays on (the owner bypasses it)."""
    _require_pg(store)

    def run(tx: Tx) -> list[str]:
        prefix = role_prefix(str(tx.one("SELECT current_database()")))
        roles = sorted(_existing_roles(tx, prefix), key=lambda r: ("_u_" not in r, r))  # logins first
        for role in roles:
            tx.execute(f"DROP OWNED BY {_q(role)}")  # its privileges and policies in this database
        for role in roles:
            tx.execute(f"DROP ROLE {_q(role)}")
        return roles

    return store.write(run, retries=3)


# -- passwords ------------------------------------------------------------------------------------------

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677, as libpq's
    PQencryptPasswordConn makes it): what ``ALTER ROLE … PASSWORD`` is given, so the server never sees the
    password itself. ``password`` is ASCII here (crmkit's are; SASLprep leaves ASCII as it is)."""
    if not password.isascii():
        raise ValueError("scram_verifier takes an ASCII password (no SASLprep here)")
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass
class UserLogin:
    """A CRM user's database login after :func:`rotate_password`. ``url`` has no password; ``passfile`` is
    where it was written (0600), or ``password`` holds it when no folder was given (hand it over once;
    it is never shown by ``repr``)."""

    user: str
    role: str
    url: str
    passfile: Path | None = None
    password: str | None = field(default=None, repr=False)


def _passfile_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def passfile_line(host: str, port: str, database: str, role: str, password: str) -> str:
    """One libpq passfile line (``host:port:database:role:password``, ``:`` and ``\\`` escaped), for a caller
    that writes the file itself (the hub writes it into a person's home as that person's file)."""
    return ":".join(_passfile_escape(v) for v in (host, port, database, role, password))


def _write_passfile(path: Path, host: str, port: str, database: str, role: str, password: str) -> None:
    """Put one libpq passfile line for (host, port, database, role) into ``path`` (0600), replacing the old one."""
    key = ":".join(_passfile_escape(v) for v in (host, port, database, role)) + ":"
    lines = []
    if path.exists():
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith(key)]
    lines.append(key + _passfile_escape(password))
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def rotate_password(store: Store, user: str, *, home: Path | None = None) -> UserLogin:
    """Give CRM user ``user``'s login role a new random password (run as the owner, after a sync).

    The server receives only its SCRAM-SHA-256 verifier. With ``home`` (that person's ``CRMKIT_HOME``) the
    password goes to ``home/pgpass`` (a libpq passfile, 0600) and ``url`` names it (``?passfile=``);
    otherwise it is returned once in ``UserLogin.password``. It is stored in no CRM table.

    Raises:
        UnknownUser: ``user`` has no login role (not an active user, or roles not synced yet).
    """
    _require_pg(store)
    password = secrets.token_urlsafe(32)
    verifier = scram_verifier(password)

    def run(tx: Tx) -> tuple[str, str]:
        database = str(tx.one("SELECT current_database()"))
        role = user_role(database, user)
        if not tx.rows("SELECT 1 FROM pg_roles WHERE rolname = ? AND rolcanlogin", [role]):
            raise UnknownUser(f"CRM user {user!r} has no database login ({role}); add the user and run "
                              "`crmkit db-roles` first.")
        tx.execute(f"ALTER ROLE {_q(role)} PASSWORD {_lit(verifier)}")
        return database, role

    database, role = store.write(run, retries=3)
    parts = urlsplit(store.backend.url)  # type: ignore[union-attr]
    host, port = parts.hostname or "localhost", str(parts.port or 5432)
    netloc = f"{role}@{host}" + (f":{parts.port}" if parts.port else "")
    if home is None:
        return UserLogin(user, role, urlunsplit((parts.scheme, netloc, parts.path, "", "")), password=password)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    passfile = home / "pgpass"
    _write_passfile(passfile, host, port, database, role, password)
    url = urlunsplit((parts.scheme, netloc, parts.path, f"passfile={passfile}", ""))
    return UserLogin(user, role, url, passfile=passfile)


# -- sessions -------------------------------------------------------------------------------------------

def login_crm_user(tx: Tx) -> str | None:
    """The CRM user whose role this transaction's login is (``crmkit_user()``); None for any other login, e.g.
    the owner, and where the roles were never synced (then only the owner can be connected)."""
    if tx.one("SELECT to_regprocedure('crmkit_user()') IS NULL"):
        return None
    value = tx.one("SELECT crmkit_user()")
    return None if value is None else str(value)


def crm_user_of_login(store: Store, requested: str | None) -> str | None:
    """The CRM user a PostgreSQL session is: ``requested`` when the login is no CRM user's role (the owner),
    else the user the role belongs to. A user's role opening another name is refused.

    Raises:
        PermissionDenied: the login is ``anna``'s role and ``requested`` names someone else.
    """
    if store.dialect != "postgresql":
        return requested
    mapped = store.read(login_crm_user)
    if mapped is None or requested in (None, mapped):
        return mapped or requested
    raise PermissionDenied(
        f"This database login belongs to CRM user {mapped!r}; it cannot open a session as {requested!r}. "
        f"Open without user= (or CRMKIT_USER={mapped}), or sign in with {requested!r}'s own login.",
        user=requested,
    )


def enter_filter_role(tx: Tx, settings: Mapping[str, str] | None = None) -> bool:
    """Inside a (read-only) transaction: run what follows as the filter role, which reads the address columns
    and nothing else (``set_config('role', …, true)`` is ``SET LOCAL ROLE``: it ends with the transaction), and
    apply ``settings`` (``SET LOCAL`` each), all in one statement (one round trip: a record-table page pays it
    once per transaction). The role is named from the connection's database; the switch happens only where the
    login is a member. False when there is no such role (DuckDB, or roles never synced), so the caller runs as
    before."""
    if tx.dialect != "postgresql":
        return False
    pairs = list((settings or {}).items())
    sets = "set_config(?, ?, true), " * len(pairs)
    row = tx.rows(
        f"SELECT {sets}(SELECT set_config('role', rolname, true) FROM pg_roles WHERE rolname = ? "
        "AND pg_has_role(current_user, oid, 'MEMBER'))",
        [*(v for pair in pairs for v in pair), group_role(tx.database, "filter")])[0]  # type: ignore[attr-defined]
    return row[-1] is not None
