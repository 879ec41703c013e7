"""The display format for the area "Microsoft Teams" (Anzeigeformat, Anzeigebereich »Microsoft Teams«).

It decides which fields of an address a Teams message shows, in what order, under which label and
in which format. Because it decides which personal data leave the CRM, the transfer log records
exactly :meth:`DisplayFormat.rendered_field_names` of every record sent.

A format renders a record two ways, both from the same :meth:`DisplayFormat.rows`:

* :meth:`DisplayFormat.card` - an Adaptive Card 1.4 (a title TextBlock and a FactSet), built as a
  dict. Values are plain text; Adaptive Card markdown in them is neutralised by backslash escapes.
  :func:`card_json` serialises it HTML-safe (``<``, ``>``, ``&`` as ``\\u003c`` …).
* :meth:`DisplayFormat.html_table` - an HTML table; every label and value is HTML-escaped.

Typical use::

    fmt = load_format(crm)                       # the stored format, or the default
    fmt.card(record, "de"); fmt.html_table(record, "de"); fmt.rendered_field_names(record)
    preview(crm, address_id, "en")               # all of the above for one stored address

Errors (all :class:`~crmkit.errors.ValidationError`)::

    DisplayFormatError        any invalid format
    ├── UnknownDisplayField   a field name the catalog does not know
    ├── DuplicateDisplayField a field listed twice
    └── BadFormatPattern      a date/number/phone pattern that cannot format
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..errors import ValidationError
from ..i18n import t
from ..text_rules import check_text, inert

if TYPE_CHECKING:
    from ..crm import CRM
    from ..session import Session
    from ..store import Tx

__all__ = [
    "AREA",
    "CARD_SCHEMA",
    "CARD_VERSION",
    "DISPLAY_FIELDS",
    "EMPTY_CHOICES",
    "KINDS",
    "BadFormatPattern",
    "DisplayField",
    "DisplayFormat",
    "DisplayFormatError",
    "DuplicateDisplayField",
    "FieldFormat",
    "FormattedField",
    "RecordPreview",
    "UnknownDisplayField",
    "card_json",
    "card_to_html",
    "default_format",
    "escape_card_text",
    "load_format",
    "preview",
    "record_link_html",
    "reset_format",
    "save_format",
]

AREA = "teams"  # the display area "Microsoft Teams"; the key of its row in ``display_formats``
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"  # Teams chats render Adaptive Cards up to 1.5; 1.4 is safe on every client
DASH = "—"
MAX_FIELDS = 40
MAX_LABEL = 80
MAX_EMPTY_TEXT = 80

Kind = Literal["text", "date", "number", "phone"]
Empty = Literal["skip", "dash", "text"]
KINDS: tuple[str, ...] = ("text", "date", "number", "phone")
EMPTY_CHOICES: tuple[str, ...] = ("skip", "dash", "text")


class DisplayFormatError(ValidationError):
    """The display format is invalid; ``field`` names the offending field when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownDisplayField(DisplayFormatError):
    """A field name the display-field catalog does not know."""


class DuplicateDisplayField(DisplayFormatError):
    """The same field appears twice in one format."""


class BadFormatPattern(DisplayFormatError):
    """A date, number or phone pattern that cannot format a value."""


def _field_error(cls: type[DisplayFormatError], key: str, field: str, **params: object) -> DisplayFormatError:
    """A ``cls`` error about ``field`` from the catalog (``error.msg.display_<key>``), naming the field by
    its label in each language: English in ``str()``, the user's language in ``text()``."""
    spec = DISPLAY_FIELDS.get(field)
    names = {"field_de": spec.label("de") if spec else field, "field_en": spec.label("en") if spec else field}
    full = f"error.msg.display_{key}"
    return cls(t(full, "en", **names, **params), field=field).localized(full, **names, **params)


# -- the catalog of fields a format may show -------------------------------------------------------

