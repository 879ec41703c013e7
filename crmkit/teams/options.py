"""The send options, in one place: their names, allowed values, defaults, labels and checks.

Everything that offers, stores or applies a send option derives from here: :class:`SendOptions`
(``crm.teams.send(..., **options)``), the compose dialog's model and choices, the campaign action's
fields and columns (:mod:`crmkit.campaigns`), and the Graph payload (:func:`crmkit.teams.compose.build_message`).

A choice's label in a view is the catalog key ``<label prefix>.<value>``, its caption the prefix
itself (``compose.importance`` / ``compose.importance.high``). The compose dialog and the campaign
action dialog word some options differently, so each names its prefix per view.

Imports nothing of crmkit's features: the store, migrations and widgets can all depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import ValidationError, catalog_error

__all__ = [
    "CAMPAIGN_OPTIONS",
    "CHAT_KINDS",
    "CHOICES",
    "COMPOSE_CHOICES",
    "DEFAULTS",
    "FILE_THRESHOLD",
    "FILE_THRESHOLD_MAX",
    "FORMATS",
    "IMPORTANCE",
    "MODES",
    "PAYLOAD_OPTIONS",
    "Choice",
    "SendOptions",
    "as_one_file",
    "campaign_columns",
    "check_choice",
    "check_file_options",
    "label_key",
]


@dataclass(frozen=True)
class Choice:
    """An option with a fixed set of values.

    Attributes:
        name: the keyword (``importance``).
        values: the allowed values, in the order views offer them.
        default: the value when none is given.
        labels: view (``compose``, ``campaigns``) → catalog key prefix of the caption and value labels.
    """

    name: str
    values: tuple[str, ...]
    default: str
    labels: dict[str, str]


CHOICES: dict[str, Choice] = {c.name: c for c in (
    Choice("chat", ("one_on_one", "group"), "one_on_one",
           {"compose": "compose.chat", "campaigns": "campaigns.chat"}),
    Choice("mode", ("per_record", "digest"), "per_record", {"compose": "compose.mode"}),
    Choice("record_format", ("card", "table"), "card",
           {"compose": "compose.format", "campaigns": "campaigns.record_format"}),
    Choice("importance", ("normal", "high", "urgent"), "normal",
           {"compose": "compose.importance", "campaigns": "campaigns.importance"}),
)}

CHAT_KINDS = CHOICES["chat"].values
MODES = CHOICES["mode"].values
FORMATS = CHOICES["record_format"].values
IMPORTANCE = CHOICES["importance"].values

# The choices the compose dialog offers as dropdowns, in its order.
COMPOSE_CHOICES: tuple[str, ...] = tuple(n for n, c in CHOICES.items() if "compose" in c.labels)
# The send options Graph's chatMessage body carries as they are (``{"importance": "high"}``): the payload
# builder takes them as keyword arguments, planning hands them over from SendOptions.payload().
PAYLOAD_OPTIONS: tuple[str, ...] = ("importance",)
# The send options a campaign action stores (one column each in campaign_actions) and hands to SendOptions.
CAMPAIGN_OPTIONS: tuple[str, ...] = (
    "record_contact", "include_record", "record_format", "chat", "importance", "purpose", "language",
)


def campaign_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """The send options a campaign action stored (its columns carry the options' names), flags as bools."""
    return {name: bool(row[name]) if isinstance(DEFAULTS[name], bool) else row[name] for name in CAMPAIGN_OPTIONS}


# "As one file" (issue 17 part 4): a set of more than ``file_threshold`` records goes as one shared workbook.
FILE_THRESHOLD = 50  # records; the compose dialog offers the file from here on
FILE_THRESHOLD_MAX = 1_000_000


def check_file_options(as_file: object, file_threshold: object) -> None:
    """Raise :class:`ValidationError` (German and English) unless ``as_file`` is a bool and ``file_threshold``
    a whole number from 1 to :data:`FILE_THRESHOLD_MAX`."""
    if not isinstance(as_file, bool):
        raise catalog_error(ValidationError, "error.msg.option_flag", name="as_file", value=repr(as_file))
    if (isinstance(file_threshold, bool) or not isinstance(file_threshold, int)
            or not 1 <= file_threshold <= FILE_THRESHOLD_MAX):
        raise catalog_error(ValidationError, "error.msg.file_threshold", value=repr(file_threshold),
                            high=f"{FILE_THRESHOLD_MAX:,}")


def as_one_file(as_file: bool, file_threshold: int, count: int) -> bool:
    """Whether a send of ``count`` records goes as one file: asked for, and more records than the threshold."""
    return as_file and count > file_threshold


def label_key(name: str, view: str, value: str | None = None) -> str:
    """The catalog key of option ``name``'s caption in ``view``, or of its ``value``'s label."""
    prefix = CHOICES[name].labels[view]
    return prefix if value is None else f"{prefix}.{value}"


def check_choice(name: str, value: object, allowed: tuple[Any, ...] | None = None) -> None:
    """Raise :class:`ValidationError` (German and English) unless ``value`` is one of the option's values.

    ``allowed`` overrides the values (an option whose values are not a :class:`Choice`, e.g. ``language``).
    """
    allowed = CHOICES[name].values if allowed is None else allowed
    if value not in allowed:
        raise catalog_error(ValidationError, "error.msg.option_value", name=name, allowed=repr(allowed),
                            value=repr(value))


@dataclass(frozen=True)
class SendOptions:
    """How records go out.

    Attributes:
        chat: ``one_on_one`` (a 1:1 chat per recipient) or ``group`` (one group chat for all).
        mode: ``per_record`` (one message per record) or ``digest`` (one table per recipient, split
            under Teams' size limit).
        record_format: ``card`` (Adaptive Card) or ``table`` (HTML table) for per-record messages.
        include_record: show the record's fields (the Teams display format) at all.
        importance: ``normal``, ``high`` or ``urgent``.
        record_contact: file the message as a contact (type TS) on each address.
        purpose: why personal data leaves the CRM (required when the policy says so).
        language: labels of the rendered record (default: the session's language).
        as_file: a set of more than ``file_threshold`` records goes as one Excel workbook shared with the
            recipients and one message per chat with the file attached (``chat`` applies; ``mode`` and
            ``record_format`` do not). At or below the threshold the send is as ``mode`` says.
        file_threshold: records from which on ``as_file`` applies (more than this many; 1 to 1,000,000).
    """

    chat: str = CHOICES["chat"].default
    mode: str = CHOICES["mode"].default
    record_format: str = CHOICES["record_format"].default
    include_record: bool = True
    importance: str = CHOICES["importance"].default
    record_contact: bool = False
    purpose: str | None = None
    language: str | None = None
    as_file: bool = False
    file_threshold: int = FILE_THRESHOLD

    @classmethod
    def of(cls, **options: Any) -> SendOptions:
        """Options from keyword arguments; an unknown name is a :class:`ValidationError`, not a TypeError."""
        unknown = sorted(set(options) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValidationError(f"Unknown send options {unknown}; known: {', '.join(cls.__dataclass_fields__)}.")
        return cls(**options)

    def __post_init__(self) -> None:
        for name in CHOICES:
            check_choice(name, getattr(self, name))
        check_file_options(self.as_file, self.file_threshold)

    def one_file(self, count: int) -> bool:
        """Whether a send of ``count`` records goes as one file (:func:`as_one_file`)."""
        return as_one_file(self.as_file, self.file_threshold, count)

    def payload(self) -> dict[str, Any]:
        """The options the message body carries as they are (:data:`PAYLOAD_OPTIONS`)."""
        return {name: getattr(self, name) for name in PAYLOAD_OPTIONS}


# Every option's default, by name (what a form starts with).
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(SendOptions)}
