"""The delivery engine's chat gateway to Microsoft Graph, and Teams' pacing.

:class:`GraphChatGateway` is what :class:`~crmkit.teams.delivery.DeliveryEngine` posts through
(the :class:`~crmkit.teams.delivery.ChatGateway` protocol): it finds or makes the chat, posts once
(a 5xx or no answer is :class:`~crmkit.teams.delivery.Ambiguous`, for the outbox to reconcile) and
reads a chat back for a message's marker. A channel row (chat id ``channel:<team>/<channel>``) is posted to
the channel and read back from its message list, on the same pacing and ambiguity rules.
:func:`teams_limiter` paces posts at Teams' limits.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from ..graph import TEAMS_CHAT_RATE, TEAMS_TENANT_RATE, RateLimiter
from .channels import channel_path
from .delivery import Ambiguous
from .recipients import CHANNEL_PREFIX

if TYPE_CHECKING:
    from ..graph import GraphClient
    from ..store import Store

__all__ = ["GraphChatGateway", "teams_limiter"]


def teams_limiter(store: Store | None = None) -> RateLimiter:
    """Client-side pacing at Teams' documented limits (20/s per tenant, 1/s per chat).

    On PostgreSQL (``store``) several processes post for one CRM, so the pacing is shared through the
    database (:class:`~crmkit.teams.pacing.SharedPacer`); otherwise it is this process's own.
    ``CRMKIT_TEAMS_TENANT_RPS`` / ``CRMKIT_TEAMS_CHAT_RPS`` change them, for a sandbox whose limits
    were raised (tests, benchmarks); against Microsoft keep the defaults.
    """
    tenant = float(os.environ.get("CRMKIT_TEAMS_TENANT_RPS") or TEAMS_TENANT_RATE)
    chat = float(os.environ.get("CRMKIT_TEAMS_CHAT_RPS") or TEAMS_CHAT_RATE)
    if store is not None and store.dialect == "postgresql":
        from .pacing import SharedPacer

        return SharedPacer(store.backend.url, tenant, chat)  # type: ignore[union-attr]
    return RateLimiter(tenant, chat)



class GraphChatGateway:
    """The delivery engine's view of Graph: chats, one post, and reading a chat back.

    Args:
        graph: the Graph client; its :class:`~crmkit.graph.ServerClock` places our times on Graph's clock.
        clock_skew: the read-back's margin while no ``Date`` header has been seen (the clocks' offset unknown).
        margin: the margin once the offset is measured: Graph's front end (``Date``) and the Teams store
            (message stamps) are different machines, and a ``Date`` may be cached a moment.
    """

    def __init__(self, graph: GraphClient, *, clock_skew: timedelta = timedelta(minutes=5),
                 margin: timedelta = timedelta(seconds=5)) -> None:
        self.aio = graph.aio
        self.clock_skew = clock_skew
        self.margin = margin

    def window_start(self, since: datetime) -> pd.Timestamp:
        """``since`` (naive UTC, our clock) as the earliest server stamp a message posted after it can carry."""
        bounds = self.aio.clock.bounds()
        if bounds is None:
            return pd.Timestamp(since) - self.clock_skew
        return pd.Timestamp(since) + pd.Timedelta(seconds=bounds[0]) - self.margin

    async def ensure_chat(self, kind: str, members: list[str], topic: str | None) -> str:
        # A channel row carries its channel key as chat id (the engine never asks for its chat).
        if kind == "oneOnOne":
            chat = await self.aio.get_or_create_chat(members[0], members[1])
        else:
            chat = await self.aio.get_or_create_group_chat(members, topic=topic)  # one chat per group
        return str(chat["id"])

    async def post_message(self, chat_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        from ..errors import GraphError

        try:
            if chat_id.startswith(CHANNEL_PREFIX):  # a team's channel: paced per channel as a chat is
                return await self.aio.json("POST", f"{channel_path(chat_id)}/messages", json=dict(payload),
                                           chat_id=chat_id, paced=True)
            return await self.aio.post_message(chat_id, payload)
        except GraphError as exc:
            if exc.status is None or exc.status >= 500:
                raise Ambiguous(str(exc)) from exc
            raise

    async def find_marker(self, chat_id: str, marker: str, payload: dict[str, Any], since: datetime) -> str | None:
        """Read back the chat's messages since ``since`` (our clock), newest first, looking for ``marker``.

        Graph is asked for that window only (``$orderby=lastModifiedDateTime desc`` with ``$filter=
        lastModifiedDateTime gt …``, as chat-list-messages documents; an edit only makes a message
        newer), so the read costs pages for the messages in the window, not for the chat's history.
        No upper bound: Graph may store a post after we stopped waiting for its answer.
        """
        path: str | None = f"/chats/{quote(chat_id, safe=':@')}/messages"
        floor = self.window_start(since)
        params: dict[str, Any] | None = {"$top": 50, "$orderby": "lastModifiedDateTime desc",
                                         "$filter": f"lastModifiedDateTime gt {_graph_time(floor)}"}
        channel = chat_id.startswith(CHANNEL_PREFIX)
        if channel:
            # channel-list-messages takes $top (<= 50) and $expand only: no date filter, no $orderby, and it
            # documents no order; the sandbox lists newest first. The read stops at the first page holding
            # nothing newer than the window (not at the first older message): a page more than a chat's read
            # at most, and a message out of order on a page does not end it early.
            path, params = f"{channel_path(chat_id)}/messages", {"$top": 50}
        content = payload["body"]["content"]
        while path is not None:
            data = await self.aio.json("GET", path, params=params, chat_id=chat_id, paced=True)
            # The first answer may bring the first Date seen: the floor tightens, never below the asked one.
            floor = max(floor, self.window_start(since))
            page_old = True
            for m in data.get("value") or []:
                ids = {a.get("id") for a in m.get("attachments") or []}
                if marker in ids or (not ids and (m.get("body") or {}).get("content") == content
                                     and m.get("subject") == payload.get("subject")):
                    return str(m["id"])
                stamp = m.get("lastModifiedDateTime") or m.get("createdDateTime") or "1970-01-01T00:00:00Z"
                old = pd.Timestamp(stamp).tz_convert(None) <= floor
                if old and not channel:
                    return None  # older than the window (a server that ignored the filter): not there
                page_old = page_old and old
            if channel and page_old:
                return None
            path, params = data.get("@odata.nextLink"), None
        return None


def _graph_time(t: pd.Timestamp) -> str:
    """An OData DateTimeOffset literal in UTC, cut (not rounded) to milliseconds."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

