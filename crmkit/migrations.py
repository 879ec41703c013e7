"""Schema migrations, recorded in ``_crmkit_migrations`` and applied when a store opens.

Each migration is a list of statements run in one transaction with its record row, so a database
is always at a whole migration. Add new migrations at the end; never edit an applied one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .campaigns._schema import CAMPAIGNS_MIGRATION
from .errors import NotACrmkitDatabase
from .rights import BUILTIN_ROLES
from .teams.outbox import OUTBOX_MIGRATION

if TYPE_CHECKING:
    from .store import Store, Tx

__all__ = ["MIGRATIONS", "migrate"]

def _words_sql() -> str:
    from .crm import words_sql

    return words_sql()


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _seed_roles() -> list[str]:
    out = []
    for role, (de, en, rights) in BUILTIN_ROLES.items():
        out.append(f"INSERT INTO roles VALUES ({_q(role)}, {_q(de)}, {_q(en)})")
        out += [f"INSERT INTO role_rights VALUES ({_q(role)}, {_q(r)})" for r in rights]
    return out


MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "core: users, rights, settings, audit, addresses, contacts", [
        """CREATE TABLE roles (
            name VARCHAR PRIMARY KEY,
            label_de VARCHAR NOT NULL,
            label_en VARCHAR NOT NULL)""",
        """CREATE TABLE role_rights (
            role VARCHAR NOT NULL,
            "right" VARCHAR NOT NULL,
            PRIMARY KEY (role, "right"))""",
        """CREATE TABLE users (
            name VARCHAR PRIMARY KEY,
            display_name VARCHAR NOT NULL,
            email VARCHAR,
            active BOOLEAN NOT NULL DEFAULT TRUE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE user_roles (
            user_name VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            PRIMARY KEY (user_name, role))""",
        """CREATE TABLE system_settings (
            key VARCHAR PRIMARY KEY,
            value JSON,
            changed_at TIMESTAMP NOT NULL,
            changed_by VARCHAR NOT NULL)""",
        """CREATE TABLE user_settings (
            user_name VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            value JSON,
            changed_at TIMESTAMP NOT NULL,
            PRIMARY KEY (user_name, key))""",
        "CREATE SEQUENCE audit_seq",
        """CREATE TABLE audit (
            id BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'),
            changed_at TIMESTAMP NOT NULL,
            user_name VARCHAR NOT NULL,
            scope VARCHAR NOT NULL,
            key VARCHAR NOT NULL,
            old_value JSON,
            new_value JSON)""",
        """CREATE TABLE contact_types (
            code VARCHAR PRIMARY KEY,
            label VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE addresses (
            id BIGINT PRIMARY KEY,
            parent_id BIGINT,
            kind VARCHAR NOT NULL,
            company VARCHAR,
            salutation VARCHAR,
            title VARCHAR,
            first_name VARCHAR,
            last_name VARCHAR,
            department VARCHAR,
            street VARCHAR,
            postal_code VARCHAR,
            city VARCHAR,
            country VARCHAR,
            phone VARCHAR,
            email VARCHAR,
            owner VARCHAR,
            created_by VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            modified_by VARCHAR NOT NULL,
            modified_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE contacts (
            id BIGINT PRIMARY KEY,
            address_id BIGINT NOT NULL,
            happened_at TIMESTAMP NOT NULL,
            type_code VARCHAR NOT NULL,
            subject VARCHAR,
            notes VARCHAR,
            user_name VARCHAR NOT NULL,
            source VARCHAR NOT NULL)""",
        *_seed_roles(),
        "INSERT INTO users (name, display_name) VALUES ('admin', 'Administrator')",
        "INSERT INTO user_roles VALUES ('admin', 'admin')",
        """INSERT INTO contact_types (code, label) VALUES
            ('TEL', 'Telefonat'), ('EM', 'E-Mail'), ('BR', 'Brief'), ('BE', 'Besuch'), ('NO', 'Notiz')""",
    ]),
    # Microsoft 365 accounts, consent and the campaign sender. Tokens live in the per-machine
    # token caches (CRMKIT_HOME), never here; the campaign password only as ciphertext.
    (2, "microsoft 365: accounts per user, consent state, campaign sender account", [
        """CREATE TABLE m365_accounts (
            user_name VARCHAR NOT NULL,
            home_account_id VARCHAR NOT NULL,
            username VARCHAR NOT NULL,
            display_name VARCHAR,
            tenant_id VARCHAR,
            object_id VARCHAR,
            use_teams BOOLEAN NOT NULL DEFAULT TRUE,
            use_smtp BOOLEAN NOT NULL DEFAULT FALSE,
            added_at TIMESTAMP NOT NULL,
            last_used_at TIMESTAMP,
            consent_state VARCHAR NOT NULL DEFAULT 'unknown',
            PRIMARY KEY (user_name, home_account_id))""",
        """CREATE TABLE consent_state (
            scope VARCHAR NOT NULL,
            tenant_id VARCHAR NOT NULL,
            client_id VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            learned_at TIMESTAMP NOT NULL,
            learned_by VARCHAR NOT NULL,
            details VARCHAR,
            PRIMARY KEY (scope, tenant_id, client_id))""",
        """CREATE TABLE campaign_account (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            mode VARCHAR NOT NULL CHECK (mode IN ('password', 'signed_in')),
            username VARCHAR NOT NULL,
            home_account_id VARCHAR,
            display_name VARCHAR,
            password_ciphertext VARCHAR,
            key_id VARCHAR,
            set_at TIMESTAMP NOT NULL,
            set_by VARCHAR NOT NULL,
            last_test_at TIMESTAMP,
            last_test_ok BOOLEAN,
            last_test_detail VARCHAR)""",
    ]),
    # Teams governance: open sessions (reopen notice), the Teams display format, the personal-data
    # policy, address block flags and the append-only transfer log (see crmkit/privacy.py).
    (3, "teams governance: sessions, display format, privacy policy, address flags, transfer log", [
        "CREATE SEQUENCE sessions_seq",
        """CREATE TABLE sessions (
            id BIGINT PRIMARY KEY DEFAULT nextval('sessions_seq'),
            user_name VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            host VARCHAR NOT NULL,
            opened_at TIMESTAMP NOT NULL,
            last_seen TIMESTAMP NOT NULL,
            teams_enabled_at_open BOOLEAN NOT NULL)""",
        """CREATE TABLE display_formats (
            area VARCHAR PRIMARY KEY,
            spec JSON NOT NULL,
            changed_at TIMESTAMP NOT NULL,
            changed_by VARCHAR NOT NULL)""",
        """CREATE TABLE privacy_settings (
            key VARCHAR PRIMARY KEY,
            value JSON,
            changed_at TIMESTAMP NOT NULL,
            changed_by VARCHAR NOT NULL)""",
        """CREATE TABLE address_flags (
            address_id BIGINT NOT NULL,
            flag VARCHAR NOT NULL,
            set_by VARCHAR NOT NULL,
            set_at TIMESTAMP NOT NULL,
            PRIMARY KEY (address_id, flag))""",
        "CREATE SEQUENCE transfer_log_seq",
        # Indexes are loaded on every attach, so only small BIGINT ones: no primary key on id (the
        # sequence keeps it unique), and (message_key, address_id, recipient_id) is kept unique by
        # privacy.log_transfers through dedupe_key, a 64-bit hash of the three, instead of a UNIQUE
        # constraint (measured: a string UNIQUE index over 10M rows added ~12 ms to every attach).
        """CREATE TABLE transfer_log (
            id BIGINT NOT NULL DEFAULT nextval('transfer_log_seq'),
            logged_at TIMESTAMP NOT NULL,
            user_name VARCHAR NOT NULL,
            ms_account VARCHAR,
            channel VARCHAR NOT NULL CHECK (channel IN ('teams_manual', 'teams_campaign', 'file_export')),
            trigger VARCHAR NOT NULL CHECK (trigger IN ('manual', 'campaign')),
            address_id BIGINT NOT NULL,
            fields VARCHAR[] NOT NULL,
            recipient_id VARCHAR,
            recipient_name VARCHAR,
            purpose VARCHAR,
            outcome VARCHAR NOT NULL CHECK (outcome IN ('sent', 'failed', 'blocked')),
            message_id VARCHAR,
            message_key VARCHAR,
            detail VARCHAR,
            dedupe_key BIGINT)""",
        "CREATE INDEX transfer_log_address ON transfer_log (address_id)",
        "CREATE INDEX transfer_log_dedupe ON transfer_log (dedupe_key)",
    ]),
    (4, "teams send: durable outbox; contacts carry recipients and a message link", OUTBOX_MIGRATION),
    (5, "campaigns: activities, participants, reactions, reaction actions, runs, worker lease", CAMPAIGNS_MIGRATION),
    (6, "search: a sorted word index over company, names, city and e-mail", [
        "CREATE TABLE address_words (word VARCHAR NOT NULL, address_id BIGINT NOT NULL)",
        f"INSERT INTO address_words SELECT * FROM ({_words_sql()}) ORDER BY word",
    ]),
    (7, "outbox: when a message was first claimed, which bounds the read-back of an unanswered post", [
        "ALTER TABLE outbox ADD COLUMN first_attempt_at TIMESTAMP",
    ]),
    (8, "outbox: a send's idempotency key, unique per CRM user, so a repeated send yields its batch", [
        "ALTER TABLE outbox_batches ADD COLUMN idempotency_key VARCHAR",
        # Unique per user: two sends racing with one key cannot both make a batch (NULL: no key, any number).
        "CREATE UNIQUE INDEX outbox_batches_idempotency ON outbox_batches (user_name, idempotency_key)",
    ]),
    (9, "sessions: the kind of process (dashboard, notebook, script), so only pages are asked to reopen", [
        # Rows from before stay NULL: of unknown kind, they are not listed (they purge within a week).
        "ALTER TABLE sessions ADD COLUMN kind VARCHAR",
    ]),
]


def _applied(tx: Tx) -> set[int]:
    return {row[0] for row in tx.rows("SELECT id FROM _crmkit_migrations")}


def _tables(tx: Tx) -> set[str]:
    return {
        row[0] for row in tx.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database()"
        )
    }


def migrate(store: Store) -> list[int]:
    """Apply pending migrations; return the ids applied. Refuses foreign and newer databases."""

    def run(tx: Tx) -> list[int]:
        tables = _tables(tx)
        if "_crmkit_migrations" not in tables:
            if tables:
                raise NotACrmkitDatabase(
                    f"{store.path} is a DuckDB database of something else (tables: "
                    f"{', '.join(sorted(tables)[:5])}). crmkit left it unchanged; "
                    "use `crmkit init --db NEW_PATH` for a crmkit database."
                )
            tx.execute(
                "CREATE TABLE _crmkit_migrations (id INTEGER PRIMARY KEY, name VARCHAR, "
                "applied_at TIMESTAMP DEFAULT current_timestamp)"
            )
        done = _applied(tx)
        known = {m[0] for m in MIGRATIONS}
        if done - known:
            raise NotACrmkitDatabase(
                f"{store.path} has schema migrations {sorted(done - known)} from a newer crmkit; "
                "upgrade crmkit to open it."
            )
        applied = []
        for mid, name, statements in MIGRATIONS:
            if mid in done:
                continue
            for sql in statements:
                tx.execute(sql)
            tx.execute("INSERT INTO _crmkit_migrations (id, name) VALUES (?, ?)", [mid, name])
            applied.append(mid)
        return applied

    # Reading first keeps an up-to-date database untouched (and openable beside readers).
    if not store.memory:
        from pathlib import Path

        if Path(store.path).exists():
            pending = store.read(lambda tx: _pending_or_foreign(tx, store))
            if not pending:
                return []
    return store.write(run)


def _pending_or_foreign(tx: Tx, store: Store) -> bool:
    tables = _tables(tx)
    if "_crmkit_migrations" not in tables:
        return True  # run() decides between a fresh file and a foreign one
    done = _applied(tx)
    known = {m[0] for m in MIGRATIONS}
    return bool(done - known) or bool(known - done)
