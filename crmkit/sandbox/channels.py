"""Teams, channels and channel messages of the sandbox tenant (data and storage; Graph routes in graph_channels).

Seeded, not created through Graph: two teams whose members are directory users, so ``GET /me/joinedTeams``
differs per signed-in user.

- **Vertrieb** (Sales): every enabled member of the Sales department, the tenant admin and the partner guest
  Kim Berg (role guest). Owners: Jonas Becker and the admin. Channels: *General*, *Leads* (standard: every team
  member) and *Key Accounts* (private: Jonas Becker, Marie Fischer, Noah Richter; Anna Schmidt, the demo's
  sender, is not in it).
- **Finanzen** (Finance): the Finance department (the MFA-only user included); neither Anna Schmidt nor the
  admin. Owner: Clara Krüger. Channels: *General*, *Rechnungen*.

Membership is read from the directory at each call: a user removed from it (admin API) leaves their teams.
Channel messages live in the tenant's DuckDB file (table ``channel_messages``, in ``state._SCHEMA``), through
the state's own connection and lock; ``SandboxState.reset`` empties them with the rest.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from . import SANDBOX_ADMIN_UPN, SANDBOX_GUEST_UPN, SANDBOX_TENANT_ID
from .directory import SandboxUser
from .state import SandboxState

_NS = uuid.UUID(SANDBOX_TENANT_ID)
SEEDED_AT = 1767600000.0  # 2026-01-05T08:00:00Z: when the seeded teams and channels were "created"


def _team_id(key: str) -> str:
    return str(uuid.uuid5(_NS, f"team:{key}"))


def _channel_id(key: str) -> str:
    # Graph's channel ids look like 19:<32 hex>@thread.tacv2
    return f"19:{uuid.uuid5(_NS, f'channel:{key}').hex}@thread.tacv2"


@dataclass(frozen=True)
class Channel:
    id: str
    team_id: str
    displayName: str
    description: str | None
    membershipType: str  # "standard" | "private"
    members: tuple[str, ...] = ()  # UPNs, private channels only (standard: the team's members)
    owners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Team:
    id: str
    displayName: str
    description: str
    departments: tuple[str, ...]  # every enabled member of these departments belongs to the team
    extra_members: tuple[str, ...]  # UPNs on top of the departments
    guests: tuple[str, ...]  # UPNs with the role guest
    owners: tuple[str, ...]
    channels: tuple[Channel, ...]


def _seed_teams() -> tuple[Team, ...]:
    sales, finance = _team_id("vertrieb"), _team_id("finanzen")
    jonas, marie, noah = (f"{n}@contoso.example" for n in ("jonas.becker", "marie.fischer", "noah.richter"))
    clara = "clara.krueger@contoso.example"
    return (
        Team(sales, "Vertrieb", "Vertriebsteam: Leads, Angebote und Kundenbetreuung", ("Sales",),
             (SANDBOX_ADMIN_UPN,), (SANDBOX_GUEST_UPN,), (jonas, SANDBOX_ADMIN_UPN), (
                 Channel(_channel_id("vertrieb/general"), sales, "General", "Allgemeines im Vertrieb", "standard"),
                 Channel(_channel_id("vertrieb/leads"), sales, "Leads", "Neue Leads und ihre Übergabe", "standard"),
                 Channel(_channel_id("vertrieb/key-accounts"), sales, "Key Accounts", "Großkunden (privat)",
                         "private", (jonas, marie, noah), (jonas,)),
             )),
        Team(finance, "Finanzen", "Buchhaltung, Controlling und Rechnungen", ("Finance",), (), (), (clara,), (
            Channel(_channel_id("finanzen/general"), finance, "General", "Allgemeines in den Finanzen", "standard"),
            Channel(_channel_id("finanzen/rechnungen"), finance, "Rechnungen", "Offene Posten und Mahnungen",
                    "standard"),
        )),
    )


TEAMS: tuple[Team, ...] = _seed_teams()


def team(team_id: str) -> Team | None:
    return next((t for t in TEAMS if t.id == team_id), None)


def channel(team_id: str, channel_id: str) -> Channel | None:
    t = team(team_id)
    return next((c for c in t.channels if c.id == channel_id), None) if t else None


def team_members(state: SandboxState, t: Team) -> list[tuple[SandboxUser, list[str]]]:
    """The team's members (directory users as they are now) with their roles: ["owner"], [] or ["guest"]."""
    out: dict[str, tuple[SandboxUser, list[str]]] = {}
    for u in sorted(state.users(), key=lambda u: u.userPrincipalName):
        if u.department in t.departments and u.accountEnabled and u.userType == "Member":
            out[u.id] = (u, [])
    for upn in t.extra_members:
        if (u := state.user(upn)) is not None:
            out[u.id] = (u, [])
    for upn in t.guests:
        if (u := state.user(upn)) is not None:
            out[u.id] = (u, ["guest"])
    for upn in t.owners:
        if (u := state.user(upn)) is not None and u.id in out:
            out[u.id] = (u, ["owner"])
    return list(out.values())


