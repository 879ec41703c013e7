"""What a Teams recipient may be: one check for ``crm.teams.send``/``preview``, the compose dialog and
campaign actions.

A recipient names a directory user by object id (a GUID), user principal name or e-mail address, or
is a dict from the people picker (its ``id``; else its ``userPrincipalName``, ``upn`` or ``mail``).
The form is checked before anything is looked up: Graph reads a user from the URL path
(``/users/{key}``), and a ``/`` there (even percent-encoded) addresses another resource, so such a
key gets Graph's 400 instead of "no such user". A recipient can also be a team's channel: the text
``channel:<team id>/<channel id>`` (:func:`channel_key`) or a dict ``{"team": id, "channel": id}`` (the picker's,
also ``teamId``/``channelId``), optionally with ``"mention": [people]`` to @mention in the post (each a
directory user in any of the forms above). Whatever fails is reported as
:class:`~crmkit.errors.InvalidRecipient` naming the recipient, cut to :data:`SHOWN` characters with
control characters escaped, so a 5 KB or binary input never fills or breaks a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRecipient
from ..i18n import LANGUAGES, t

__all__ = ["CHANNEL_PREFIX", "MAX_LENGTH", "SHOWN", "Recipient", "channel_key", "check", "invalid", "parse_channel_key",
           "shown"]

MAX_LENGTH = 254  # the longest e-mail address SMTP carries (RFC 5321); UPNs and GUIDs are shorter
SHOWN = 80  # characters of a recipient an error message shows

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The local part: RFC 5322 atoms joined by dots, without "/", "?" and "%" (no UPN has them, and in a
# URL path they split the segment, start a query or read as an escape). "#" stays: guests' UPNs have #EXT#.
_ATOM = r"[A-Za-z0-9!#$&'*+=^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+")
# Graph's channel ids: 19:<id>@thread.tacv2 (or the older @thread.skype); no "/", "?", "%" (a URL path segment).
_CHANNEL_ID = re.compile(r"19:[A-Za-z0-9_-]{1,200}@thread\.(?:tacv2|skype)")
CHANNEL_PREFIX = "channel:"


@dataclass(frozen=True)
class Recipient:
    """A recipient whose form is fine: ``key`` is what the directory is asked for."""

    key: str  # an object id in lower case, a UPN / e-mail address as given, or a channel_key
    kind: str  # "id", "address" or "channel"
    label: str  # how messages name it (already cut and quoted)
    mention: tuple[Recipient, ...] = ()  # a channel's people to @mention (checked like any recipient)


def channel_key(team_id: str, channel_id: str) -> str:
    """The text form of a channel recipient (also the outbox's chat id of a channel post)."""
    return f"{CHANNEL_PREFIX}{team_id}/{channel_id}"


def parse_channel_key(key: str) -> tuple[str, str] | None:
    """(team id, channel id) of a well-formed :func:`channel_key`, else None."""
    if not isinstance(key, str) or not key.startswith(CHANNEL_PREFIX) or len(key) > 2 * MAX_LENGTH:
        return None
    team, _, channel = key[len(CHANNEL_PREFIX):].partition("/")
    if not _GUID.fullmatch(team) or not _CHANNEL_ID.fullmatch(channel):
        return None
    return team.lower(), channel


def shown(value: object, limit: int = SHOWN) -> str:
    """``value`` for a message: quoted, control characters escaped, cut to ``limit`` characters with "…"."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return repr(text)


def _key_of(value: Any) -> tuple[Any, str | None]:
    """The directory key a recipient gives, and a display name when a picker dict carries one."""
    if isinstance(value, dict) and ("team" in value or "teamId" in value):
        team, chan = value.get("team", value.get("teamId")), value.get("channel", value.get("channelId"))
        name = value.get("name") or value.get("displayName")
        key = f"{CHANNEL_PREFIX}{team}/{chan}" if isinstance(team, str) and isinstance(chan, str) else repr(value)
        return key, name if isinstance(name, str) and name.strip() else None
    if isinstance(value, dict):
        key = next((value.get(k) for k in ("id", "userPrincipalName", "upn", "mail") if value.get(k)), None)
        name = value.get("name") or value.get("displayName")
        return key, name if isinstance(name, str) and name.strip() else None
    return value, None


def _form(key: Any) -> str | None:
    """The kind of a well-formed key, or None."""
    if not isinstance(key, str) or len(key) > MAX_LENGTH:
        return None
    if _GUID.fullmatch(key):
        return "id"
    if key.startswith(CHANNEL_PREFIX):
        return "channel" if parse_channel_key(key) else None
    return "address" if _ADDRESS.fullmatch(key) else None


def check(to: Any, *, saving: bool = False) -> list[Recipient]:
    """Every recipient's form, before anything is looked up; the same key (any case) counts once.

    ``saving`` words the error for saving (a campaign action) rather than sending.

    Raises:
        InvalidRecipient: no recipient, an empty one, or ones that cannot be a directory user (all named).
    """
    if isinstance(to, (str, dict)) or not isinstance(to, Iterable):
        to = [] if to is None else [to]  # one recipient given on its own, not a list of one
    given: Sequence[Any] = list(to)
    if not given:
        raise _catalog("error.msg.no_recipient")
    out: dict[str, Recipient] = {}
    bad: list[Any] = []
    for value in given:
        key, name = _key_of(value)
        if key is None or (isinstance(key, str) and not key.strip()):
            raise _catalog("error.msg.recipient_empty")
        key = key.strip() if isinstance(key, str) else key
        kind = _form(key)
        if kind is None:
            bad.append(key)
            continue
        key = key.lower() if kind == "id" else key
        if kind == "channel":
            team, chan = parse_channel_key(key)  # type: ignore[misc]  # well-formed: _form said so
            key = channel_key(team, chan)
        label = shown(f"{name} <{key}>" if name and name != key else key)
        mention: tuple[Recipient, ...] = ()
        if kind == "channel" and isinstance(value, dict) and value.get("mention"):
            if isinstance(value["mention"], (str, dict)):
                mention = tuple(check([value["mention"]], saving=saving))
            else:
                mention = tuple(check(value["mention"], saving=saving))
            if any(m.kind == "channel" for m in mention):
                bad.append(key)  # only people can be @mentioned
                continue
        # channel ids are case-sensitive: only a person's key counts once in any case
        out.setdefault(key if kind == "channel" else key.lower(), Recipient(key, kind, label, mention))
    if bad:
        raise invalid([("error.msg.recipient_malformed", shown(b)) for b in bad], [*map(_as_text, bad)],
                      saving=saving)
    return list(out.values())


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def invalid(problems: list[tuple[str, str]], recipients: list[str], *, saving: bool = False) -> InvalidRecipient:
    """One error listing every problem ``(catalog key, who)`` in each language."""
    key = "error.msg.recipients_invalid_save" if saving else "error.msg.recipients_invalid"
    params = {f"problems_{lang}": "; ".join(t(kind, lang, who=who) for kind, who in problems) for lang in LANGUAGES}
    return InvalidRecipient(t(key, "en", **params), recipients=recipients).localized(key, **params)


def _catalog(key: str) -> InvalidRecipient:
    return InvalidRecipient(t(key, "en")).localized(key)
