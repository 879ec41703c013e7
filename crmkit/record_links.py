"""A link back to the record: »Im CRM öffnen« / "Open in CRM" in a Teams message, and what opening it does.

The link is the addresses dashboard's URL (the system setting :data:`SETTING`, default what ``crmkit demo``
serves) with one query parameter, ``?record=<id>``: the address id and nothing else, so no personal data
travels in a URL (browser history, proxy logs). Behind ``crmkit hub`` an admin sets the base to the hub's
``https://HUB/hub/user-redirect/voila/render/dashboards/addresses.ipynb``, which JupyterHub sends on to the
visitor's own server, where they are signed in as themselves.

:func:`resolve` is what the dashboard does with a visit's query string: the record for a CRM user who may
read records, a typed refusal otherwise. Every active CRM user reads addresses (crmkit has no read right:
the »Nur lesen« viewer role reads with none, and on PostgreSQL every CRM login may SELECT addresses), so
"may read" means: the visit has a session, and its user is still an active CRM user when the link is
opened. A visit without one (an unknown or switched-off user, a team-mode sign-in that is no CRM user's)
gets the refusal and nothing of the record, not even whether the id exists.

    record_url(base, 17)           'http://127.0.0.1:8866/voila/render/addresses.ipynb?record=17'
    link_for(crm, 17)              the same from the setting, or None when the setting is empty
    resolve(crm, "record=17")      RecordLink(address_id=17, record={...})
    resolve(None, "record=17")     PermissionDenied (error.msg.record_link_refused)
    resolve(crm, "record=x")       ValidationError (error.msg.record_link_malformed)
    resolve(crm, "record=999999")  NotFound (error.msg.record_link_unknown)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .addresses import address
from .errors import NotFound, PermissionDenied, UnknownUser, ValidationError, catalog_error
from .session import load_user

if TYPE_CHECKING:
    from .session import Session

__all__ = ["QUERY_PARAM", "SETTING", "RecordLink", "check_base", "link_for", "record_url", "requested_id",
           "resolve", "set_base"]

SETTING = "crm.addresses_url"
QUERY_PARAM = "record"
_ID = re.compile(r"[1-9][0-9]{0,17}")  # a positive address id as digits, below 2**63


def check_base(value: Any) -> str:
    """``value`` as a link base: an ``http``/``https`` URL with a host and no query or fragment, or ``""``
    (no link in messages). Surrounding blanks are dropped.

    Raises:
        ValidationError: anything else (the text says what a base looks like).
    """
    if not isinstance(value, str):
        raise catalog_error(ValidationError, "error.msg.record_link_base")
    text = value.strip()
    if not text:
        return ""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError on a port that is no number
    except ValueError as exc:
        raise catalog_error(ValidationError, "error.msg.record_link_base") from exc
    if (parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query or parts.fragment
            or "?" in text or "#" in text
            or any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text)):  # controls, bidi
        raise catalog_error(ValidationError, "error.msg.record_link_base")
    return text


def set_base(session: Session, value: Any) -> str:
    """Store ``value`` as the link base (needs the setting's right, ``teams.admin``; audited); returns it as stored.

    Raises:
        PermissionDenied: the user lacks the setting's right (checked first: nothing is written).
        ValidationError: not a base :func:`check_base` takes.
    """
    from .settings import SETTINGS

    session.require(SETTINGS[SETTING].right)
    checked = check_base(value)
    session.store.write(lambda tx: session.write_setting(tx, SETTING, checked))
    return checked


def record_url(base: str, address_id: int) -> str:
    """The deep link to ``address_id`` under ``base`` (checked by :func:`check_base`): its id only."""
    if isinstance(address_id, bool) or not hasattr(address_id, "__index__") or int(address_id) < 1:
        raise ValidationError(f"An address id is a positive integer, not {address_id!r}.")
    checked = check_base(base)
    if not checked:
        raise catalog_error(ValidationError, "error.msg.record_link_base")
    return f"{checked}?{QUERY_PARAM}={int(address_id)}"


def link_for(session: Session, address_id: int) -> str | None:
    """The deep link to ``address_id`` from the setting, or None when the setting is empty (no link)."""
    base = check_base(session.setting(SETTING))
    return record_url(base, address_id) if base else None


def requested_id(query: str | None) -> int | None:
    """The address id a page's query string (Voila's ``QUERY_STRING``) asks for, or None when it asks for none.

    Raises:
        ValidationError: ``record`` is given but is not one positive id (text, several, too long, blank).
    """
    values = parse_qs((query or "").lstrip("?"), keep_blank_values=True).get(QUERY_PARAM)
    if values is None:
        return None
    if len(values) != 1 or not _ID.fullmatch(values[0]):
        raise catalog_error(ValidationError, "error.msg.record_link_malformed")
    return int(values[0])


@dataclass(frozen=True)
class RecordLink:
    """A deep link resolved: the address id and the record (``crm.address``'s dict)."""

    address_id: int
    record: dict[str, Any]


def resolve(session: Session | None, query: str | None) -> RecordLink | None:
    """What a visit with ``query`` opens: None when it names no record, else the record.

    ``session`` is the visit's CRM session, or None when none could be opened for it. The checks run in
    this order, so a refused visitor learns nothing of the record (not even that the id exists).

    Raises:
        ValidationError: the ``record`` parameter is malformed.
        PermissionDenied: no session, or its user is no longer an active CRM user.
        NotFound: no address with that id.
    """
    address_id = requested_id(query)
    if address_id is None:
        return None
    if session is None:
        raise catalog_error(PermissionDenied, "error.msg.record_link_refused")
    try:  # read again: a user switched off since the session opened reads nothing more
        session.store.read(lambda tx: load_user(tx, session.user.name))
    except UnknownUser as exc:
        raise catalog_error(PermissionDenied, "error.msg.record_link_refused") from exc
    try:
        record = address(session.store, address_id)
    except NotFound as exc:
        raise catalog_error(NotFound, "error.msg.record_link_unknown", id=address_id) from exc
    return RecordLink(address_id, record)
