"""crmkit's rights held by PostgreSQL itself (crmkit.store.pg_roles): each built-in role's database login, tried
with raw psycopg — what the role may do works, what it may not raises InsufficientPrivilege (or, for rows
row-level security hides, changes nothing) and leaves the database as it was.

The test cluster trusts every loopback login (``-A trust``), so these tests prove privileges, not passwords;
test_password_is_a_scram_verifier switches this database's crmkit logins to SCRAM in pg_hba.conf for itself.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pytest
from conftest import _migrated_template
from support.postgres import PgCluster, fresh_database_url

import crmkit
from crmkit.errors import PermissionDenied
from crmkit.store import Store
from crmkit.store.pg_roles import (
    compact_transfer_log,
    drop_database_roles,
    enter_filter_role,
    group_role,
    rotate_password,
    scram_verifier,
    sync_database_roles,
    unclassified_tables,
    user_role,
)
from crmkit.store.postgres import close_pools

pytestmark = pytest.mark.postgres

# one CRM user per built-in role (crmkit/rights.py)
USERS = {"admin": "admin", "tina": "teams_admin", "pia": "privacy_officer", "carl": "campaign_manager",
         "sam": "sales", "vera": "viewer"}
T0 = datetime(2026, 11, 1, 12, 0, 0)
Denied = psycopg.errors.InsufficientPrivilege


@dataclass
class Db:
    cluster: PgCluster
    url: str  # as the owner (the cluster's superuser)
    name: str
    store: Store
    address_id: int

    def role_url(self, user: str) -> str:
        return self.url.replace("postgres@", f"{user_role(self.name, user)}@", 1)

    def connect(self, user: str) -> psycopg.Connection[Any]:
        return psycopg.connect(self.role_url(user), connect_timeout=10)

    def owner(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []


def _address(url: str) -> None:
    """Address 1, written as the owner (with its search words, as crmkit.addresses keeps them)."""
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO addresses (id, kind, company, first_name, last_name, city, email, created_by, "
                     "created_at, modified_by, modified_at) VALUES (1, 'person', 'Muster GmbH', 'Anna', 'Muster', "
                     "'Köln', 'anna@example.com', 'admin', %s, 'admin', %s)", (T0, T0))
        conn.execute("INSERT INTO address_words VALUES ('anna', 1), ('muster', 1), ('koln', 1), ('köln', 1)")


def _seed(url: str) -> None:
    """Rows every test looks at, written as the owner."""
    _address(url)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO system_settings VALUES ('teams.enabled', 'true', %s, 'admin'), "
                     "('privacy.retention_days', '730', %s, 'admin')", (T0, T0))
        for user in ("sam", "tina"):
            conn.execute("INSERT INTO m365_accounts (user_name, home_account_id, username, added_at) "
                         "VALUES (%s, %s, %s, %s)", (user, f"hid-{user}", f"{user}@contoso.example", T0))
        conn.execute("INSERT INTO campaign_account (id, mode, username, password_ciphertext, set_at, set_by) "
                     "VALUES (1, 'password', 'campaign@contoso.example', 'gAAAA-cipher', %s, 'admin')", (T0,))
        conn.execute("INSERT INTO transfer_log (logged_at, user_name, channel, trigger, address_id, fields, outcome, "
                     "message_key, dedupe_key) VALUES (%s, 'tina', 'teams_manual', 'manual', 1, ARRAY['email'], "
                     "'sent', 'k1', 11)", (T0,))
        conn.execute("INSERT INTO outbox_batches (id, created_at, user_name, channel, trigger, subject, "
                     "record_contact, status) VALUES ('b-tina', %s, 'tina', 'teams_manual', 'manual', 's', false, "
                     "'open')", (T0,))
        conn.execute("INSERT INTO outbox (id, batch_id, seq, marker, chat_kind, members, recipients, address_ids, "
                     "field_names, payload, status) VALUES ('m-tina', 'b-tina', 0, 'mk', 'oneOnOne', '[]', '[]', "
                     "'[1]', '{}', '{\"text\": \"hi\"}', 'pending')")


def _close(db: Db, users: tuple[str, ...] = (*USERS, "kai")) -> None:
    """crmkit's pools of the logins first (they would reconnect to a dropped database), then the roles."""
    for user in users:
        close_pools(db.role_url(user))
    drop_database_roles(db.store)


@pytest.fixture(scope="module")
def db(pg_cluster: PgCluster) -> Iterator[Db]:
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        crm = crmkit.open(url)
        for name, role in USERS.items():
            if name != "admin":
                crm.add_user(name, name.title(), roles=[role])
        _seed(url)
        address_id = 1
        store = crm.store
        sync_database_roles(store)
        db = Db(pg_cluster, url, url.rsplit("/", 1)[1], store, address_id)
        try:
            yield db
        finally:
            _close(db)


