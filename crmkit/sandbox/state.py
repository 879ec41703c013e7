"""Persistent state of the sandbox tenant, in its own DuckDB file.

The sandbox is the only process that opens the file, so one connection guarded by a lock is
enough.  Calls are short point queries; they run on the event loop thread on purpose (a
thread hop would cost more than the query).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from . import SANDBOX_CLIENT_ID, SANDBOX_DAEMON_CLIENT_ID, SANDBOX_DAEMON_SECRET, SANDBOX_UNCONSENTED_CLIENT_ID
from .clock import SandboxClock
from .directory import SandboxUser, seed_users

# 2: apps.redirect_uris, browser_sessions. An older folder is brought up to date in place (_migrate).
SCHEMA_VERSION = "2"
NATIVE_CLIENT_URI = "https://login.crmkit.localhost/common/oauth2/nativeclient"
# Registered loopback URIs without a path: any port (Entra's rule for public clients) and any path (the
# sandbox's convenience, so crmkit's and a test's callbacks need no registration of their own).
LOOPBACK_REDIRECT_URIS: tuple[str, ...] = ("http://localhost", "http://127.0.0.1")

# Delegated Graph permissions the sandbox knows about.
DELEGATED_SCOPES: tuple[str, ...] = (
    "User.Read", "User.ReadBasic.All", "User.Read.All", "Chat.Create", "Chat.ReadBasic", "Chat.Read",
    "Chat.ReadWrite", "ChatMessage.Send", "ChatMessage.Read",
    # teams and channels (sandbox/channels.py)
    "Team.ReadBasic.All", "Channel.ReadBasic.All", "ChannelMember.Read.All", "ChannelMessage.Send",
    "ChannelMessage.Read.All",
    "Files.ReadWrite",  # the signed-in user's OneDrive (sandbox/graph_drive.py)
)
APPLICATION_ROLES: tuple[str, ...] = ("User.Read.All", "Chat.Create", "Chat.Read.All", "Teamwork.Migrate.All")
OIDC_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS users (id VARCHAR PRIMARY KEY, upn VARCHAR, data VARCHAR);
CREATE TABLE IF NOT EXISTS apps (
    client_id VARCHAR PRIMARY KEY, name VARCHAR, kind VARCHAR, secret_sha256 VARCHAR,
    delegated_scopes VARCHAR, app_roles VARCHAR, admin_consented BOOLEAN, redirect_uris VARCHAR);
CREATE TABLE IF NOT EXISTS user_consents (user_id VARCHAR, client_id VARCHAR, scopes VARCHAR);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_sha256 VARCHAR, user_id VARCHAR, client_id VARCHAR, scopes VARCHAR,
    created DOUBLE, expires_at DOUBLE);
CREATE TABLE IF NOT EXISTS browser_sessions (
    id_sha256 VARCHAR PRIMARY KEY, user_id VARCHAR, created DOUBLE, expires_at DOUBLE);
CREATE TABLE IF NOT EXISTS chats (
    id VARCHAR PRIMARY KEY, chat_type VARCHAR, topic VARCHAR, created DOUBLE, updated DOUBLE);
CREATE TABLE IF NOT EXISTS chat_members (chat_id VARCHAR, user_id VARCHAR, roles VARCHAR, added DOUBLE);
CREATE TABLE IF NOT EXISTS messages (
    chat_id VARCHAR, id VARCHAR, created_ms BIGINT, sender_id VARCHAR, data VARCHAR);
CREATE TABLE IF NOT EXISTS channel_messages (
    team_id VARCHAR, channel_id VARCHAR, id VARCHAR, reply_to VARCHAR, created_ms BIGINT, sender_id VARCHAR,
    data VARCHAR);
"""


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class App:
    client_id: str
    name: str
    kind: str  # "public" | "confidential"
    secret_sha256: str | None
    delegated_scopes: tuple[str, ...]
    app_roles: tuple[str, ...]
    admin_consented: bool
    redirect_uris: tuple[str, ...] = ()


