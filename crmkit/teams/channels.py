"""A team's channel as a recipient: the sender's joined channels, a channel read before a send, @mentions.

A channel recipient (:mod:`crmkit.teams.recipients`, ``channel:<team id>/<channel id>``) is resolved in
planning by :func:`resolve_channel`: the team must be one of the sender's joined teams (``GET /me/joinedTeams``)
and the channel one the sender can read (``GET /teams/{t}/channels/{c}``: a private channel without the sender
is 403), and its members are read (``GET .../members``) because a post discloses the record to every one of
them: the transfer log names the channel and its member count at send time (guests counted too).

A channel post needs no chat: its outbox row carries the channel key as its chat id (chat kind ``channel``)
and :class:`~crmkit.teams.gateway.GraphChatGateway` posts to ``/teams/{t}/channels/{c}/messages``.
:func:`add_mentions` puts ``<at id="N">Name</at>`` (escaped) before the body and the ``mentions`` array
Graph requires for each of them.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..errors import GraphError
from .recipients import Recipient, channel_key, parse_channel_key

if TYPE_CHECKING:
    from ..graph import GraphClient

__all__ = ["CHANNEL_KIND", "add_mentions", "channel_path", "joined_channels", "resolve_channel"]

CHANNEL_KIND = "channel"  # the outbox's chat_kind of a channel post (beside oneOnOne and group)


def channel_path(key: str) -> str:
    """``/teams/{t}/channels/{c}`` of a channel key (the channel id percent-encoded but for ``:`` and ``@``)."""
    parsed = parse_channel_key(key)
    if parsed is None:
        raise ValueError(f"not a channel key: {key!r}")
    return f"/teams/{parsed[0]}/channels/{quote(parsed[1], safe=':@')}"


def _pages(graph: GraphClient, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    next_path: str | None = path
    while next_path is not None:
        data = graph.submit(graph.aio.json("GET", next_path, params=params)).result()
        out.extend(data.get("value") or [])
        next_path, params = data.get("@odata.nextLink"), None
    return out


def joined_channels(graph: GraphClient) -> list[dict[str, Any]]:
    """Every channel of the sender's joined teams that the sender can see (the picker's list).

    Each: ``key`` (the recipient form), ``team_id``, ``team``, ``channel_id``, ``channel``, ``membership``.
    """
    rows = []
    for team in _pages(graph, "/me/joinedTeams"):
        for c in _pages(graph, f"/teams/{team['id']}/channels"):
            rows.append({"key": channel_key(str(team["id"]), str(c["id"])), "team_id": str(team["id"]),
                         "team": team.get("displayName") or "", "channel_id": str(c["id"]),
                         "channel": c.get("displayName") or "", "membership": c.get("membershipType")})
    return rows


def resolve_channel(graph: GraphClient, r: Recipient, mentioned: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The channel ``r`` names as a recipient dict, or None when it is not one of the sender's joined channels.

    The dict: ``id`` (the key), ``kind`` ``"channel"``, ``displayName`` ("Team / Channel"), ``team_id``,
    ``team_name``, ``channel_id``, ``channel_name``, ``members`` (their user ids, read now), ``member_count``,
    ``guest_count`` and ``mention`` (the directory users to @mention, given resolved).
    """
    team_id, channel_id = parse_channel_key(r.key)  # type: ignore[misc]  # checked by recipients.check
    teams = {str(t["id"]).lower(): t for t in _pages(graph, "/me/joinedTeams")}
    if team_id not in teams:
        return None
    try:
        channel = graph.submit(graph.aio.json("GET", channel_path(r.key))).result()
        members = _pages(graph, f"{channel_path(r.key)}/members")
    except GraphError as exc:
        if exc.status in (403, 404):  # unknown, or a private channel without the sender
            return None
        raise
    team_name = str(teams[team_id].get("displayName") or "")
    channel_name = str(channel.get("displayName") or "")
    return {
        "id": r.key, "kind": CHANNEL_KIND, "displayName": f"{team_name} / {channel_name}",
        "team_id": team_id, "team_name": team_name, "channel_id": channel_id, "channel_name": channel_name,
        "members": [str(m.get("userId")) for m in members if m.get("userId")],
        "member_count": len(members), "guest_count": sum("guest" in (m.get("roles") or []) for m in members),
        "mention": mentioned,
    }


def add_mentions(payload: dict[str, Any], people: list[dict[str, Any]]) -> dict[str, Any]:
    """``payload`` with ``<at id="N">Name</at>`` for each person before its body and Graph's ``mentions`` array.

    Names are HTML-escaped in the body (the ``mentionText`` is the plain name, as Graph echoes it).
    """
    if not people:
        return payload
    tags, mentions = [], []
    for n, p in enumerate(people):
        name = str(p.get("displayName") or p.get("userPrincipalName") or p["id"])
        tags.append(f'<at id="{n}">{html.escape(name)}</at>')
        mentions.append({"id": n, "mentionText": name,
                         "mentioned": {"user": {"id": str(p["id"]), "displayName": name,
                                                "userIdentityType": "aadUser"}}})
    body = dict(payload["body"])
    body["content"] = f"<p>{' '.join(tags)}</p>{body.get('content') or ''}"
    return {**payload, "body": body, "mentions": mentions}