@dataclass(frozen=True)
class DisplayField:
    """A field a display format can show: one address column, or a composite of several.

    Its label is the catalog's ``address.<key>`` (the same text the record table shows)."""

    key: str
    columns: tuple[str, ...]
    kinds: tuple[str, ...] = ("text",)
    separator: str = " "

    def label(self, lang: str) -> str:
        return t(f"address.{self.key}", lang)


def _column(key: str, kinds: tuple[str, ...] = ("text",)) -> DisplayField:
    return DisplayField(key, (key,), kinds)


DISPLAY_FIELDS: dict[str, DisplayField] = {f.key: f for f in [
    _column("id", ("text", "number")),
    _column("kind"),
    _column("company"),
    DisplayField("name", ("salutation", "title", "first_name", "last_name")),
    _column("salutation"),
    _column("title"),
    _column("first_name"),
    _column("last_name"),
    _column("department"),
    _column("street"),
    DisplayField("postal_city", ("postal_code", "city")),
    _column("postal_code"),
    _column("city"),
    _column("country"),
    _column("phone", ("text", "phone")),
    _column("email"),
    _column("owner"),
    _column("created_at", ("date", "text")),
    _column("modified_at", ("date", "text")),
]}


# -- one field's format ------------------------------------------------------------------------------

_DATE_DIRECTIVES = set("aAbBdHIjmMpSyYZz%")
_NUMBER_SPEC = re.compile(r"^[,_]?(\.\d{1,6}[f%]|[f%d])$|^[,_]$")
_PHONE_SPEC = re.compile(r"^(raw|e164(:\d{1,3})?)$")
DEFAULT_DATE = {"de": "%d.%m.%Y", "en": "%Y-%m-%d"}