def _seed_apps() -> list[App]:
    public_uris = (*LOOPBACK_REDIRECT_URIS, NATIVE_CLIENT_URI)
    return [
        App(SANDBOX_CLIENT_ID, "crmkit", "public", None, DELEGATED_SCOPES, (), True, public_uris),
        App(SANDBOX_UNCONSENTED_CLIENT_ID, "crmkit (unconsented)", "public", None, DELEGATED_SCOPES, (), False,
            public_uris),
        App(
            SANDBOX_DAEMON_CLIENT_ID, "crmkit daemon", "confidential", sha256(SANDBOX_DAEMON_SECRET), (),
            APPLICATION_ROLES, True,
        ),
    ]


class SandboxState:
    """All persistent sandbox data.  Thread-safe; one DuckDB connection."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(state_dir)
        self.clock = SandboxClock()  # stamps chats and messages; see Sandbox.clock
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / "sandbox.duckdb"
        self._lock = threading.RLock()
        self._con = duckdb.connect(str(self.db_path))
        self._users_by_id: dict[str, SandboxUser] = {}
        self._users_by_upn: dict[str, SandboxUser] = {}
        self._ms_lock = threading.Lock()
        self._used_ms: set[int] = set()
        with self._lock:
            self._con.execute(_SCHEMA)
            row = self._con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._seed()
            elif row[0] != SCHEMA_VERSION:
                self._migrate(row[0])
            self._load_users()
            self._used_ms = {int(r[0]) for r in self._con.execute(
                "SELECT created_ms FROM messages UNION SELECT created_ms FROM channel_messages").fetchall()}

    # -- lifecycle -------------------------------------------------------------------------
    def _seed(self) -> None:
        con = self._con
        users = [(u.id, u.userPrincipalName.lower(), json.dumps(dataclasses.asdict(u))) for u in seed_users()]
        apps = [(a.client_id, a.name, a.kind, a.secret_sha256, json.dumps(a.delegated_scopes),
                 json.dumps(a.app_roles), a.admin_consented, json.dumps(a.redirect_uris)) for a in _seed_apps()]
        # One transaction and multi-row VALUES: DuckDB commits are the expensive part.
        con.execute("BEGIN TRANSACTION")
        try:
            for table in ("meta", "users", "apps", "user_consents", "refresh_tokens", "browser_sessions", "chats",
                          "chat_members", "messages", "channel_messages"):
                con.execute(f"DELETE FROM {table}")
            con.execute("INSERT INTO users VALUES " + ",".join(["(?, ?, ?)"] * len(users)),
                        [v for row in users for v in row])
            con.execute("INSERT INTO apps VALUES " + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(apps)),
                        [v for row in apps for v in row])
            con.execute("INSERT INTO meta VALUES ('schema', ?)", [SCHEMA_VERSION])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def _migrate(self, version: str) -> None:
        """Bring a state folder of an older schema up to date, keeping its data; one it cannot read
        (a newer or unknown schema) is seeded afresh, as ``reset`` would."""
        con = self._con
        if version != "1":
            for table in ("apps",):  # the one table whose columns changed; the rest is deleted by _seed
                con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(_SCHEMA)
            self._seed()
            return
        seeded = {a.client_id: a.redirect_uris for a in _seed_apps()}
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("ALTER TABLE apps ADD COLUMN IF NOT EXISTS redirect_uris VARCHAR DEFAULT '[]'")
            for (client_id,) in con.execute("SELECT client_id FROM apps").fetchall():
                con.execute("UPDATE apps SET redirect_uris = ? WHERE client_id = ?",
                            [json.dumps(seeded.get(client_id, ())), client_id])
            con.execute("UPDATE meta SET value = ? WHERE key = 'schema'", [SCHEMA_VERSION])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise

    def _load_users(self) -> None:
        users = []
        for (data,) in self._con.execute("SELECT data FROM users ORDER BY upn").fetchall():
            d = json.loads(data)
            d["businessPhones"] = tuple(d["businessPhones"])
            d["admin_roles"] = tuple(d["admin_roles"])
            users.append(SandboxUser(**d))
        self._users_by_id = {u.id: u for u in users}
        self._users_by_upn = {u.userPrincipalName.lower(): u for u in users}

    def reset(self) -> None:
        """Back to the freshly seeded tenant (drops chats, messages, tokens and consents)."""
        with self._lock:
            self._seed()
            self._load_users()
            shutil.rmtree(self.dir / "drive", ignore_errors=True)  # graph_drive's files and upload sessions
        with self._ms_lock:
            self._used_ms.clear()
        self.clock.offset_s = 0.0

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # -- directory -------------------------------------------------------------------------
    def users(self) -> list[SandboxUser]:
        return list(self._users_by_id.values())

    def user(self, key: str) -> SandboxUser | None:
        """Look a user up by object id or UPN (case-insensitive)."""
        return self._users_by_id.get(key) or self._users_by_upn.get(key.lower())

    def remove_user(self, key: str) -> SandboxUser | None:
        """Delete a user from the directory (someone who left; reset() brings them back); returns them."""
        with self._lock:
            user = self.user(key)
            if user is not None:
                self._con.execute("DELETE FROM users WHERE id = ?", [user.id])
                self._load_users()
            return user

    def set_account_enabled(self, key: str, enabled: bool) -> SandboxUser | None:
        """Switch a user's account on or off (``accountEnabled``: an admin blocking sign-in; reset() restores it);
        returns the changed user. A disabled account's sign-ins, refreshes and tokens are refused (AADSTS50057)."""
        with self._lock:
            user = self.user(key)
            if user is None:
                return None
            changed = dataclasses.replace(user, accountEnabled=enabled)
            self._con.execute("UPDATE users SET data = ? WHERE id = ?",
                              [json.dumps(dataclasses.asdict(changed)), user.id])
            self._load_users()
            return changed

    # -- apps and consent ------------------------------------------------------------------
    def app(self, client_id: str) -> App | None:
        with self._lock:
            row = self._con.execute("SELECT * FROM apps WHERE client_id = ?", [client_id]).fetchone()
        if row is None:
            return None
        return App(row[0], row[1], row[2], row[3], tuple(json.loads(row[4])), tuple(json.loads(row[5])), row[6],
                   tuple(json.loads(row[7] or "[]")))

    def add_app(self, app: App) -> None:
        """Register one more app (the admin API's web apps, e.g. ``crmkit hub``); reset() drops it again."""
        with self._lock:
            self._con.execute("INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
                app.client_id, app.name, app.kind, app.secret_sha256, json.dumps(app.delegated_scopes),
                json.dumps(app.app_roles), app.admin_consented, json.dumps(app.redirect_uris)])

    def set_redirect_uris(self, client_id: str, uris: Iterable[str]) -> bool:
        """Replace an app's registered redirect URIs; False for an unknown app."""
        with self._lock:
            found = self._con.execute("SELECT 1 FROM apps WHERE client_id = ?", [client_id]).fetchone()
            if found:
                self._con.execute("UPDATE apps SET redirect_uris = ? WHERE client_id = ?",
                                  [json.dumps(list(uris)), client_id])
        return bool(found)

    def set_admin_consent(self, client_id: str, granted: bool) -> bool:
        with self._lock:
            found = self._con.execute("SELECT 1 FROM apps WHERE client_id = ?", [client_id]).fetchone()
            if found:
                self._con.execute("UPDATE apps SET admin_consented = ? WHERE client_id = ?", [granted, client_id])
                if not granted:
                    self._con.execute("DELETE FROM user_consents WHERE client_id = ?", [client_id])
        return bool(found)

    def user_consent(self, user_id: str, client_id: str) -> set[str]:
        with self._lock:
            rows = self._con.execute(
                "SELECT scopes FROM user_consents WHERE user_id = ? AND client_id = ?", [user_id, client_id]
            ).fetchall()
        return {s for (scopes,) in rows for s in json.loads(scopes)}

    def grant_user_consent(self, user_id: str, client_id: str, scopes: Iterable[str]) -> None:
        with self._lock:
            self._con.execute(
                "INSERT INTO user_consents VALUES (?, ?, ?)", [user_id, client_id, json.dumps(sorted(scopes))]
            )

    # -- refresh tokens (stored hashed; single use) -----------------------------------------
    def store_refresh_token(self, token: str, user_id: str, client_id: str, scopes: list[str],
                            lifetime_s: float) -> None:
        now = time.time()
        with self._lock:
            self._con.execute(
                "INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, ?, ?)",
                [sha256(token), user_id, client_id, json.dumps(scopes), now, now + lifetime_s],
            )

    def take_refresh_token(self, token: str) -> dict[str, Any] | None:
        """Consume a refresh token: return its grant and delete it (rotation)."""
        h = sha256(token)
        with self._lock:
            row = self._con.execute(
                "SELECT user_id, client_id, scopes, expires_at FROM refresh_tokens WHERE token_sha256 = ?", [h]
            ).fetchone()
            if row is None:
                return None
            self._con.execute("DELETE FROM refresh_tokens WHERE token_sha256 = ?", [h])
        return {"user_id": row[0], "client_id": row[1], "scopes": json.loads(row[2]), "expires_at": row[3]}

    def revoke_refresh_tokens(self, user_id: str | None = None) -> int:
        with self._lock:
            if user_id is None:
                n = self._con.execute("SELECT count(*) FROM refresh_tokens").fetchone()
                self._con.execute("DELETE FROM refresh_tokens")
            else:
                n = self._con.execute("SELECT count(*) FROM refresh_tokens WHERE user_id = ?", [user_id]).fetchone()
                self._con.execute("DELETE FROM refresh_tokens WHERE user_id = ?", [user_id])
        return int(n[0]) if n else 0

    # -- browser sessions of the sign-in pages (keyed by the sha256 of the cookie's random id) -------------
    def start_browser_session(self, session_id: str, user_id: str, lifetime_s: float) -> None:
        now = time.time()
        with self._lock:
            self._con.execute("DELETE FROM browser_sessions WHERE expires_at < ?", [now])
            self._con.execute("INSERT OR REPLACE INTO browser_sessions VALUES (?, ?, ?, ?)",
                              [sha256(session_id), user_id, now, now + lifetime_s])

    def browser_session(self, session_id: str) -> str | None:
        """The user id a live browser session belongs to, else None."""
        with self._lock:
            row = self._con.execute("SELECT user_id, expires_at FROM browser_sessions WHERE id_sha256 = ?",
                                    [sha256(session_id)]).fetchone()
        return row[0] if row and row[1] > time.time() else None

    def end_browser_session(self, session_id: str) -> None:
        with self._lock:
            self._con.execute("DELETE FROM browser_sessions WHERE id_sha256 = ?", [sha256(session_id)])

    def end_browser_sessions_of(self, user_id: str) -> int:
        """End every browser session of one user (an admin revoking their sign-in sessions); returns how many."""
        with self._lock:
            n = self._con.execute("SELECT count(*) FROM browser_sessions WHERE user_id = ?", [user_id]).fetchone()
            self._con.execute("DELETE FROM browser_sessions WHERE user_id = ?", [user_id])
        return int(n[0]) if n else 0

    # -- chats -------------------------------------------------------------------------------
    def create_chat(self, chat_id: str, chat_type: str, topic: str | None,
                    members: list[tuple[str, list[str]]]) -> dict[str, Any]:
        now = self.clock.time()
        with self._lock:
            existing = self.chat(chat_id)
            if existing is not None:
                return existing
            rows = [(chat_id, uid, json.dumps(roles), now) for uid, roles in members]
            self._con.execute("BEGIN TRANSACTION")
            try:
                self._con.execute("INSERT INTO chats VALUES (?, ?, ?, ?, ?)", [chat_id, chat_type, topic, now, now])
                self._con.execute("INSERT INTO chat_members VALUES " + ",".join(["(?, ?, ?, ?)"] * len(rows)),
                                  [v for row in rows for v in row])
                self._con.execute("COMMIT")
            except Exception:
                self._con.execute("ROLLBACK")
                raise
            return self.chat(chat_id)  # type: ignore[return-value]

    def chat(self, chat_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._con.execute(
                "SELECT id, chat_type, topic, created, updated FROM chats WHERE id = ?", [chat_id]
            ).fetchone()
        if row is None:
            return None
        return {"id": row[0], "chat_type": row[1], "topic": row[2], "created": row[3], "updated": row[4]}

    def chats(self, user_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if user_id is None:
                rows = self._con.execute(
                    "SELECT id, chat_type, topic, created, updated FROM chats ORDER BY updated DESC, id"
                ).fetchall()
            else:
                rows = self._con.execute(
                    "SELECT c.id, c.chat_type, c.topic, c.created, c.updated FROM chats c "
                    "JOIN chat_members m ON m.chat_id = c.id WHERE m.user_id = ? ORDER BY c.updated DESC, c.id",
                    [user_id],
                ).fetchall()
        return [{"id": r[0], "chat_type": r[1], "topic": r[2], "created": r[3], "updated": r[4]} for r in rows]

    def chat_members(self, chat_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute(
                "SELECT user_id, roles, added FROM chat_members WHERE chat_id = ? ORDER BY added, user_id",
                [chat_id],
            ).fetchall()
        return [{"user_id": r[0], "roles": json.loads(r[1]), "added": r[2]} for r in rows]

    def is_member(self, chat_id: str, user_id: str) -> bool:
        with self._lock:
            row = self._con.execute(
                "SELECT 1 FROM chat_members WHERE chat_id = ? AND user_id = ?", [chat_id, user_id]
            ).fetchone()
        return row is not None

    def group_chat_count(self) -> int:
        with self._lock:
            row = self._con.execute("SELECT count(*) FROM chats WHERE chat_type = 'group'").fetchone()
        return int(row[0]) if row else 0

    # -- messages ----------------------------------------------------------------------------
    def next_message_ms(self) -> int:
        """Epoch milliseconds on the tenant's clock, unique, so message ids never collide.

        Not forced to increase: after the clock is set back, new messages are stamped in the past,
        as they would be by a server whose clock was corrected.
        """
        with self._ms_lock:
            ms = int(self.clock.time() * 1000)
            while ms in self._used_ms:
                ms += 1
            self._used_ms.add(ms)
            return ms

    def add_message(self, chat_id: str, message: dict[str, Any], created_ms: int, sender_id: str) -> None:
        with self._lock:
            self._con.execute("BEGIN TRANSACTION")
            try:
                self._con.execute(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?)",
                    [chat_id, message["id"], created_ms, sender_id, json.dumps(message)],
                )
                self._con.execute("UPDATE chats SET updated = ? WHERE id = ?", [created_ms / 1000, chat_id])
                self._con.execute("COMMIT")
            except Exception:
                self._con.execute("ROLLBACK")
                raise

    def messages(self, chat_id: str, *, newest_first: bool = True, limit: int | None = None,
                 offset: int = 0) -> list[dict[str, Any]]:
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT data FROM messages WHERE chat_id = ? ORDER BY created_ms {order}"
        params: list[Any] = [chat_id]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        with self._lock:
            rows = self._con.execute(sql, params).fetchall()
        return [json.loads(r[0]) for r in rows]

    def message_page(self, chat_id: str, limit: int, *, after_ms: float | None = None,
                     before_ms: float | None = None, below: tuple[int, str] | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` messages newest first, stamped in (``after_ms``, ``before_ms``) and, for the
        next page, below the ``(created_ms, id)`` key of the last one listed (new arrivals shift nothing)."""
        sql = "SELECT data FROM messages WHERE chat_id = ?"
        params: list[Any] = [chat_id]
        if after_ms is not None:
            sql += " AND created_ms > ?"
            params.append(after_ms)
        if before_ms is not None:
            sql += " AND created_ms < ?"
            params.append(before_ms)
        if below is not None:
            sql += " AND (created_ms < ? OR (created_ms = ? AND id < ?))"
            params += [below[0], below[0], below[1]]
        sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._con.execute(sql, params).fetchall()
        return [json.loads(r[0]) for r in rows]

    def message(self, chat_id: str, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._con.execute(
                "SELECT data FROM messages WHERE chat_id = ? AND id = ?", [chat_id, message_id]
            ).fetchone()
        return json.loads(row[0]) if row else None

    def count_messages(self, chat_id: str) -> int:
        with self._lock:
            row = self._con.execute("SELECT count(*) FROM messages WHERE chat_id = ?", [chat_id]).fetchone()
        return int(row[0]) if row else 0

    def all_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._con.execute("SELECT data FROM messages ORDER BY created_ms").fetchall()
        return [json.loads(r[0]) for r in rows]
