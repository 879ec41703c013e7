"""Schema migrations, recorded in ``_crmkit_migrations`` and applied when a store opens.

Each migration is a list of statements run in one transaction with its record row, so a database
is always at a whole migration. Add new migrations at the end; never edit an applied one.

Migrations are history: each is fixed SQL written here, never built from today's code (this module
imports nothing of crmkit's features), so a database created today and one upgraded from any older
migration end with the same schema (tests/core/test_migrations_history.py). The built-in roles and
their rights are seeded as the fixed list they had at migration 1; a role or right added to
:mod:`crmkit.rights` later comes with a new migration that adds it to existing databases, e.g.
``INSERT INTO role_rights SELECT 'admin', 'new.right' WHERE EXISTS (SELECT 1 FROM roles WHERE name =
'admin') ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import MigrationNeedsOwner, NotACrmkitDatabase, catalog_error

if TYPE_CHECKING:
    from .store import Store, Tx

__all__ = ["MIGRATIONS", "migrate"]


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The built-in roles as migration 1 seeded them: (role, German label, English label, rights).
_ROLES_AT_1: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("admin", "Administrator", "Administrator", (
        "teams.admin", "teams.send", "campaign.admin", "privacy.admin", "privacy.read_log", "system.admin")),
    ("teams_admin", "Teams-Verwalter", "Teams administrator", ("teams.admin", "teams.send")),
    ("privacy_officer", "Datenschutzbeauftragte(r)", "Privacy officer", ("privacy.admin", "privacy.read_log")),
    ("campaign_manager", "Kampagnenverwalter", "Campaign manager", ("campaign.admin", "teams.send")),
    ("sales", "Vertrieb", "Sales", ("teams.send",)),
    ("viewer", "Nur lesen", "Read only", ()),
)


def _seed_roles(roles: tuple[tuple[str, str, str, tuple[str, ...]], ...]) -> list[str]:
    out = []
    for role, de, en, rights in roles:
        out.append(f"INSERT INTO roles VALUES ({_q(role)}, {_q(de)}, {_q(en)})")
        out += [f"INSERT INTO role_rights VALUES ({_q(role)}, {_q(r)})" for r in rights]
    return out


# Migration 4: the durable outbox (crmkit/teams/outbox.py queries it).
_OUTBOX_AT_4: list[str] = [
    """CREATE TABLE outbox_batches (
        id VARCHAR PRIMARY KEY,
        created_at TIMESTAMP NOT NULL,
        user_name VARCHAR NOT NULL,
        account VARCHAR,
        channel VARCHAR NOT NULL,
        trigger VARCHAR NOT NULL,
        purpose VARCHAR,
        subject VARCHAR NOT NULL,
        options JSON,
        record_contact BOOLEAN NOT NULL,
        source VARCHAR,
        status VARCHAR NOT NULL)""",
    """CREATE TABLE outbox (
        id VARCHAR PRIMARY KEY,
        batch_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        marker VARCHAR NOT NULL,
        chat_kind VARCHAR NOT NULL,
        members JSON NOT NULL,
        topic VARCHAR,
        chat_id VARCHAR,
        recipients JSON NOT NULL,
        address_ids JSON NOT NULL,
        field_names JSON NOT NULL,
        payload JSON NOT NULL,
        contact_subject VARCHAR,
        contact_notes VARCHAR,
        status VARCHAR NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_attempt_at TIMESTAMP,
        message_id VARCHAR,
        error VARCHAR,
        finished_at TIMESTAMP)""",
    "ALTER TABLE contacts ADD COLUMN recipients VARCHAR",
    "ALTER TABLE contacts ADD COLUMN message_id VARCHAR",
    "ALTER TABLE contacts ADD COLUMN link VARCHAR",
]

# Migration 5: campaigns, reaction actions and their runs (crmkit/campaigns). All ``*_at`` columns of runs,
# actions and the worker lease are naive UTC, so a worker on another machine (or in another time zone)
# compares them correctly. Only small BIGINT indexes: every index is loaded on every ATTACH.
_CAMPAIGNS_AT_5: list[str] = [
    "CREATE SEQUENCE campaigns_seq",
    """CREATE TABLE campaigns (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaigns_seq'),
        name VARCHAR NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL,
        modified_at TIMESTAMP NOT NULL,
        modified_by VARCHAR NOT NULL)""",
    "CREATE SEQUENCE campaign_activities_seq",
    """CREATE TABLE campaign_activities (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_activities_seq'),
        campaign_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL)""",
    """CREATE TABLE campaign_participants (
        activity_id BIGINT NOT NULL,
        address_id BIGINT NOT NULL,
        added_at TIMESTAMP NOT NULL,
        added_by VARCHAR NOT NULL,
        PRIMARY KEY (activity_id, address_id))""",
    "CREATE SEQUENCE campaign_reactions_seq",
    """CREATE TABLE campaign_reactions (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_reactions_seq'),
        activity_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL)""",
    "CREATE SEQUENCE campaign_actions_seq",
    """CREATE TABLE campaign_actions (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_actions_seq'),
        reaction_id BIGINT NOT NULL,
        kind VARCHAR NOT NULL CHECK (kind IN ('teams_message')),
        description VARCHAR NOT NULL,
        active BOOLEAN NOT NULL,
        recipients JSON NOT NULL,
        subject VARCHAR NOT NULL,
        message VARCHAR NOT NULL,
        timing VARCHAR NOT NULL CHECK (timing IN ('immediately', 'delay', 'at')),
        delay_seconds BIGINT,
        run_at TIMESTAMP,
        record_contact BOOLEAN NOT NULL,
        include_record BOOLEAN NOT NULL,
        record_format VARCHAR NOT NULL,
        chat VARCHAR NOT NULL,
        importance VARCHAR NOT NULL,
        skip_blocked BOOLEAN NOT NULL,
        purpose VARCHAR,
        language VARCHAR,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL,
        modified_at TIMESTAMP NOT NULL,
        modified_by VARCHAR NOT NULL)""",
    # History: one row per reaction recorded for an address. (reaction, address) is unique, so
    # recording the same reaction again is a no-op and cannot create runs twice.
    "CREATE SEQUENCE campaign_recorded_seq",
    """CREATE TABLE campaign_recorded_reactions (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_recorded_seq'),
        activity_id BIGINT NOT NULL,
        reaction_id BIGINT NOT NULL,
        address_id BIGINT NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        recorded_by VARCHAR NOT NULL,
        notes VARCHAR)""",
    "CREATE UNIQUE INDEX campaign_recorded_key ON campaign_recorded_reactions (reaction_id, address_id)",
    "CREATE SEQUENCE campaign_runs_seq",
    """CREATE TABLE campaign_runs (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_runs_seq'),
        action_id BIGINT NOT NULL,
        recorded_reaction_id BIGINT NOT NULL,
        address_id BIGINT NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ('due', 'retry', 'running', 'done', 'failed', 'skipped')),
        created_at TIMESTAMP NOT NULL,
        due_at TIMESTAMP NOT NULL,
        next_attempt_at TIMESTAMP,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by VARCHAR,
        claim_pid INTEGER,
        claim_host VARCHAR,
        claim_expires_at TIMESTAMP,
        batch_id VARCHAR,
        error VARCHAR,
        finished_at TIMESTAMP)""",
    "CREATE UNIQUE INDEX campaign_runs_key ON campaign_runs (action_id, recorded_reaction_id)",
    """CREATE TABLE campaign_worker_lease (
        name VARCHAR PRIMARY KEY,
        holder VARCHAR NOT NULL,
        pid INTEGER NOT NULL,
        host VARCHAR NOT NULL,
        acquired_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP NOT NULL)""",
]

# Migration 6: the search words of the addresses already there, as words_sql() (then in crmkit.crm, today
# in crmkit.addresses) made them (lower-case words of company, names, city, e-mail, each also without accents),
# in word order.
_WORDS_AT_6 = (
    "INSERT INTO address_words SELECT * FROM (SELECT DISTINCT w AS word, id AS address_id FROM ("
    "  SELECT id, unnest(list_distinct(list_concat(ws, list_transform(ws, lambda x: strip_accents(x))))) AS w"
    "  FROM (SELECT id, string_split_regex(lower(concat_ws(' ', company, first_name, last_name, city, email)), "
    r"'[^\p{L}\p{N}]+') AS ws FROM addresses WHERE TRUE)) WHERE w <> '') ORDER BY word"
)


# Migration 12, statements both databases run (PostgreSQL's own follow in POSTGRES_ONLY[12]).
_TEAM_AT_12: list[str] = [
    # Several delivering processes on PostgreSQL (crmkit/teams/outbox.py claim_open): who holds a row until when.
    # A lease, not a status: a row keeps 'pending' until its post is about to leave (then 'sending').
    "ALTER TABLE outbox ADD COLUMN claimed_by VARCHAR",
    "ALTER TABLE outbox ADD COLUMN claim_expires_at TIMESTAMP",
    # Teams' limits shared by every process (crmkit/teams/pacing.py): per key ('tenant', 'chat:<id>') the
    # database clock's epoch second from which the next request may start, and (the tenant row) the actual
    # starts of the last second: a hard cap per sliding second.
    "CREATE TABLE teams_pacing (key VARCHAR PRIMARY KEY, next_at DOUBLE PRECISION NOT NULL, "
    "starts DOUBLE PRECISION[])",
]


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
        *_seed_roles(_ROLES_AT_1),
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
    # policy, address block flags and the append-only transfer log (see crmkit/privacy/).
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
    (4, "teams send: durable outbox; contacts carry recipients and a message link", _OUTBOX_AT_4),
    (5, "campaigns: activities, participants, reactions, reaction actions, runs, worker lease", _CAMPAIGNS_AT_5),
    (6, "search: a sorted word index over company, names, city and e-mail", [
        "CREATE TABLE address_words (word VARCHAR NOT NULL, address_id BIGINT NOT NULL)",
        _WORDS_AT_6,
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
    # A consent link's state, so the redirect crmkit serves can tell whose request it answers. Only the
    # sha256 of the state is kept: a copied database cannot answer an open request.
    (10, "consent_requests: the admin-consent links handed out and how each was answered", [
        """CREATE TABLE consent_requests (
            state_hash VARCHAR PRIMARY KEY,
            scope VARCHAR NOT NULL,
            tenant_id VARCHAR NOT NULL,
            client_id VARCHAR NOT NULL,
            redirect_uri VARCHAR NOT NULL,
            lang VARCHAR NOT NULL,
            requested_by VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            expires_at TIMESTAMP NOT NULL,
            answered_at TIMESTAMP,
            outcome VARCHAR)""",
    ]),
    # Only roles a database still has get the right (a removed built-in role is not created again);
    # viewer (read only) and privacy_officer do not get it.
    (11, "rights: records.write (edit addresses and contacts) for admin, teams_admin, campaign_manager, sales", [
        f"INSERT INTO role_rights SELECT {_q(role)}, 'records.write' WHERE EXISTS "
        f"(SELECT 1 FROM roles WHERE name = {_q(role)}) ON CONFLICT DO NOTHING"
        for role in ("admin", "teams_admin", "campaign_manager", "sales")
    ]),
    # Work in progress this session (issue 15), released with it: what several processes sharing one
    # PostgreSQL database need; the statements PostgreSQL alone runs are POSTGRES_ONLY[12].
    (12, "team server: outbox leases and Teams pacing shared by processes; PostgreSQL's indexes", _TEAM_AT_12),
    # DuckDB runs nothing: its search joins the addresses (POSTGRES_ONLY[13] says why PostgreSQL need not).
    (13, "search words: PostgreSQL drops a deleted address's words itself", []),
    # Who a CRM user is in the directory (crmkit/directory_links.py): one account (tenant id + object id) per
    # user and one user per account. object_id is NULL for a pending link by UPN (crmkit init --admin), which
    # the first verified sign-in of that UPN completes. No FOREIGN KEY to users: crmkit migrate-store copies
    # tables in name order (directory_links before users); the service checks the user.
    (14, "directory_links: a CRM user's directory account (tenant id, object id, UPN, display name)", [
        """CREATE TABLE directory_links (
            user_name VARCHAR PRIMARY KEY,
            tenant_id VARCHAR NOT NULL,
            object_id VARCHAR,
            upn VARCHAR,
            display_name VARCHAR,
            linked_at TIMESTAMP NOT NULL,
            linked_by VARCHAR NOT NULL,
            UNIQUE (tenant_id, object_id),
            CHECK (object_id IS NOT NULL OR upn IS NOT NULL))""",
    ]),
    # A large set sent as one file (crmkit/teams/file_send.py): an outbox row's file step (the OneDrive item,
    # who it is shared with, an upload session in progress as ciphertext only), and the file's id in the log.
    (15, "file sends: the outbox row's file state, the transfer log's file id", [
        "ALTER TABLE outbox ADD COLUMN file_state VARCHAR",
        "ALTER TABLE transfer_log ADD COLUMN file_id VARCHAR",
    ]),
    # Replies filed on the record (crmkit/teams/replies.py): a reply is filed once, by its key (conversation: the
    # chat id, or team/channel/root of a channel post; the reply's Graph id); a watermark per conversation (the
    # newest lastModifiedDateTime read, Graph's clock, UTC) so a pass reads only what is new; the transfer log's
    # direction (rows from before are sends: 'out'; a filed reply is 'in').
    (16, "teams replies: replies filed once, a watermark per conversation, the transfer log's direction", [
        """CREATE TABLE teams_replies (
            conversation_id VARCHAR NOT NULL,
            reply_id VARCHAR NOT NULL,
            outbox_id VARCHAR NOT NULL,
            reply_to VARCHAR NOT NULL,
            author_id VARCHAR,
            author_name VARCHAR,
            created_at TIMESTAMP NOT NULL,
            filed_at TIMESTAMP NOT NULL,
            filed_by VARCHAR NOT NULL,
            PRIMARY KEY (conversation_id, reply_id))""",
        """CREATE TABLE teams_reply_watermarks (
            conversation_id VARCHAR PRIMARY KEY,
            watermark TIMESTAMP NOT NULL,
            polled_at TIMESTAMP NOT NULL)""",
        "ALTER TABLE transfer_log ADD COLUMN direction VARCHAR DEFAULT 'out'",
    ]),
]


# The statements PostgreSQL runs instead, by (migration, statement index); None: nothing to run. The rest
# of every migration runs as written (crmkit.store.postgres translates parameters and the JSON type).
POSTGRES_INSTEAD: dict[tuple[int, int], str | None] = {
    # Migration 6 filled the word index from the addresses of the day with DuckDB's list functions. A
    # PostgreSQL database is new at today's schema (no crmkit before this one ran on PostgreSQL), so at
    # migration 6 it holds no address to index; addresses.py keeps the index from then on.
    (6, 1): None,
    # transfer_log (address_id): PostgreSQL's (address_id, logged_at, id) of migration 12 serves its lookups too.
    (3, 7): None,
}


# What PostgreSQL runs after a migration's own statements. DuckDB loads every index on every attach of
# the file, so it keeps only small ones (migrations 3 and 5); a server keeps its indexes in memory, and
# the record table, the search and the access report use these. The search's word prefixes use a btree
# (text_pattern_ops): measured here 3.2 ms for a prefix against pg_trgm's GIN 10.5 ms, so no extension.
POSTGRES_ONLY: dict[int, list[str]] = {
    12: [
        "CREATE INDEX addresses_city_name ON addresses (city, last_name, id)",
        "CREATE INDEX addresses_name ON addresses (last_name, first_name, id)",
        "CREATE INDEX address_words_word ON address_words (word text_pattern_ops)",
        "CREATE INDEX address_words_address ON address_words (address_id)",
        "CREATE INDEX contacts_address ON contacts (address_id, happened_at)",
        "CREATE INDEX transfer_log_logged ON transfer_log (logged_at)",
        "CREATE INDEX outbox_batch ON outbox (batch_id, seq)",
        "CREATE INDEX outbox_status ON outbox (status)",
        # privacy.access_report walks it backwards (no sort); compact_transfer_log CLUSTERs by it.
        "CREATE INDEX transfer_log_address_time ON transfer_log (address_id, logged_at, id)",
        # Senders run side by side on a server: log_transfers' duplicate check cannot see a concurrent
        # sender's rows, this index can (its INSERT ... ON CONFLICT DO NOTHING then fails to serialize and
        # Store.write retries). NULLS NOT DISTINCT: a missing recipient counts as one value, as in the check.
        "CREATE UNIQUE INDEX transfer_log_unique ON transfer_log (message_key, address_id, recipient_id) "
        "NULLS NOT DISTINCT WHERE message_key IS NOT NULL",
        # the record table filtered by city in id order (its default): a page's ids by an index-only scan
        "CREATE INDEX addresses_city_id ON addresses (city, id)",
        # The record table's total without a filter, kept exact by the database: count(*) over 1,000,000
        # addresses took ~50 ms, the whole page budget. Statement triggers (one update per INSERT, COPY or
        # DELETE statement, however many rows); SECURITY DEFINER, so writers need no grant on the count.
        "CREATE TABLE address_count (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL)",
        "INSERT INTO address_count SELECT 1, count(*) FROM addresses",
        """CREATE FUNCTION crmkit_count_addresses() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
            SET search_path = pg_catalog, public AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                UPDATE address_count SET n = n + (SELECT count(*) FROM changed_rows) WHERE id = 1;
            ELSIF TG_OP = 'DELETE' THEN
                UPDATE address_count SET n = n - (SELECT count(*) FROM changed_rows) WHERE id = 1;
            ELSE
                UPDATE address_count SET n = 0 WHERE id = 1;
            END IF;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER addresses_counted_insert AFTER INSERT ON addresses REFERENCING NEW TABLE AS changed_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION crmkit_count_addresses()",
        "CREATE TRIGGER addresses_counted_delete AFTER DELETE ON addresses REFERENCING OLD TABLE AS changed_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION crmkit_count_addresses()",
        "CREATE TRIGGER addresses_counted_truncate AFTER TRUNCATE ON addresses "
        "FOR EACH STATEMENT EXECUTE FUNCTION crmkit_count_addresses()",
    ],
    # A search's hits come from the word index alone, without a join to the addresses: that join walked all
    # 1,000,000 addresses for a broad word ("hamburg", 45,000 hits: 200-350 ms of a page, 40 ms without).
    # It only kept out words of deleted addresses, so the database drops those with the address (statement
    # triggers, as address_count's), and the words left over from deletes before this migration go now.
    13: [
        "DELETE FROM address_words WHERE NOT EXISTS "
        "(SELECT 1 FROM addresses WHERE addresses.id = address_words.address_id)",
        """CREATE FUNCTION crmkit_unindex_addresses() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
            SET search_path = pg_catalog, public AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                DELETE FROM address_words WHERE address_id IN (SELECT id FROM gone_rows);
            ELSE
                DELETE FROM address_words;
            END IF;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER addresses_unindexed_delete AFTER DELETE ON addresses REFERENCING OLD TABLE AS gone_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION crmkit_unindex_addresses()",
        "CREATE TRIGGER addresses_unindexed_truncate AFTER TRUNCATE ON addresses "
        "FOR EACH STATEMENT EXECUTE FUNCTION crmkit_unindex_addresses()",
    ],
}


# PostgreSQL's tables the database keeps itself (from other tables, by trigger): never copied by
# `crmkit migrate-store`, which fills the tables they are made of.
DERIVED_TABLES = frozenset({"address_count"})


def statements_for(dialect: str, mid: int, statements: list[str]) -> list[str]:
    """The statements of migration ``mid`` as ``dialect`` runs them."""
    if dialect != "postgresql":
        return statements
    out = []
    for i, sql in enumerate(statements):
        instead = POSTGRES_INSTEAD.get((mid, i), sql)
        if instead is not None:
            out.append(instead)
    return out + POSTGRES_ONLY.get(mid, [])


def _applied(tx: Tx) -> set[int]:
    return {row[0] for row in tx.rows("SELECT id FROM _crmkit_migrations")}


def _tables(tx: Tx) -> set[str]:
    return {
        row[0] for row in tx.rows(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_catalog = current_database() AND table_schema = current_schema()"
        )
    }


def migrate(store: Store) -> list[int]:
    """Apply pending migrations; return the ids applied. Refuses foreign and newer databases."""

    def run(tx: Tx) -> list[int]:
        tables = _tables(tx)
        if "_crmkit_migrations" not in tables:
            if tables:
                raise NotACrmkitDatabase(
                    f"{store.path} is a {_KIND[store.dialect]} database of something else (tables: "
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
            for sql in statements_for(tx.dialect, mid, statements):
                tx.execute(sql)
            tx.execute("INSERT INTO _crmkit_migrations (id, name) VALUES (?, ?)", [mid, name])
            applied.append(mid)
        return applied

    # Reading first keeps an up-to-date database untouched (and openable beside readers).
    if not store.memory and store.exists():
        pending = store.read(lambda tx: _pending_or_foreign(tx, store))
        if not pending:
            return []
    try:
        return store.write(run)  # one transaction: a refused statement rolls back every migration before it
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != _INSUFFICIENT_PRIVILEGE:
            raise
        raise _needs_owner(store) from exc


_INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL's SQLSTATE (psycopg's InsufficientPrivilege), read without psycopg


def _needs_owner(store: Store) -> MigrationNeedsOwner:
    """A person's login (crmkit db-roles) met a pending migration it may not run: who may, and what to run."""

    def read(tx: Tx) -> tuple[str, str, list[int]]:
        owner = tx.one("SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() "
                       "AND tablename = '_crmkit_migrations'")
        if owner is None:  # an empty database: its owner makes crmkit's tables
            owner = tx.one("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        done = _applied(tx) if "_crmkit_migrations" in _tables(tx) else set()
        return str(tx.one("SELECT current_user")), str(owner), [m[0] for m in MIGRATIONS if m[0] not in done]

    login, owner, pending = store.read(read)
    return catalog_error(MigrationNeedsOwner, "error.msg.migration_needs_owner", where=store.path, login=login,
                         owner=owner, pending=", ".join(map(str, pending)))


_KIND = {"duckdb": "DuckDB", "postgresql": "PostgreSQL"}


def _pending_or_foreign(tx: Tx, store: Store) -> bool:
    tables = _tables(tx)
    if "_crmkit_migrations" not in tables:
        return True  # run() decides between a fresh file and a foreign one
    done = _applied(tx)
    known = {m[0] for m in MIGRATIONS}
    return bool(done - known) or bool(known - done)