@dataclass(frozen=True)
class FieldFormat:
    """How one field appears: its label per language, its format, and what an empty value does.

    Attributes:
        field: a key of :data:`DISPLAY_FIELDS`.
        label_de, label_en: the label shown before the value.
        kind: ``text``, ``date``, ``number`` or ``phone`` (must be one the field allows).
        pattern: ``date``: a strftime pattern (``%d.%m.%Y``), empty = the language's default;
            ``number``: a format spec (``,.2f``, ``,d``, ``.1%``), German output swaps ``,``/``.``;
            ``phone``: ``raw`` (as entered) or ``e164`` / ``e164:43`` (international, national
            numbers get +49 / the given country code).
        empty: ``skip`` (leave the field out), ``dash`` (show "—") or ``text`` (show ``empty_text``).
        empty_text: the text shown for an empty value when ``empty == "text"``.
    """

    field: str
    label_de: str
    label_en: str
    kind: str = "text"
    pattern: str | None = None
    empty: str = "skip"
    empty_text: str | None = None

    @classmethod
    def for_field(cls, key: str, **changes: Any) -> FieldFormat:
        """The catalog's labels and first kind for ``key``, with ``changes`` applied.

        Raises:
            UnknownDisplayField: ``key`` is not in :data:`DISPLAY_FIELDS`.
        """
        spec = _catalog_field(key)
        base = cls(field=key, label_de=spec.label("de"), label_en=spec.label("en"), kind=spec.kinds[0])
        return replace(base, **changes)

    def label(self, lang: str) -> str:
        return self.label_de if lang == "de" else self.label_en

    def validate(self) -> None:
        """Raise a :class:`DisplayFormatError` subclass when this field's format is unusable."""
        spec = _catalog_field(self.field)
        for name in ("label_de", "label_en"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL:
                # the editor's own column names, and for API callers the attribute's name too
                which = {"which_de": t(f"display_format.{name}", "de"),
                         "which_en": f"{t(f'display_format.{name}', 'en')}, {name},"}
                raise _field_error(DisplayFormatError, "label", self.field, max=MAX_LABEL, **which)
            check_text(value, name)
        if self.kind not in KINDS:
            raise DisplayFormatError(f"Field {self.field!r}: kind must be one of {KINDS}.", field=self.field)
        if self.kind not in spec.kinds:
            raise DisplayFormatError(
                f"Field {self.field!r} can be shown as {', '.join(spec.kinds)}, not as {self.kind}.",
                field=self.field,
            )
        if self.empty not in EMPTY_CHOICES:
            raise DisplayFormatError(
                f"Field {self.field!r}: empty must be one of {EMPTY_CHOICES}.", field=self.field
            )
        if self.empty == "text" and (
            not isinstance(self.empty_text, str) or not self.empty_text.strip()
            or len(self.empty_text) > MAX_EMPTY_TEXT
        ):
            raise _field_error(DisplayFormatError, "empty_text", self.field, max=MAX_EMPTY_TEXT)
        check_text(self.empty_text, "empty_text")
        self._check_pattern()

    def _check_pattern(self) -> None:
        pattern = self.pattern
        if pattern is None or pattern == "":
            return
        if not isinstance(pattern, str) or len(pattern) > 40:
            raise _field_error(BadFormatPattern, "pattern_long", self.field)
        if self.kind == "text":
            raise _field_error(BadFormatPattern, "pattern_text", self.field)
        if self.kind == "date":
            bare = pattern.replace("%%", "")
            directives = re.findall(r"%(.)", bare)
            if bare.endswith("%") or not directives or not set(directives) <= _DATE_DIRECTIVES:
                raise _field_error(BadFormatPattern, "pattern_date", self.field, pattern=repr(pattern))
        elif self.kind == "number":
            if not _NUMBER_SPEC.match(pattern):
                raise _field_error(BadFormatPattern, "pattern_number", self.field, pattern=repr(pattern))
            try:
                format(1234.5 if "d" not in pattern else 1234, pattern)
            except (ValueError, TypeError) as exc:
                raise BadFormatPattern(f"Field {self.field!r}: {pattern!r}: {exc}.", field=self.field) from exc
        elif self.kind == "phone" and not _PHONE_SPEC.match(pattern):
            raise _field_error(BadFormatPattern, "pattern_phone", self.field)

    # -- formatting ------------------------------------------------------------------------------

    def text(self, record: Mapping[str, Any], lang: str) -> str | None:
        """The formatted value, or None when the record's value is empty (before empty handling)."""
        spec = DISPLAY_FIELDS[self.field]
        if len(spec.columns) > 1:
            parts = [_plain(record.get(c)) for c in spec.columns]
            joined = spec.separator.join(p for p in parts if p)
            return joined or None
        raw = record.get(spec.columns[0])
        if _is_empty(raw):
            return None
        if self.kind == "date":
            return _format_date(raw, self.pattern or DEFAULT_DATE.get(lang, DEFAULT_DATE["en"]))
        if self.kind == "number":
            return _format_number(raw, self.pattern, lang)
        if self.kind == "phone":
            return _format_phone(_plain(raw), self.pattern)
        return _plain(raw)


class FormattedField(NamedTuple):
    """One line of a rendered record: the field key, its label and the text shown."""

    field: str
    label: str
    text: str


# -- a whole format ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DisplayFormat:
    """An ordered list of :class:`FieldFormat`. Immutable; edit with :meth:`with_fields` etc."""

    fields: tuple[FieldFormat, ...] = field(default_factory=tuple)

    # editing helpers (each returns a new format; call validate() or save_format() to check it)
    def with_fields(self, fields: Sequence[FieldFormat]) -> DisplayFormat:
        return DisplayFormat(tuple(fields))

    def add(self, key: str, **changes: Any) -> DisplayFormat:
        return self.with_fields([*self.fields, FieldFormat.for_field(key, **changes)])

    def remove(self, key: str) -> DisplayFormat:
        return self.with_fields([f for f in self.fields if f.field != key])

    def move(self, key: str, offset: int) -> DisplayFormat:
        """Move a field up (negative) or down (positive), clamped to the ends."""
        items = list(self.fields)
        index = self.index(key)
        item = items.pop(index)
        items.insert(max(0, min(len(items), index + offset)), item)
        return self.with_fields(items)

    def update(self, key: str, **changes: Any) -> DisplayFormat:
        index = self.index(key)
        items = list(self.fields)
        items[index] = replace(items[index], **changes)
        return self.with_fields(items)

    def index(self, key: str) -> int:
        for i, f in enumerate(self.fields):
            if f.field == key:
                return i
        raise UnknownDisplayField(f"The format does not show the field {key!r}.", field=key)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.field for f in self.fields)

    def validate(self) -> DisplayFormat:
        """Check the whole format; return it unchanged.

        Raises:
            UnknownDisplayField, DuplicateDisplayField, BadFormatPattern, DisplayFormatError.
        """
        if not self.fields:
            raise DisplayFormatError(t("error.msg.display_no_fields", "en")).localized("error.msg.display_no_fields")
        if len(self.fields) > MAX_FIELDS:
            raise DisplayFormatError(f"A display format shows at most {MAX_FIELDS} fields.")
        seen: set[str] = set()
        for f in self.fields:
            if not isinstance(f, FieldFormat):
                raise DisplayFormatError(f"Not a field format: {f!r}.")
            if f.field in seen:
                raise _field_error(DuplicateDisplayField, "twice", f.field)
            seen.add(f.field)
            f.validate()
        return self

    # -- rendering -------------------------------------------------------------------------------

    def rows(self, record: Mapping[str, Any], lang: str = "de") -> list[FormattedField]:
        """The fields as they appear, after empty-field handling, in order."""
        out = []
        for f in self.fields:
            text = f.text(record, lang)
            if text is not None:
                # Stored values may predate the input rule: controls and bidi overrides are dropped, so
                # a value cannot ring, cut off or reorder the text around it in a card or a table.
                text = inert(text).strip() or None
            if text is None:
                if f.empty == "skip":
                    continue
                text = DASH if f.empty == "dash" else str(f.empty_text)
            out.append(FormattedField(f.field, f.label(lang), text))
        return out

    def rendered_field_names(self, record: Mapping[str, Any]) -> list[str]:
        """Exactly the field keys that appear for ``record`` (what the transfer log records).

        Composite fields appear under their own key (``name``, ``postal_city``); see
        :func:`source_columns` for the address columns behind them.
        """
        return [row.field for row in self.rows(record)]

    def rendered_columns(self, record: Mapping[str, Any]) -> list[str]:
        """The address columns whose values appear for ``record`` (composites expanded, empties dropped)."""
        out: list[str] = []
        for key in self.rendered_field_names(record):
            for column in DISPLAY_FIELDS[key].columns:
                if not _is_empty(record.get(column)) and column not in out:
                    out.append(column)
        return out

    def card(self, record: Mapping[str, Any], lang: str = "de", *, title: str | None = None,
             link: str | None = None) -> dict[str, Any]:
        """The record as an Adaptive Card dict (a title TextBlock and one FactSet).

        ``title`` defaults to the record's company or name. Every text is markdown-neutralised.
        ``link`` (the record's deep link, :func:`crmkit.record_links.link_for`) adds the action
        »Im CRM öffnen« / "Open in CRM" (``Action.OpenUrl``, its title in ``lang``).
        """
        heading = title if title is not None else record_title(record)
        body: list[dict[str, Any]] = []
        if heading:
            body.append({
                "type": "TextBlock", "text": escape_card_text(heading), "weight": "Bolder", "size": "Medium",
                "wrap": True,
            })
        facts = [{"title": escape_card_text(r.label), "value": escape_card_text(r.text)}
                 for r in self.rows(record, lang)]
        if facts:
            body.append({"type": "FactSet", "facts": facts})
        else:
            body.append({"type": "TextBlock", "text": escape_card_text(DASH), "wrap": True})
        card: dict[str, Any] = {"$schema": CARD_SCHEMA, "type": "AdaptiveCard", "version": CARD_VERSION, "body": body}
        if link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": t("record_link.open", lang), "url": link}]
        return card

    def html_table(self, record: Mapping[str, Any], lang: str = "de", *, link: str | None = None) -> str:
        """The record as an HTML table; labels and values are escaped, line breaks become ``<br>``.

        ``link`` (the record's deep link) adds a last row with »Im CRM öffnen« / "Open in CRM" in ``lang``."""
        cells = "".join(
            f"<tr><th style=\"text-align:left;padding-right:12px\">{_html(r.label)}</th><td>{_html(r.text)}</td></tr>"
            for r in self.rows(record, lang)
        )
        if link:
            cells += f'<tr><td colspan="2">{record_link_html(link, lang)}</td></tr>'
        return f'<table class="crmkit-record">{cells}</table>'

    def html_table_row(self, record: Mapping[str, Any], lang: str = "de", *, link: str | None = None) -> str:
        """One ``<tr>`` per record, for digests that list many records in one table (see html_header);
        ``link`` adds a last cell with the record's »Im CRM öffnen«."""
        texts = {r.field: r.text for r in self.rows(record, lang)}
        cells = "".join(f"<td>{_html(texts.get(f.field, ''))}</td>" for f in self.fields)
        if link:
            cells += f"<td>{record_link_html(link, lang)}</td>"
        return f"<tr>{cells}</tr>"

    def html_header(self, lang: str = "de", *, links: bool = False) -> str:
        """The digest table's header; ``links``: one more (empty) column for the rows' links."""
        cells = "".join(f"<th>{_html(f.label(lang))}</th>" for f in self.fields)
        return f"<tr>{cells}{'<th></th>' if links else ''}</tr>"

    # -- persistence -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DisplayFormat:
        """Build (not validate) a format from :meth:`to_dict` output.

        Raises:
            DisplayFormatError: the data is not a format of a known version.
        """
        if not isinstance(data, Mapping) or data.get("version") != 1 or not isinstance(data.get("fields"), list):
            raise DisplayFormatError("Not a stored display format (version 1 with a list of fields).")
        names = {f for f in FieldFormat.__dataclass_fields__}
        fields = []
        for item in data["fields"]:
            if not isinstance(item, Mapping) or "field" not in item or set(item) - names:
                raise DisplayFormatError(f"Not a field format: {item!r}.")
            spec = DISPLAY_FIELDS.get(item["field"])
            defaults = {"label_de": spec.label("de"), "label_en": spec.label("en")} if spec else {
                "label_de": item["field"], "label_en": item["field"]}
            fields.append(FieldFormat(**{**defaults, **item}))
        return cls(tuple(fields))


