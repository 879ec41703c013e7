"""The transfer policy: which fields are personal, the action per channel, block flags, the decision.

Changes when the rules change (a new channel, action or flag, another way to decide). Before a
transfer, :func:`check_transfer` applies the channel's action (``allow`` silently / ``log`` /
``log_purpose``: log and require a purpose / ``block``) and the addresses' block flags, and
returns a :class:`TransferDecision` per address. Changing the policy, the personal fields or a
flag needs ``privacy.admin`` and is audited.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..addresses import ADDRESS_FIELDS, check_id
from ..errors import NotFound, TransferBlocked, ValidationError, catalog_error
from ..i18n import t
from ..text_rules import check_text
from ._common import now as _now

if TYPE_CHECKING:
    from ..session import Session
    from ..store import Tx

__all__ = [
    "ACTIONS",
    "CHANNELS",
    "DEFAULT_PERSONAL_FIELDS",
    "DEFAULT_POLICY",
    "FLAGS",
    "MAX_PURPOSE",
    "AddressDecision",
    "TransferDecision",
    "address_flags",
    "check_channel",
    "check_transfer",
    "clear_flag",
    "personal_fields",
    "policies",
    "policy",
    "set_flag",
    "set_personal_fields",
    "set_policy",
]

CHANNELS: tuple[str, ...] = ("teams_manual", "teams_campaign", "file_export")
ACTIONS: tuple[str, ...] = ("allow", "log", "log_purpose", "block")
DEFAULT_POLICY: dict[str, str] = {channel: "log" for channel in CHANNELS}
DEFAULT_PERSONAL_FIELDS: tuple[str, ...] = (
    "salutation", "title", "first_name", "last_name", "street", "postal_code", "city", "phone", "email",
)
# flag: (channels it blocks, German label, English label)
FLAGS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "no_transfer": (CHANNELS, "Keine Weitergabe", "No transfer"),
    "no_teams": (("teams_manual", "teams_campaign"), "Nicht per Teams", "Not via Teams"),
    "no_campaign": (("teams_campaign",), "Keine Kampagnen-Nachrichten", "No campaign messages"),
    "no_export": (("file_export",), "Kein Export", "No export"),
}
MAX_PURPOSE = 500


def check_channel(channel: str) -> None:
    """Refuse a channel name that is not one of :data:`CHANNELS` (ValidationError)."""
    if channel not in CHANNELS:
        raise ValidationError(f"Unknown transfer channel {channel!r}; known: {', '.join(CHANNELS)}.")


# -- configuration: personal fields and the action per channel ---------------------------------------

def _get(tx: Tx, key: str, default: Any) -> Any:
    raw = tx.one("SELECT value FROM privacy_settings WHERE key = ?", [key])
    return default if raw is None else json.loads(raw)


def _put(crm: Session, tx: Tx, key: str, value: Any, default: Any) -> None:
    old = _get(tx, key, default)
    if old == value:
        return
    tx.execute(
        "INSERT INTO privacy_settings VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
        "value = excluded.value, changed_at = excluded.changed_at, changed_by = excluded.changed_by",
        [key, json.dumps(value), _now(), crm.user.name],
    )
    crm.audit(tx, "privacy", key, old, value)


def personal_fields(crm: Session) -> tuple[str, ...]:
    """The address columns that hold personal data (default :data:`DEFAULT_PERSONAL_FIELDS`)."""
    return tuple(crm.store.read(lambda tx: _get(tx, "personal_fields", list(DEFAULT_PERSONAL_FIELDS))))


def set_personal_fields(crm: Session, fields: Iterable[str]) -> None:
    """Say which address columns are personal (needs ``privacy.admin``); audited.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
        ValidationError: a name is not an address column.
    """
    crm.require("privacy.admin")
    chosen = list(dict.fromkeys(fields))
    unknown = [f for f in chosen if f not in ADDRESS_FIELDS]
    if unknown:
        raise ValidationError(f"Unknown address fields {unknown}; known: {', '.join(ADDRESS_FIELDS)}.")
    ordered = [f for f in ADDRESS_FIELDS if f in chosen]
    crm.store.write(lambda tx: _put(crm, tx, "personal_fields", ordered, list(DEFAULT_PERSONAL_FIELDS)))


def policy(crm: Session, channel: str) -> str:
    """The action for ``channel``: ``allow``, ``log``, ``log_purpose`` or ``block``.

    Raises:
        ValidationError: unknown channel.
    """
    check_channel(channel)
    return str(crm.store.read(lambda tx: _get(tx, f"policy.{channel}", DEFAULT_POLICY[channel])))


def policies(crm: Session) -> dict[str, str]:
    """The action of every channel."""
    return crm.store.read(lambda tx: {c: str(_get(tx, f"policy.{c}", DEFAULT_POLICY[c])) for c in CHANNELS})


def set_policy(crm: Session, channel: str, action: str) -> None:
    """Set the action for one channel (needs ``privacy.admin``); audited.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
        ValidationError: unknown channel or action.
    """
    crm.require("privacy.admin")
    check_channel(channel)
    if action not in ACTIONS:
        raise ValidationError(f"A transfer policy is one of {', '.join(ACTIONS)}, not {action!r}.")
    crm.store.write(lambda tx: _put(crm, tx, f"policy.{channel}", action, DEFAULT_POLICY[channel]))


# -- block flags ----------------------------------------------------------------------------------------

def _check_flag(flag: str) -> None:
    if flag not in FLAGS:
        raise ValidationError(f"Unknown block flag {flag!r}; known: {', '.join(FLAGS)}.")


def set_flag(crm: Session, address_id: int, flag: str = "no_transfer") -> bool:
    """Put a block flag on an address (needs ``privacy.admin``); audited. True if it was not set.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
        ValidationError: unknown flag.
        NotFound: no such address.
    """
    crm.require("privacy.admin")
    _check_flag(flag)
    address_id = check_id(address_id)

    def run(tx: Tx) -> bool:
        if not tx.one("SELECT count(*) FROM addresses WHERE id = ?", [address_id]):
            raise catalog_error(NotFound, "error.msg.no_address", id=address_id)
        if tx.one("SELECT count(*) FROM address_flags WHERE address_id = ? AND flag = ?", [address_id, flag]):
            return False
        tx.execute("INSERT INTO address_flags VALUES (?, ?, ?, ?)", [address_id, flag, crm.user.name, _now()])
        crm.audit(tx, "address_flags", f"{address_id}.{flag}", False, True)
        return True

    return crm.store.write(run)


def clear_flag(crm: Session, address_id: int, flag: str = "no_transfer") -> bool:
    """Remove a block flag (needs ``privacy.admin``); audited. True if it was set.

    Raises:
        PermissionDenied: the user lacks ``privacy.admin``.
        ValidationError: unknown flag.
    """
    crm.require("privacy.admin")
    _check_flag(flag)
    address_id = check_id(address_id)

    def run(tx: Tx) -> bool:
        if not tx.one("SELECT count(*) FROM address_flags WHERE address_id = ? AND flag = ?", [address_id, flag]):
            return False
        tx.execute("DELETE FROM address_flags WHERE address_id = ? AND flag = ?", [address_id, flag])
        crm.audit(tx, "address_flags", f"{address_id}.{flag}", True, False)
        return True

    return crm.store.write(run)


def address_flags(crm: Session, address_id: int | None = None) -> pd.DataFrame:
    """Block flags (address_id, flag, set_by, set_at), of one address or all. Needs no right."""
    if address_id is None:
        return crm.store.df("SELECT * FROM address_flags ORDER BY address_id, flag")
    return crm.store.df("SELECT * FROM address_flags WHERE address_id = ? ORDER BY flag", [check_id(address_id)])


# -- the decision before a transfer ----------------------------------------------------------------------

@dataclass(frozen=True)
class AddressDecision:
    """Whether one address may go out; ``reason`` says why not (``flag:no_transfer``, ``not_found``)."""

    address_id: int
    allowed: bool
    reason: str | None = None


@dataclass(frozen=True)
class TransferDecision:
    """The policy's answer for one transfer.

    Attributes:
        channel, action: the channel and its policy action.
        personal: whether the transferred fields include personal data.
        log: whether the sender must write transfer-log rows (personal data and action log/log_purpose).
        purpose: the stripped purpose (None when none was given).
        addresses: one :class:`AddressDecision` per requested address, in request order.
    """

    channel: str
    action: str
    personal: bool
    log: bool
    purpose: str | None
    addresses: tuple[AddressDecision, ...]

    @property
    def allowed_ids(self) -> list[int]:
        return [d.address_id for d in self.addresses if d.allowed]

    @property
    def blocked(self) -> dict[int, str]:
        """Blocked address ids and why (the sender logs them with outcome ``blocked``, detail = reason)."""
        return {d.address_id: str(d.reason) for d in self.addresses if not d.allowed}

    def allowed(self, address_id: int) -> bool:
        return any(d.address_id == address_id and d.allowed for d in self.addresses)


def _personal_columns(names: Iterable[str], personal: set[str]) -> bool:
    from ..teams.display_format import DISPLAY_FIELDS

    for name in names:
        spec = DISPLAY_FIELDS.get(name)
        columns = spec.columns if spec else (name,)
        # A name we cannot map counts as personal: better an extra log row than a missing one.
        if spec is None or personal.intersection(columns):
            return True
    return False


def check_transfer(
    crm: Session, channel: str, address_ids: Iterable[int], purpose: str | None = None, *,
    fields: Sequence[str] | None = None,
) -> TransferDecision:
    """Decide a transfer before it happens. Needs no right (the sender checks its own).

    Args:
        channel: ``teams_manual``, ``teams_campaign`` or ``file_export``.
        address_ids: the addresses to transfer (any iterable; duplicates are decided once).
        purpose: why; required when the channel's action is ``log_purpose``.
        fields: the display-field keys or address columns that would be sent; None means "assume
            personal data". Without personal fields the policy does not apply (block flags still do).

    Raises:
        ValidationError: unknown channel, bad id, or a purpose is required but missing.
        TransferBlocked: the channel's policy is ``block`` (``exc.channel`` names it).
    """
    check_channel(channel)
    ids = list(dict.fromkeys(check_id(a) for a in address_ids))
    if purpose is not None and not isinstance(purpose, str):
        raise ValidationError("A purpose is text.")
    purpose = check_text((purpose or "").strip(), "purpose", label_key="compose.purpose") or None
    if purpose is not None and len(purpose) > MAX_PURPOSE:
        raise catalog_error(ValidationError, "error.msg.purpose_too_long", limit=MAX_PURPOSE)
    blocking = [flag for flag, (channels, _, _) in FLAGS.items() if channel in channels]

    def run(tx: Tx) -> tuple[str, list[str], dict[int, str], set[int]]:
        action = str(_get(tx, f"policy.{channel}", DEFAULT_POLICY[channel]))
        personal = list(_get(tx, "personal_fields", list(DEFAULT_PERSONAL_FIELDS)))
        found: set[int] = set()
        flagged: dict[int, str] = {}
        if ids:
            found = {r[0] for r in tx.rows(
                "SELECT id FROM addresses WHERE id IN (SELECT unnest(?::BIGINT[]))", [ids])}
            for address_id, flag in tx.rows(
                "SELECT address_id, min(flag) FROM address_flags WHERE address_id IN (SELECT unnest(?::BIGINT[])) "
                "AND flag IN (SELECT unnest(?::VARCHAR[])) GROUP BY address_id", [ids, blocking],
            ):
                flagged[int(address_id)] = str(flag)
        return action, personal, flagged, found

    action, personal_cols, flagged, found = crm.store.read(run)
    personal = True if fields is None else _personal_columns(fields, set(personal_cols))
    if personal and action == "block":
        labels = {f"label_{lang}": t(f"privacy.channel.{channel}", lang) for lang in ("de", "en")}
        exc = catalog_error(TransferBlocked, "error.msg.transfer_blocked", channel=repr(channel), **labels)
        exc.channel = channel  # type: ignore[attr-defined]
        raise exc
    if personal and action == "log_purpose" and purpose is None:
        labels = {f"label_{lang}": t(f"privacy.channel.{channel}", lang) for lang in ("de", "en")}
        raise catalog_error(ValidationError, "error.msg.purpose_needed", channel=repr(channel), **labels)
    decisions = tuple(
        AddressDecision(a, False, "not_found") if a not in found
        else AddressDecision(a, False, f"flag:{flagged[a]}") if a in flagged
        else AddressDecision(a, True)
        for a in ids
    )
    return TransferDecision(
        channel=channel, action=action, personal=personal,
        log=personal and action in ("log", "log_purpose"), purpose=purpose, addresses=decisions,
    )