def denied(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> None:
    """``sql`` is refused with InsufficientPrivilege (its transaction rolled back)."""
    with pytest.raises(Denied):
        conn.execute(sql, params)
    conn.rollback()


def rows(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...] = ()) -> int:
    """Run ``sql`` (it must be allowed) and roll back: its row count, or the number of rows read."""
    cur = conn.execute(sql, params)
    n = len(cur.fetchall()) if cur.description else cur.rowcount
    conn.rollback()
    return n


def _snapshot(db: Db) -> tuple[Any, ...]:
    """The rows the refused statements aimed at, to prove nothing changed."""
    return tuple(db.owner(sql) for sql in (
        "SELECT key, value FROM system_settings ORDER BY key",
        "SELECT name, display_name FROM users ORDER BY name",
        "SELECT user_name, role FROM user_roles ORDER BY user_name, role",
        "SELECT user_name, username, consent_state FROM m365_accounts ORDER BY user_name",
        "SELECT username, password_ciphertext FROM campaign_account",
        "SELECT id, user_name, outcome, detail FROM transfer_log ORDER BY id",
        "SELECT id, status, payload FROM outbox ORDER BY id",
        "SELECT id, company, city FROM addresses ORDER BY id",
        "SELECT count(*) FROM audit",
    ))


@pytest.fixture
def unchanged(db: Db) -> Iterator[None]:
    before = _snapshot(db)
    yield
    assert _snapshot(db) == before