def default_format() -> DisplayFormat:
    """Company, salutation + first + last name, street, postcode + city, country, phone, e-mail."""
    return DisplayFormat(tuple(FieldFormat.for_field(k) for k in (
        "company", "name", "street", "postal_city", "country", "phone", "email",
    )))


def source_columns(key: str) -> tuple[str, ...]:
    """The address columns behind a display field (``name`` → salutation, title, first and last name)."""
    return _catalog_field(key).columns


def record_title(record: Mapping[str, Any]) -> str:
    """A headline for a record: its company, else its name (controls and bidi overrides dropped)."""
    company = inert(_plain(record.get("company"))).strip()
    if company:
        return company
    return " ".join(p for p in (inert(_plain(record.get(c))).strip() for c in ("first_name", "last_name")) if p)


# -- the stored format -------------------------------------------------------------------------------

def load_format(crm: Session) -> DisplayFormat:
    """The stored Teams display format, or :func:`default_format` when none was saved. Needs no right."""
    return crm.store.read(_load)


def _load(tx: Tx) -> DisplayFormat:
    raw = tx.one("SELECT spec FROM display_formats WHERE area = ?", [AREA])
    return default_format() if raw is None else DisplayFormat.from_dict(json.loads(raw))


def save_format(crm: Session, fmt: DisplayFormat) -> None:
    """Store ``fmt`` as the Teams display format (needs ``teams.admin``); audited with old and new.

    Raises:
        PermissionDenied: the user lacks ``teams.admin``.
        DisplayFormatError (and subclasses): the format is invalid; nothing is written.
    """
    crm.require("teams.admin")
    if not isinstance(fmt, DisplayFormat):
        raise DisplayFormatError("save_format takes a DisplayFormat.")
    fmt.validate()
    new = fmt.to_dict()

    def run(tx: Tx) -> None:
        raw = tx.one("SELECT spec FROM display_formats WHERE area = ?", [AREA])
        old = default_format().to_dict() if raw is None else json.loads(raw)
        if old == new:
            return
        tx.execute(
            "INSERT INTO display_formats VALUES (?, ?, ?, ?) ON CONFLICT (area) DO UPDATE SET "
            "spec = excluded.spec, changed_at = excluded.changed_at, changed_by = excluded.changed_by",
            [AREA, json.dumps(new), datetime.now().replace(microsecond=0), crm.user.name],
        )
        crm.audit(tx, "display_format", AREA, old, new)

    crm.store.write(run)