def channel_members(state: SandboxState, t: Team, c: Channel) -> list[tuple[SandboxUser, list[str]]]:
    """A channel's members: a standard channel's are the team's; a private channel's its own list (owners
    "owner", the rest no role), as long as they are still in the team."""
    members = team_members(state, t)
    if c.membershipType == "standard":
        return members
    in_team = {u.id for u, _ in members}
    out = []
    for upn in c.members:
        u = state.user(upn)
        if u is not None and u.id in in_team:
            out.append((u, ["owner"] if upn in c.owners else []))
    return out


def is_team_member(state: SandboxState, t: Team, user_id: str) -> bool:
    return any(u.id == user_id for u, _ in team_members(state, t))


def is_channel_member(state: SandboxState, t: Team, c: Channel, user_id: str) -> bool:
    return any(u.id == user_id for u, _ in channel_members(state, t, c))


def joined_teams(state: SandboxState, user_id: str) -> list[Team]:
    return [t for t in TEAMS if is_team_member(state, t, user_id)]


def visible_channels(state: SandboxState, t: Team, user_id: str | None) -> list[Channel]:
    """The channels a user sees in a team (private ones only as a member); all of them for ``None``."""
    return [c for c in t.channels
            if user_id is None or c.membershipType == "standard" or is_channel_member(state, t, c, user_id)]


# -- storage ----------------------------------------------------------------------------------
def add_message(state: SandboxState, c: Channel, message: dict[str, Any], created_ms: int, sender_id: str) -> None:
    with state._lock:  # the state's one connection: the sandbox is its file's only user
        state._con.execute("INSERT INTO channel_messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [c.team_id, c.id, message["id"], message.get("replyToId"), created_ms, sender_id,
                            json.dumps(message)])


def message(state: SandboxState, c: Channel, message_id: str, reply_to: str | None = None) -> dict[str, Any] | None:
    """A top-level message (``reply_to`` None) or a reply to ``reply_to``."""
    sql = "SELECT data FROM channel_messages WHERE team_id = ? AND channel_id = ? AND id = ? AND "
    params: list[Any] = [c.team_id, c.id, message_id]
    if reply_to is None:
        sql += "reply_to IS NULL"
    else:
        sql += "reply_to = ?"
        params.append(reply_to)
    with state._lock:
        row = state._con.execute(sql, params).fetchone()
    return json.loads(row[0]) if row else None


def message_page(state: SandboxState, c: Channel, limit: int, *, reply_to: str | None = None,
                 below: tuple[int, str] | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` top-level messages (or replies to ``reply_to``) newest first, below the ``(created_ms,
    id)`` key of the last one listed (new arrivals shift nothing)."""
    sql = "SELECT data FROM channel_messages WHERE team_id = ? AND channel_id = ? AND "
    params: list[Any] = [c.team_id, c.id]
    if reply_to is None:
        sql += "reply_to IS NULL"
    else:
        sql += "reply_to = ?"
        params.append(reply_to)
    if below is not None:
        sql += " AND (created_ms < ? OR (created_ms = ? AND id < ?))"
        params += [below[0], below[0], below[1]]
    sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
    params.append(limit)
    with state._lock:
        rows = state._con.execute(sql, params).fetchall()
    return [json.loads(r[0]) for r in rows]


def thread(state: SandboxState, c: Channel) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Every top-level message oldest first, each with its replies oldest first (the Teams view)."""
    with state._lock:
        rows = state._con.execute("SELECT data FROM channel_messages WHERE team_id = ? AND channel_id = ? "
                                  "ORDER BY created_ms, id", [c.team_id, c.id]).fetchall()
    msgs = [json.loads(r[0]) for r in rows]
    replies: dict[str, list[dict[str, Any]]] = {}
    for m in msgs:
        if m.get("replyToId"):
            replies.setdefault(m["replyToId"], []).append(m)
    return [(m, replies.get(m["id"], [])) for m in msgs if not m.get("replyToId")]


def count_messages(state: SandboxState, c: Channel) -> int:
    with state._lock:
        row = state._con.execute("SELECT count(*) FROM channel_messages WHERE team_id = ? AND channel_id = ?",
                                 [c.team_id, c.id]).fetchone()
    return int(row[0]) if row else 0