def test_every_table_has_a_place_in_the_grants(db: Db) -> None:
    tables = [r[0] for r in db.owner("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    assert len(tables) > 20
    assert unclassified_tables(tables) == []


def test_viewer_reads_addresses_and_touches_no_setting_account_or_transfer_log(db: Db, unchanged: None) -> None:
    with db.connect("vera") as conn:
        assert rows(conn, "SELECT company, first_name, email FROM addresses") == 1
        assert rows(conn, "SELECT * FROM contacts") == 0
        # crmkit reads the system settings in every session (language, Teams switch): read, never write
        assert rows(conn, "SELECT key, value FROM system_settings") == 2
        denied(conn, "UPDATE system_settings SET value = 'false' WHERE key = 'teams.enabled'")
        denied(conn, "INSERT INTO system_settings VALUES ('ui.default_language', '\"en\"', now(), 'vera')")
        denied(conn, "DELETE FROM system_settings")
        for table in ("m365_accounts", "campaign_account", "transfer_log", "audit", "consent_requests"):
            denied(conn, f"SELECT * FROM {table}")
        denied(conn, "SELECT password_ciphertext FROM campaign_account")
        denied(conn, "UPDATE m365_accounts SET consent_state = 'granted'")
        denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        denied(conn, "DELETE FROM transfer_log")
        denied(conn, "INSERT INTO transfer_log (logged_at, user_name, channel, trigger, address_id, fields, outcome) "
                     "VALUES (now(), 'vera', 'teams_manual', 'manual', 1, ARRAY['email'], 'sent')")
        denied(conn, "INSERT INTO outbox_batches (id, created_at, user_name, channel, trigger, subject, "
                     "record_contact, status) VALUES ('b-vera', now(), 'vera', 'teams_manual', 'manual', 's', "
                     "false, 'open')")
        denied(conn, "UPDATE outbox SET status = 'cancelled'")
        denied(conn, "UPDATE addresses SET city = 'Bonn'")
        denied(conn, "INSERT INTO users (name, display_name) VALUES ('mallory', 'M')")
        denied(conn, "INSERT INTO user_roles VALUES ('vera', 'admin')")
        denied(conn, f'SET ROLE "{group_role(db.name, "system.admin")}"')  # a group she is not in
        denied(conn, f'GRANT "{group_role(db.name, "system.admin")}" TO "{user_role(db.name, "vera")}"')
        denied(conn, "ALTER ROLE CURRENT_USER CREATEROLE")
        denied(conn, "CREATE TABLE public.mine (x int)")
        denied(conn, "CREATE TEMP TABLE mine (x int)")
        # her own settings and session rows, in her own name only
        assert rows(conn, "INSERT INTO user_settings VALUES ('vera', 'language', '\"en\"', now())") == 1
        denied(conn, "INSERT INTO user_settings VALUES ('admin', 'language', '\"en\"', now())")
        denied(conn, "INSERT INTO audit (changed_at, user_name, scope, key) VALUES (now(), 'admin', 's', 'k')")
        assert rows(conn, "INSERT INTO audit (changed_at, user_name, scope, key) VALUES (now(), 'vera', 's', 'k')") == 1


def test_sales_appends_to_outbox_and_transfer_log_but_never_rewrites_them(db: Db, unchanged: None) -> None:
    with db.connect("sam") as conn:
        conn.execute("INSERT INTO outbox_batches (id, created_at, user_name, channel, trigger, subject, "
                     "record_contact, status) VALUES ('b-sam', now(), 'sam', 'teams_manual', 'manual', 's', false, "
                     "'open')")
        conn.execute("INSERT INTO outbox (id, batch_id, seq, marker, chat_kind, members, recipients, address_ids, "
                     "field_names, payload, status) VALUES ('m-sam', 'b-sam', 0, 'mk2', 'oneOnOne', '[]', '[]', "
                     "'[1]', '{}', '{}', 'pending')")
        # delivery state of his own message: allowed; its content: never
        assert conn.execute("UPDATE outbox SET status = 'sent', message_id = 'x', finished_at = now() "
                            "WHERE id = 'm-sam'").rowcount == 1
        with pytest.raises(Denied):
            conn.execute("UPDATE outbox SET payload = '{\"text\": \"other\"}' WHERE id = 'm-sam'")
        conn.rollback()
        with pytest.raises(Denied):
            conn.execute("UPDATE outbox SET recipients = '[\"someone\"]'")
        conn.rollback()
        # another user's batch is out of his reach (row-level security: no row matches)
        assert rows(conn, "UPDATE outbox SET status = 'cancelled' WHERE id = 'm-tina'") == 0
        assert rows(conn, "DELETE FROM outbox WHERE id = 'm-tina'") == 0
        denied(conn, "INSERT INTO outbox_batches (id, created_at, user_name, channel, trigger, subject, "
                     "record_contact, status) VALUES ('b-x', now(), 'tina', 'teams_manual', 'manual', 's', false, "
                     "'open')")
        # the transfer log: append in his own name, read back only the duplicate check's columns
        insert = ("INSERT INTO transfer_log (logged_at, user_name, channel, trigger, address_id, fields, outcome, "
                  "message_key, dedupe_key) VALUES (now(), %s, 'teams_manual', 'manual', 1, ARRAY['email'], 'sent', "
                  "'k2', 22)")
        assert rows(conn, insert, ("sam",)) == 1
        denied(conn, insert, ("admin",))
        assert rows(conn, "SELECT dedupe_key, message_key, address_id, recipient_id FROM transfer_log") == 1
        denied(conn, "SELECT user_name, purpose FROM transfer_log")
        denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        denied(conn, "DELETE FROM transfer_log")
        denied(conn, "TRUNCATE transfer_log")
        # bulk inserts go through a temp table (PgTx.register)
        assert rows(conn, "CREATE TEMP TABLE bulk (x int)") == -1
        # records.write: addresses; but no settings, users, campaign account, other people's accounts
        assert rows(conn, "UPDATE addresses SET city = 'Bonn'") == 1
        assert rows(conn, "SELECT user_name FROM m365_accounts") == 1  # his own only
        # the campaign account: read (a reaction he records runs its actions from it) but never set
        assert rows(conn, "SELECT username FROM campaign_account") == 1
        denied(conn, "UPDATE campaign_account SET username = 'me@contoso.example'")
        denied(conn, "DELETE FROM campaign_account")
        denied(conn, "UPDATE system_settings SET value = 'false'")
        denied(conn, "INSERT INTO users (name, display_name) VALUES ('mallory', 'M')")
        denied(conn, "DELETE FROM addresses")


def test_only_admin_changes_users_roles_and_every_setting(db: Db) -> None:
    with db.connect("admin") as conn:
        assert rows(conn, "UPDATE system_settings SET value = 'false' WHERE key = 'teams.enabled'") == 1
        assert rows(conn, "UPDATE system_settings SET value = '365' WHERE key = 'privacy.retention_days'") == 1
        assert rows(conn, "INSERT INTO users (name, display_name) VALUES ('neu', 'Neu')") == 1
        assert rows(conn, "INSERT INTO user_roles VALUES ('vera', 'admin')") == 1
        assert rows(conn, "SELECT * FROM audit") >= 0
        assert rows(conn, "SELECT * FROM campaign_account") == 1
        assert rows(conn, "DELETE FROM transfer_log WHERE logged_at < now()") == 1  # the retention purge
        # append-only holds for admins too
        denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        # owner-only: the schema
        denied(conn, "ALTER TABLE users ADD COLUMN x int")
        denied(conn, "DROP TABLE audit")
    for user in ("tina", "pia", "carl", "sam", "vera"):
        with db.connect(user) as conn:
            denied(conn, "INSERT INTO users (name, display_name) VALUES ('neu', 'Neu')")
            denied(conn, "UPDATE users SET display_name = 'x'")
            denied(conn, "DELETE FROM user_roles")
            denied(conn, "INSERT INTO role_rights VALUES ('viewer', 'system.admin')")
            denied(conn, "INSERT INTO system_settings VALUES ('ui.default_language', '\"en\"', now(), 'x')")


def test_teams_admin_changes_teams_settings_only(db: Db, unchanged: None) -> None:
    with db.connect("tina") as conn:
        assert rows(conn, "UPDATE system_settings SET value = 'false' WHERE key = 'teams.enabled'") == 1
        assert rows(conn, "INSERT INTO system_settings VALUES ('teams.client_id', '\"c\"', now(), 'tina')") == 1
        assert rows(conn, "UPDATE system_settings SET value = '1' WHERE key = 'privacy.retention_days'") == 0
        denied(conn, "INSERT INTO system_settings VALUES ('ui.default_language', '\"en\"', now(), 'tina')")
        assert rows(conn, "UPDATE m365_accounts SET consent_state = 'granted'") == 2  # consent of every account
        assert rows(conn, "SELECT * FROM campaign_account") == 1
        assert rows(conn, "INSERT INTO display_formats VALUES ('teams', '{}', now(), 'tina')") == 1
        denied(conn, "SELECT user_name, purpose FROM transfer_log")
        denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        denied(conn, "DELETE FROM transfer_log")
        denied(conn, "INSERT INTO privacy_settings VALUES ('mode', '\"log\"', now(), 'tina')")


def test_privacy_officer_reads_and_purges_the_log_but_sends_nothing(db: Db, unchanged: None) -> None:
    with db.connect("pia") as conn:
        assert rows(conn, "SELECT user_name, purpose, fields FROM transfer_log") == 1
        assert rows(conn, "DELETE FROM transfer_log WHERE logged_at < now()") == 1
        denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        assert rows(conn, "UPDATE system_settings SET value = '365' WHERE key = 'privacy.retention_days'") == 1
        assert rows(conn, "UPDATE system_settings SET value = 'false' WHERE key = 'teams.enabled'") == 0
        assert rows(conn, "INSERT INTO address_flags VALUES (1, 'no_teams', 'pia', now())") == 1
        assert rows(conn, "INSERT INTO privacy_settings VALUES ('mode', '\"log\"', now(), 'pia')") == 1
        denied(conn, "INSERT INTO outbox_batches (id, created_at, user_name, channel, trigger, subject, "
                     "record_contact, status) VALUES ('b-pia', now(), 'pia', 'teams_manual', 'manual', 's', false, "
                     "'open')")
        denied(conn, "INSERT INTO transfer_log (logged_at, user_name, channel, trigger, address_id, fields, outcome) "
                     "VALUES (now(), 'tina', 'teams_manual', 'manual', 1, ARRAY['email'], 'sent')")
        denied(conn, "UPDATE addresses SET city = 'Bonn'")  # privacy_officer has no records.write
        denied(conn, "SELECT * FROM m365_accounts")
        denied(conn, "SELECT * FROM campaign_account")


def test_transfer_log_compaction_runs_through_the_owners_function_for_privacy_admins_only(db: Db) -> None:
    with db.connect("pia") as conn:
        denied(conn, "CLUSTER transfer_log USING transfer_log_address_time")  # the owner's command
        assert conn.execute("SELECT crmkit_compact_transfer_log()").fetchone() == (1,)
        conn.commit()
    for user in ("sam", "tina", "carl", "vera"):
        with db.connect(user) as conn:
            denied(conn, "SELECT crmkit_compact_transfer_log()")
    pia = Store(db.role_url("pia"))
    assert pia.write(compact_transfer_log) == 1
    assert db.owner("SELECT user_name, outcome FROM transfer_log") == [("tina", "sent")]


def test_campaign_manager_edits_campaigns_and_its_sender_not_settings_or_log(db: Db, unchanged: None) -> None:
    with db.connect("carl") as conn:
        assert rows(conn, "INSERT INTO campaigns (name, created_at, created_by, modified_at, modified_by) "
                          "VALUES ('Herbst', now(), 'carl', now(), 'carl')") == 1
        assert rows(conn, "SELECT password_ciphertext FROM campaign_account") == 1
        assert rows(conn, "INSERT INTO campaign_worker_lease VALUES ('w', 'h', 1, 'host', now(), now(), now())") == 1
        assert rows(conn, "UPDATE system_settings SET value = 'false' WHERE key = 'teams.enabled'") == 0
        denied(conn, "SELECT user_name, purpose FROM transfer_log")
        denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        denied(conn, "DELETE FROM transfer_log")
        denied(conn, "INSERT INTO users (name, display_name) VALUES ('neu', 'Neu')")
        assert rows(conn, "SELECT * FROM m365_accounts") == 0  # he sends (teams.send): his own accounts, none here
        assert rows(conn, "UPDATE m365_accounts SET consent_state = 'granted'") == 0
        denied(conn, "INSERT INTO address_flags VALUES (1, 'no_teams', 'carl', now())")


def test_filter_role_reads_the_address_columns_and_nothing_else(db: Db) -> None:
    filter_role = group_role(db.name, "filter")
    with db.connect("vera") as conn:
        conn.execute(f'SET LOCAL ROLE "{filter_role}"')
        assert len(conn.execute("SELECT * FROM addresses").fetchall()) == 1
        conn.rollback()
        conn.execute(f'SET LOCAL ROLE "{filter_role}"')
        assert len(conn.execute("SELECT address_id FROM address_words WHERE word LIKE 'mus%'").fetchall()) == 1
        conn.rollback()
        for table in ("contacts", "users", "system_settings", "user_settings", "outbox", "outbox_batches",
                      "sessions", "audit", "transfer_log", "m365_accounts", "campaign_account", "campaigns",
                      "address_flags"):
            conn.execute(f'SET LOCAL ROLE "{filter_role}"')
            denied(conn, f"SELECT * FROM {table}")
        conn.execute(f'SET LOCAL ROLE "{filter_role}"')
        denied(conn, "UPDATE addresses SET city = 'x'")
    # what crmkit's query path calls: on a store opened as the viewer's login
    store = Store(db.role_url("vera"))

    def read(tx: Any) -> tuple[bool, str, int]:
        entered = enter_filter_role(tx)
        return entered, str(tx.one("SELECT current_user")), int(tx.one(
            "SELECT count(*) FROM addresses JOIN (SELECT address_id FROM address_words WHERE word LIKE ?) AS h "
            "ON addresses.id = h.address_id WHERE city = ?", ["mus%", "Köln"]))

    assert store.read(read) == (True, filter_role, 1)

    def forbidden(tx: Any) -> None:
        enter_filter_role(tx)
        tx.one("SELECT count(*) FROM users")

    with pytest.raises(Denied):
        store.read(forbidden)
    assert store.read(lambda tx: tx.one("SELECT current_user")) == user_role(db.name, "vera")  # reset with the tx
    assert db.store.read(enter_filter_role) is True  # the owner's analyst SQL runs under it too


def test_crmkit_opens_a_login_as_its_own_user_only(db: Db) -> None:
    crm = crmkit.open(db.role_url("vera"))
    assert crm.user.name == "vera"
    assert len(crm.addresses()) == 1
    assert crm.setting("teams.enabled") is True
    with pytest.raises(PermissionDenied):
        crmkit.open(db.role_url("vera"), user="admin")
    assert crmkit.open(db.role_url("sam"), user="sam").user.rights >= {"teams.send", "records.write"}


def test_a_sync_that_changes_nothing_waits_for_no_open_transaction(db: Db) -> None:
    """Sessions keep working while an admin syncs again: with a transaction open on every table (a reader's
    AccessShare locks), a sync with nothing to change needs no table lock and finishes within 2 s."""
    tables = [t for (t,) in db.owner("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    with psycopg.connect(db.url) as reader:
        for table in tables:
            reader.execute(f'SELECT count(*) FROM "{table}"').fetchall()
        quick = Store(db.url, lock_timeout=2)
        report = sync_database_roles(quick)
        assert (report.created, report.dropped, report.granted, report.revoked) == ([], [], [], [])
        reader.rollback()


def test_role_names_are_per_database_and_never_meet() -> None:
    assert user_role("crm", "anna") == "crmkit_crm_u_anna"
    assert group_role("crm", "teams.send") == "crmkit_crm_r_teams_send"
    assert user_role("crm", "Anna") != user_role("crm", "anna")  # changed by the clean-up: a hash is added
    assert user_role("crm", "a-b") != user_role("crm", "a_b")
    assert user_role("crm", "anna") != user_role("crm2", "anna")
    long = user_role("a" * 80, "b" * 80)
    assert len(long.encode()) <= 63 and long != user_role("a" * 80, "b" * 79 + "c")


def test_a_login_of_one_crm_database_cannot_enter_another(db: Db) -> None:
    """Roles are the cluster's; each database lets only its own crmkit roles connect."""
    with fresh_database_url(db.cluster, _migrated_template(db.cluster)) as other:
        store = Store(other)
        sync_database_roles(store)
        try:
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(other.replace("postgres@", f"{user_role(db.name, 'admin')}@", 1),
                                connect_timeout=10).close()
        finally:
            drop_database_roles(store)


def test_sync_follows_the_users_table(db: Db) -> None:
    crm = crmkit.open(db.url)
    crm.add_user("kai", "Kai", roles=["viewer"])
    report = sync_database_roles(db.store)
    kai = user_role(db.name, "kai")
    assert report.created == [kai]
    assert (kai, group_role(db.name, "base")) in report.granted
    crm.set_roles("kai", ["sales"])
    report = sync_database_roles(db.store)
    assert report.granted == [(kai, group_role(db.name, "records.write")), (kai, group_role(db.name, "teams.send"))]
    with db.connect("kai") as conn:
        assert rows(conn, "UPDATE addresses SET city = city") == 1
    db.owner("UPDATE users SET active = false WHERE name = 'kai'")
    report = sync_database_roles(db.store)
    assert report.dropped == [kai]
    assert not db.owner("SELECT 1 FROM pg_roles WHERE rolname = %s", (kai,))
    again = sync_database_roles(db.store)  # idempotent: nothing left to change
    assert (again.created, again.dropped, again.granted, again.revoked) == ([], [], [], [])


def test_password_is_a_scram_verifier_and_appears_nowhere(db: Db, tmp_path: Path) -> None:
    login = rotate_password(db.store, "vera", home=tmp_path / "home")
    assert login.password is None and login.passfile is not None
    assert oct(login.passfile.stat().st_mode & 0o777) == "0o600"
    password = login.passfile.read_text().strip().rsplit(":", 1)[1]
    assert len(password) >= 40
    stored = db.owner("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (login.role,))[0][0]
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert password not in stored
    salt = __import__("base64").b64decode(stored.split("$")[1].split(":")[1])
    assert scram_verifier(password, salt=salt) == stored  # the verifier computed here is what the server keeps
    # the password is in no table of the database and in no server log line
    text = json.dumps([db.owner(f'SELECT * FROM "{t}"') for (t,) in
                       db.owner("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")], default=str)
    assert password not in text
    assert password not in db.cluster.log_tail(100_000)
    assert repr(password) not in repr(login)
    # a real password login: this database's crmkit logins (members of its base role) use SCRAM, not trust
    hba = db.cluster.data / "pg_hba.conf"
    saved = hba.read_text()
    try:
        hba.write_text(f"host all +{group_role(db.name, 'base')} 127.0.0.1/32 scram-sha-256\n{saved}")
        db.owner("SELECT pg_reload_conf()")
        with psycopg.connect(login.url, connect_timeout=10) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (login.role,)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(db.role_url("vera") + "?password=wrong", connect_timeout=10).close()
    finally:
        hba.write_text(saved)
        if os.geteuid() == 0:
            shutil.chown(hba, "postgres", "postgres")
        db.owner("SELECT pg_reload_conf()")
    assert password not in db.cluster.log_tail(100_000)
    # rotated again, without a folder: handed back once, hidden from repr, and the old verifier is gone
    again = rotate_password(db.store, "vera")
    assert again.password and again.password != password and again.password not in repr(again)
    assert again.passfile is None and "password" not in again.url
    assert db.owner("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (login.role,))[0][0] != stored


def test_a_duckdb_store_has_no_database_roles(tmp_path: Path) -> None:
    store = Store(tmp_path / "crm.duckdb")
    with pytest.raises(crmkit.errors.StoreError, match="PostgreSQL only"):
        sync_database_roles(store)
    assert store.read(lambda tx: enter_filter_role(tx)) is False




@pytest.fixture
def api_db(pg_cluster: PgCluster) -> Iterator[Db]:
    """A database of its own (the API calls below change it), its roles synced."""
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        crm = crmkit.open(url)
        for name, role in USERS.items():
            if name != "admin":
                crm.add_user(name, name.title(), roles=[role])
        _address(url)
        address_id = 1
        sync_database_roles(crm.store)
        db = Db(pg_cluster, url, url.rsplit("/", 1)[1], crm.store, address_id)
        try:
            yield db
        finally:
            _close(db)


def test_crmkit_api_works_under_each_login_within_its_rights(api_db: Db) -> None:
    """The grants are not only tight but enough: each role's everyday operations through crmkit's API, connected
    as that user's login, succeed (a missing grant would raise InsufficientPrivilege here)."""
    from crmkit import privacy
    from crmkit.teams import display_format
    from crmkit.teams.sessions import open_sessions_needing_reopen

    db = api_db
    login = {user: crmkit.open(db.role_url(user)) for user in USERS}
    assert {u: c.user.name for u, c in login.items()} == {u: u for u in USERS}
    assert all(c.session_id is not None for c in login.values())  # each registered its session row

    vera = login["vera"]
    vera.set_user_setting("language", "en")
    assert vera.language == "en"
    assert (len(vera.addresses()), len(vera.users()), len(vera.roles())) == (1, 6, 6)
    assert len(vera.contact_types()) == 5 and len(vera.campaigns.campaigns()) == 0
    with pytest.raises(PermissionDenied):  # crmkit refuses first; the database would too
        vera.set_setting("teams.subject_prefix", "x")

    sam = login["sam"]
    new_id = sam.add_address(kind="person", first_name="Ben", last_name="Berg", city="Bonn")  # + its search words
    sam.update_address(new_id, city="Köln")
    sam.add_contact(new_id, "TEL", "Anruf")
    assert len(sam.contacts(new_id)) == 1
    assert sam.addresses(search="berg")["city"].tolist() == ["Köln"]
    assert len(vera.addresses(search="muster")) == 1

    tina = login["tina"]
    tina.set_setting("teams.subject_prefix", "CRM - ")
    tina.set_setting("teams.enabled", True)  # also creates the contact type TS
    display_format.save_format(tina, display_format.default_format())
    assert "TS" in set(tina.contact_types()["code"])
    assert open_sessions_needing_reopen(tina) is not None

    pia = login["pia"]
    privacy.set_policy(pia, "teams_manual", "log_purpose")
    privacy.set_flag(pia, db.address_id)
    privacy.set_retention_days(pia, 365)
    assert len(privacy.access_report(pia, db.address_id)) == 0
    assert privacy.purge_transfer_log(pia) == 0

    carl = login["carl"]
    campaign = carl.campaigns.add_campaign("Herbst")
    activity = carl.campaigns.add_activity(campaign, "Mailing")
    carl.campaigns.add_participants(activity, [db.address_id])
    carl.campaigns.add_reaction(activity, "Zusage")

    admin = login["admin"]
    admin.add_user("kai", "Kai", roles=["viewer"])
    admin.set_roles("kai", ["sales"])
    admin.set_setting("ui.default_language", "en")
    assert len(admin.audit_log()) > 0


def test_cli_db_roles_syncs_and_rotates_without_printing_the_password(api_db: Db, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from crmkit.cli import main

    db = api_db
    db.owner("INSERT INTO users (name, display_name) VALUES ('kai', 'Kai')")
    assert main(["--db", db.url, "db-roles", "--rotate", "kai", "--home", str(tmp_path / "kai")]) == 0
    out = capsys.readouterr()
    kai = user_role(db.name, "kai")
    assert f"kai: {kai}" in out.out and "created 1," in out.out
    password = (tmp_path / "kai" / "pgpass").read_text().strip().rsplit(":", 1)[1]
    assert password not in out.out + out.err
    assert db.owner("SELECT rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = %s", (kai,)) == [(True,)]
    assert main(["--db", db.url, "db-roles", "--rotate", "kai"]) == 2  # no --home: nowhere to put it
    assert "needs --home" in capsys.readouterr().err


def test_a_sales_login_sends_through_teams_within_its_grants(pg_cluster: PgCluster, crm_tenant: Any) -> None:
    """A whole Teams send (outbox, delivery, transfer log, contact, Microsoft account) as the sales user's own
    database login: the grants are enough for crmkit's send path, and the log stays out of reach."""
    from support.sandbox import colleagues, sign_in

    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation

    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        owner = crmkit.open(url)
        activation.enable(owner)
        owner.add_user("sam", "Sam", roles=["sales"])
        _address(url)
        sync_database_roles(owner.store)
        db = Db(pg_cluster, url, url.rsplit("/", 1)[1], owner.store, 1)
        sam = crmkit.open(db.role_url("sam"))
        try:
            sign_in(sam, SANDBOX_DEFAULT_UPN)
            result = sam.teams.send(1, to=colleagues(crm_tenant, 1), subject="Lead", record_contact=True)
            assert result["status"].tolist() == ["sent"]
            assert db.owner("SELECT user_name, outcome FROM transfer_log") == [("sam", "sent")]
            assert db.owner("SELECT status FROM outbox") == [("sent",)]
            assert db.owner("SELECT user_name, type_code FROM contacts") == [("sam", "TS")]
            assert db.owner("SELECT user_name FROM m365_accounts") == [("sam",)]
            with db.connect("sam") as conn:
                denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
                denied(conn, "DELETE FROM transfer_log")
                denied(conn, "UPDATE outbox SET payload = '{}'")
            assert db.owner("SELECT outcome FROM transfer_log") == [("sent",)]
        finally:
            sam.teams.close()
            _close(db, ("sam",))


def test_campaign_reaction_runs_under_the_recorders_login(pg_cluster: PgCluster, fast_crm_tenant: Any) -> None:
    """Recording a reaction whose action runs at once sends from the campaign account in the recorder's own
    process: as the campaign manager's login and as the sales login it goes out, logged in the recorder's name."""
    from support.sandbox import colleagues

    from crmkit.auth import Microsoft365
    from crmkit.campaigns import Campaigns
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
    from crmkit.teams import activation

    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        owner = crmkit.open(url)
        activation.enable(owner)
        for name in ("carl", "sam"):
            owner.add_user(name, name.title(), roles=[USERS[name]])
        # a role an admin made: records.write alone (no teams.send)
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO roles VALUES ('recorder', 'Erfasser', 'Recorder')")
            conn.execute("INSERT INTO role_rights VALUES ('recorder', 'records.write')")
        owner.add_user("rita", "Rita", roles=["recorder"])
        _address(url)
        db = Db(pg_cluster, url, url.rsplit("/", 1)[1], owner.store, 1)
        for i, (first, last) in ((2, ("Eva", "Keller")), (3, ("Ria", "Roth"))):  # personal data: transfers logged
            db.owner("INSERT INTO addresses (id, kind, first_name, last_name, email, created_by, created_at, "
                     "modified_by, modified_at) VALUES (%s, 'person', %s, %s, 'x@example.com', 'admin', %s, 'admin', "
                     "%s)", (i, first, last, T0, T0))
        m365 = Microsoft365(owner)
        m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        m365.close()
        sync_database_roles(owner.store)
        carl = Campaigns(crmkit.open(db.role_url("carl")))
        sam = Campaigns(crmkit.open(db.role_url("sam")))
        rita = Campaigns(crmkit.open(db.role_url("rita")))
        try:
            campaign = carl.add_campaign("Frühjahr")
            activity = carl.add_activity(campaign, "Mailing")
            carl.add_participants(activity, [1, 2, 3])
            reaction = carl.add_reaction(activity, "Interesse")
            carl.add_teams_action(reaction, "Vertrieb informieren", recipients=colleagues(fast_crm_tenant, 1),
                                  message="Bitte {company} anrufen.")
            done = carl.record_reaction(reaction, [1])
            assert [o.status for o in done.outcomes] == ["done"], done.outcomes
            assert db.owner("SELECT user_name, channel, outcome FROM transfer_log") == [
                ("carl", "teams_campaign", "sent")]
            # recording is records work: the sales login's reaction goes out too, logged in his name
            later = sam.record_reaction(reaction, [2])
            assert [o.status for o in later.outcomes] == ["done"], later.outcomes
            assert db.owner("SELECT user_name FROM transfer_log ORDER BY id") == [("carl",), ("sam",)]
            with db.connect("sam") as conn:
                denied(conn, "UPDATE campaign_actions SET message = 'x'")  # the campaign is carl's to edit
                denied(conn, "INSERT INTO campaign_participants VALUES (1, 1, now(), 'sam')")
            # a user whose only right is records.write: her reaction goes out too (crmkit's API lets her)
            assert [o.status for o in rita.record_reaction(reaction, [3]).outcomes] == ["done"]
            assert db.owner("SELECT user_name FROM transfer_log ORDER BY id")[-1] == ("rita",)
            with db.connect("rita") as conn:
                denied(conn, "SELECT * FROM m365_accounts")  # no teams.send: no Microsoft account of her own
                denied(conn, "UPDATE transfer_log SET outcome = 'failed'")
        finally:
            for camp in (carl, sam, rita):
                camp.close()
            _close(db, ("carl", "sam", "rita"))


def _schema(db: Db) -> tuple[Any, ...]:
    """What a migration would change, read as the owner: columns, indexes, triggers and the migrations done."""
    return tuple(db.owner(sql) for sql in (
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY 1, 2",
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
        "SELECT id, name FROM _crmkit_migrations ORDER BY id",
    ))


@pytest.fixture
def behind_db(pg_cluster: PgCluster, pg_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Db]:
    """A CRM one migration behind this crmkit (migrated by a crmkit without the last one), vera's login synced."""
    from crmkit import migrations

    url = pg_database_url
    with monkeypatch.context() as older:
        older.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:-1])
        crm = crmkit.open(url)
        crm.add_user("vera", "Vera", roles=["viewer"])
        sync_database_roles(crm.store)
    db = Db(pg_cluster, url, url.rsplit("/", 1)[1], crm.store, 0)
    try:
        yield db
    finally:
        _close(db, ("vera",))


def test_a_current_schema_opens_under_a_persons_login_and_writes_nothing(db: Db) -> None:
    before = _schema(db)
    crm = crmkit.open(db.role_url("vera"))
    assert crm.store.applied_migrations == []
    assert crm.user.name == "vera"
    assert _schema(db) == before


def test_a_pending_migration_under_a_persons_login_is_a_typed_error_and_changes_nothing(behind_db: Db) -> None:
    """A login without DDL rights cannot migrate: crmkit says to ask the owner (crmkit init, then db-roles)
    instead of psycopg's InsufficientPrivilege, and the one transaction leaves the schema as it was."""
    from crmkit.errors import MigrationNeedsOwner, StoreError
    from crmkit.migrations import MIGRATIONS

    db = behind_db
    before = _schema(db)
    assert MIGRATIONS[-1][0] not in {mid for mid, _ in before[-1]}
    with pytest.raises(MigrationNeedsOwner) as caught:
        crmkit.open(db.role_url("vera"))
    error = caught.value
    assert isinstance(error, StoreError)
    assert isinstance(error.__cause__, Denied)  # psycopg's own, chained for whoever debugs it
    for lang in ("de", "en"):
        text = error.text(lang)
        assert "crmkit init" in text and "crmkit db-roles" in text, text
        assert str(MIGRATIONS[-1][0]) in text and user_role(db.name, "vera") in text, text
        assert "(postgres)" in text, text  # who may migrate: the owner of crmkit's tables
    assert error.text("de") != error.text("en")
    assert "Besitzer" in error.text("de")
    assert str(error) == error.text("en")
    assert _schema(db) == before
    # the owner migrates, and the person's login opens it then
    Store(db.url).close()
    sync_database_roles(db.store)
    assert crmkit.open(db.role_url("vera")).user.name == "vera"


def test_a_login_that_may_not_create_crmkits_tables_is_told_to_ask_the_databases_owner(pg_database_url: str) -> None:
    """An empty database opened by a login without CREATE on its schema: the same typed error, every migration
    named as pending, the database's owner as who may run them, and still no table in it."""
    from crmkit.errors import MigrationNeedsOwner
    from crmkit.migrations import MIGRATIONS

    name = pg_database_url.rsplit("/", 1)[1]
    login = f"p3_bare_{name}"
    with psycopg.connect(pg_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{login}" LOGIN')
        conn.execute('REVOKE CREATE ON SCHEMA public FROM PUBLIC')
    url = pg_database_url.replace("postgres@", f"{login}@", 1)
    try:
        with pytest.raises(MigrationNeedsOwner) as caught:
            crmkit.open(url)
        text = caught.value.text("en")
        assert f"login {login} " in text and "owner (postgres)" in text, text
        assert ", ".join(str(m[0]) for m in MIGRATIONS) in text, text
        with psycopg.connect(pg_database_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)
    finally:
        close_pools(url)
        with psycopg.connect(pg_database_url, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{login}"')