def reset_format(crm: Session) -> None:
    """Store the default format (needs ``teams.admin``); audited."""
    save_format(crm, default_format())


# -- preview -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordPreview:
    """What a Teams message would show of one address, in every rendering."""

    address_id: int
    lang: str
    rows: list[FormattedField]
    card: dict[str, Any]
    card_json: str
    card_html: str
    html_table: str
    field_names: list[str]


def preview(crm: CRM, address_id: int, lang: str | None = None, fmt: DisplayFormat | None = None) -> RecordPreview:
    """Render one stored address with ``fmt`` (default: the stored format) in ``lang``.

    Raises:
        NotFound: no address with that id.
        DisplayFormatError: ``fmt`` is invalid.
    """
    lang = lang or crm.language
    fmt = (fmt or load_format(crm)).validate()
    record = crm.address(address_id)
    card = fmt.card(record, lang)
    return RecordPreview(
        address_id=int(address_id), lang=lang, rows=fmt.rows(record, lang), card=card, card_json=card_json(card),
        card_html=card_to_html(card), html_table=fmt.html_table(record, lang),
        field_names=fmt.rendered_field_names(record),
    )


# -- escaping ------------------------------------------------------------------------------------------

_MD_INLINE = re.compile(r"([\\*_~`\[\]<>|])")
_WORD_JOINER = "\u2060"
_MD_LINE_START = re.compile(r"^(\s*)([-+#>]|\d+[.)])", re.MULTILINE)


def escape_card_text(text: str) -> str:
    """Neutralise Adaptive Card markdown (bold, italics, links, lists) with backslash escapes.

    Teams renders TextBlock and Fact text as a markdown subset; a record value such as
    ``**urgent** [click](…)`` must show as typed, not as formatting or a link.
    """
    text = _MD_INLINE.sub(r"\\\1", str(text))
    # Teams turns {{DATE(…)}} / {{TIME(…)}} in card text into a formatted date; a word joiner between
    # the braces keeps the value as typed (backslashes do not escape braces there).
    text = re.sub(r"\{(?=\{)", "{" + _WORD_JOINER, text)
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def _unescape_card_text(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text.replace(_WORD_JOINER, ""), flags=re.DOTALL)


def card_json(card: Mapping[str, Any]) -> str:
    """The card as JSON that is also safe inside HTML: ``<``, ``>`` and ``&`` become ``\\u003c`` etc."""
    text = json.dumps(card, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def card_to_html(card: Mapping[str, Any]) -> str:
    """A simple HTML rendering of a card this module built (for previews; not a full renderer)."""
    parts = ['<div class="crmkit-card-preview" style="border:1px solid #ccc;border-radius:4px;padding:8px">']
    for element in card.get("body", []):
        if element.get("type") == "TextBlock":
            weight = "font-weight:bold;" if element.get("weight") == "Bolder" else ""
            parts.append(f'<div style="{weight}">{_html(_unescape_card_text(element.get("text", "")))}</div>')
        elif element.get("type") == "FactSet":
            rows = "".join(
                f'<tr><td style="font-weight:bold;padding-right:12px">{_html(_unescape_card_text(f["title"]))}'
                f"</td><td>{_html(_unescape_card_text(f['value']))}</td></tr>"
                for f in element.get("facts", [])
            )
            parts.append(f"<table>{rows}</table>")
    for action in card.get("actions", []):
        url = str(action.get("url") or "")
        if action.get("type") == "Action.OpenUrl" and url.lower().startswith(("http://", "https://")):
            parts.append(f'<div style="margin-top:6px"><a href="{html.escape(url, quote=True)}" target="_blank" '
                         f'rel="noopener">{_html(action.get("title", ""))}</a></div>')
    parts.append("</div>")
    return "".join(parts)


def record_link_html(link: str, lang: str) -> str:
    """The HTML link »Im CRM öffnen« / "Open in CRM" to a record's deep link (escaped)."""
    return f'<a href="{html.escape(link, quote=True)}">{_html(t("record_link.open", lang))}</a>'


def _html(text: str) -> str:
    return html.escape(str(text), quote=True).replace("\r\n", "\n").replace("\n", "<br>")


# -- value helpers -------------------------------------------------------------------------------------

def _catalog_field(key: Any) -> DisplayField:
    if not isinstance(key, str) or key not in DISPLAY_FIELDS:
        raise UnknownDisplayField(
            f"Unknown field {key!r} for the Teams display format; known: {', '.join(DISPLAY_FIELDS)}.",
            field=str(key),
        )
    return DISPLAY_FIELDS[key]


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # NaN / NaT
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> str:
    if _is_empty(value):
        return ""
    return str(value).strip()


def _format_date(value: Any, pattern: str) -> str:
    moment: date | None = None
    if isinstance(value, (datetime, date)):
        moment = value  # pandas Timestamp is a datetime
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            moment = None
    if moment is None:
        return _plain(value)
    try:
        return moment.strftime(pattern)
    except ValueError:
        return _plain(value)


def _format_number(value: Any, pattern: str | None, lang: str) -> str:
    number: Decimal | None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float, Decimal)):
        number = Decimal(str(value))
    else:
        text = _plain(value).replace(" ", "")
        if lang == "de" and re.fullmatch(r"-?[\d.]*,\d+|-?\d{1,3}(\.\d{3})+", text):
            text = text.replace(".", "").replace(",", ".")
        try:
            number = Decimal(text.replace(",", "")) if re.fullmatch(r"-?[\d,]*\.?\d+", text) else None
        except InvalidOperation:
            number = None
    if number is None:
        return _plain(value)
    if not pattern:
        out = format(number.normalize(), "f") if number == number.to_integral_value() else str(number)
    elif pattern.endswith("d") or pattern in (",", "_"):
        out = format(int(number), pattern)
    else:
        out = format(float(number), pattern)
    if lang == "de":
        out = out.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
    return out


def _format_phone(text: str, pattern: str | None) -> str:
    if not pattern or pattern == "raw":
        return " ".join(text.split())
    country = pattern.partition(":")[2] or "49"
    digits = re.sub(r"[^\d+]", "", text)
    if digits.startswith("+"):
        normal = "+" + digits[1:].replace("+", "")
    elif digits.startswith("00"):
        normal = "+" + digits[2:]
    elif digits.startswith("0"):
        normal = f"+{country}" + digits[1:]
    else:
        return " ".join(text.split())  # no prefix: we cannot tell the country, show as entered
    return normal if 6 <= len(normal) - 1 <= 15 else " ".join(text.split())


def field_label(key: str, lang: str) -> str:
    """The catalog label of a display field in ``lang``."""
    return _catalog_field(key).label(lang)
