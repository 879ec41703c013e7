"""The display-format editor for the area "Microsoft Teams" (Anzeigeformat, Anzeigebereich »Microsoft Teams«).

Add, remove and reorder fields, set each field's labels and format, and watch a live preview of
one address as the Adaptive Card (rendered simply as HTML) and as the HTML table. Every change
re-renders from the record already loaded, so typing does not touch the store. Saving goes through
:func:`crmkit.teams.display_format.save_format`, which checks ``teams.admin`` and validates.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..errors import CrmkitError, NotFound
from ..i18n import field_label, t
from ..teams import display_format as dfm
from ..teams.display_format import DISPLAY_FIELDS, EMPTY_CHOICES, DisplayFormat, FieldFormat
from .common import ErrorBox
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["SAMPLE_RECORD", "DisplayFormatEditor"]

# Shown when the store has no address yet, so the format can be designed on an empty database.
SAMPLE_RECORD: dict[str, Any] = {
    "id": 0, "kind": "person", "company": "Muster GmbH", "salutation": "Frau", "title": "Dr.",
    "first_name": "Erika", "last_name": "Mustermann", "department": "Einkauf", "street": "Heidestraße 17",
    "postal_code": "51147", "city": "Köln", "country": "Deutschland", "phone": "0221 1234567",
    "email": "erika.mustermann@muster.example", "owner": "admin", "created_at": None, "modified_at": None,
}


def _field_name(key: str, lang: str) -> str:
    """A display field as users read it (Firma / Company), not its key."""
    spec = DISPLAY_FIELDS.get(key)
    return spec.label(lang) if spec else key


def _field_choice(key: str, lang: str) -> str:
    """A field in the add list: its label, and for a composite field the fields it joins (German has
    "Name" for both the whole name and the last name)."""
    spec = DISPLAY_FIELDS[key]
    if len(spec.columns) < 2:
        return spec.label(lang)
    return f"{spec.label(lang)} ({', '.join(field_label(c, lang) for c in spec.columns)})"


class _FieldRow:
    """The inputs of one field: labels, kind, pattern, empty handling, and move/remove buttons."""

    def __init__(self, spec: FieldFormat, lang: str, editable: bool, on_change: Callable[[], None],
                 on_move: Callable[[str, int], None], on_remove: Callable[[str], None]) -> None:
        self.field = spec.field
        catalog = DISPLAY_FIELDS.get(spec.field)
        kinds = catalog.kinds if catalog else (spec.kind,)
        name = catalog.label(lang) if catalog else spec.field
        self.name = widgets.HTML(f"<b>{html.escape(name)}</b>", layout=widgets.Layout(width="190px"))
        small = widgets.Layout(width="150px")
        self.label_de = widgets.Text(spec.label_de, placeholder=t("display_format.label_de", lang), layout=small)
        self.label_en = widgets.Text(spec.label_en, placeholder=t("display_format.label_en", lang), layout=small)
        self.kind = widgets.Dropdown(options=[(t(f"display_format.kind.{k}", lang), k) for k in kinds],
                                     value=spec.kind if spec.kind in kinds else kinds[0],
                                     layout=widgets.Layout(width="110px"))
        self.pattern = widgets.Text(spec.pattern or "", placeholder=t("display_format.pattern", lang),
                                    layout=widgets.Layout(width="120px"))
        self.empty = widgets.Dropdown(options=[(t(f"display_format.empty.{e}", lang), e) for e in EMPTY_CHOICES],
                                      value=spec.empty, layout=widgets.Layout(width="140px"))
        self.empty_text = widgets.Text(spec.empty_text or "", placeholder=t("display_format.empty_text", lang),
                                       layout=widgets.Layout(width="120px"))
        self.up = widgets.Button(icon="arrow-up", tooltip=t("display_format.up", lang),
                                 layout=widgets.Layout(width="34px"))
        self.down = widgets.Button(icon="arrow-down", tooltip=t("display_format.down", lang),
                                   layout=widgets.Layout(width="34px"))
        self.remove = widgets.Button(icon="trash", tooltip=t("display_format.remove", lang),
                                     layout=widgets.Layout(width="34px"))
        for w, cls in ((self.label_de, "label-de"), (self.label_en, "label-en"), (self.kind, "kind"),
                       (self.pattern, "pattern"), (self.empty, "empty"), (self.empty_text, "empty-text"),
                       (self.up, "up"), (self.down, "down"), (self.remove, "remove")):
            w.add_class(f"crmkit-dfe-{cls}")
            if isinstance(w, widgets.Button):
                w.disabled = not editable
            else:
                w.disabled = not editable
                w.observe(lambda _c: on_change(), "value")
        self.up.on_click(lambda _b: on_move(self.field, -1))
        self.down.on_click(lambda _b: on_move(self.field, 1))
        self.remove.on_click(lambda _b: on_remove(self.field))
        self.box = widgets.HBox([self.name, self.label_de, self.label_en, self.kind, self.pattern, self.empty,
                                 self.empty_text, self.up, self.down, self.remove])
        self.box.add_class("crmkit-dfe-row")
        self.box.add_class(f"crmkit-dfe-row-{spec.field}")

    def value(self) -> FieldFormat:
        return FieldFormat(
            field=self.field, label_de=self.label_de.value, label_en=self.label_en.value, kind=self.kind.value,
            pattern=self.pattern.value.strip() or None, empty=self.empty.value,
            empty_text=self.empty_text.value or None,
        )


class DisplayFormatEditor(widgets.VBox):
    """Edit the Teams display format with a live preview.

    Attributes (for tests): ``rows`` (list of field rows), ``add_field`` + ``add_button``,
    ``save_button``, ``reset_button``, ``preview_address``, ``preview_lang``, ``card_preview``,
    ``table_preview``, ``logged_fields``, ``message``, ``error``, and ``fmt`` (the edited format).
    """

    def __init__(self, crm: CRM, lang: str | None = None, *, address_id: int | None = None) -> None:
        self.crm = crm
        self.lang = lang or crm.language
        self.editable = crm.user.can("teams.admin")
        self.fmt: DisplayFormat = dfm.load_format(crm)
        self.rows: list[_FieldRow] = []
        self._record: dict[str, Any] = SAMPLE_RECORD
        self._note = ""
        lang_ = self.lang

        self.title = widgets.HTML(
            f"<h3>{html.escape(t('display_format.label', lang_))} – {html.escape(t('display_format.area', lang_))}: "
            "Microsoft Teams</h3>"
        )
        self.note = widgets.HTML("" if self.editable else f"<i>{html.escape(t('display_format.read_only', lang_))}</i>")
        self.header = widgets.HTML(self._header_html())
        self.rows_box = widgets.VBox()
        self.rows_box.add_class("crmkit-dfe-rows")
        self.add_field = widgets.Dropdown(layout=widgets.Layout(width="220px"), disabled=not self.editable)
        self.add_field.add_class("crmkit-dfe-add-field")
        self.add_button = widgets.Button(description=t("display_format.add", lang_), icon="plus",
                                         disabled=not self.editable)
        self.add_button.add_class("crmkit-dfe-add")
        self.add_button.on_click(lambda _b: self._add())
        self.save_button = widgets.Button(description=t("display_format.save", lang_), button_style="primary",
                                          disabled=not self.editable)
        self.save_button.add_class("crmkit-dfe-save")
        self.save_button.on_click(lambda _b: self.save())
        self.reset_button = widgets.Button(description=t("display_format.reset", lang_), disabled=not self.editable)
        self.reset_button.add_class("crmkit-dfe-reset")
        self.reset_button.on_click(lambda _b: self._reset())
        self.message = widgets.HTML()
        self.message.add_class("crmkit-dfe-message")
        self.error = ErrorBox()

        first = address_id if address_id is not None else self._first_address()
        self.preview_address = widgets.IntText(value=first or 0, description=t("display_format.preview_address", lang_),
                                               style={"description_width": "initial"},
                                               layout=widgets.Layout(width="220px"))
        self.preview_address.add_class("crmkit-dfe-preview-address")
        self.preview_lang = widgets.ToggleButtons(options=[("DE", "de"), ("EN", "en")], value=lang_)
        self.preview_lang.add_class("crmkit-dfe-preview-lang")
        self.card_preview = widgets.HTML()
        self.card_preview.add_class("crmkit-dfe-preview-card")
        self.table_preview = widgets.HTML()
        self.table_preview.add_class("crmkit-dfe-preview-table")
        self.logged_fields = widgets.HTML()
        self.logged_fields.add_class("crmkit-dfe-logged-fields")
        self.preview_address.observe(lambda _c: self._load_record(), "value")
        self.preview_lang.observe(lambda _c: self._render_preview(), "value")

        preview = widgets.VBox([
            widgets.HTML(f"<h4>{html.escape(t('display_format.preview', lang_))}</h4>"),
            widgets.HBox([self.preview_address, self.preview_lang]),
            widgets.HBox([
                widgets.VBox([widgets.HTML(f"<b>{html.escape(t('display_format.preview_card', lang_))}</b>"),
                              self.card_preview], layout=widgets.Layout(margin="0 24px 0 0")),
                widgets.VBox([widgets.HTML(f"<b>{html.escape(t('display_format.preview_table', lang_))}</b>"),
                              self.table_preview]),
            ]),
            self.logged_fields,
        ])
        preview.add_class("crmkit-dfe-preview")
        super().__init__([
            self.title, self.note, self.header, self.rows_box, widgets.HBox([self.add_field, self.add_button]),
            widgets.HBox([self.save_button, self.reset_button]), self.message, self.error, preview,
        ])
        self.add_class("crmkit-display-format-editor")
        self._build_rows()
        self._load_record()

    # -- building ----------------------------------------------------------------------------------

    def _header_html(self) -> str:
        cols = [("190px", "display_format.field"), ("150px", "display_format.label_de"),
                ("150px", "display_format.label_en"), ("110px", "display_format.kind"),
                ("120px", "display_format.pattern"), ("140px", "display_format.empty"),
                ("120px", "display_format.empty_text")]
        cells = "".join(f'<span style="display:inline-block;width:{w};margin-right:4px">'
                        f"<b>{html.escape(t(k, self.lang))}</b></span>" for w, k in cols)
        return f"<div>{cells}</div>"

    def _build_rows(self) -> None:
        self.rows = [_FieldRow(spec, self.lang, self.editable, self._edited, self._move, self._remove)
                     for spec in self.fmt.fields]
        self.rows_box.children = [r.box for r in self.rows]
        if self.rows:
            self.rows[0].up.disabled = True
            self.rows[-1].down.disabled = True
        unused = [k for k in DISPLAY_FIELDS if k not in self.fmt.field_names]
        self.add_field.options = [(_field_choice(k, self.lang), k) for k in unused]
        self.add_field.value = unused[0] if unused else None
        self.add_button.disabled = not self.editable or not unused
        if not self.editable:  # the buttons say which right is missing; the core refuses a save anyway
            disable_without([self.add_button, self.save_button, self.reset_button,
                             *(b for r in self.rows for b in (r.up, r.down, r.remove))],
                            self.crm.user, ("teams.admin",), self.lang)

    def _first_address(self) -> int | None:
        frame = self.crm.addresses(columns=["id"], limit=1)
        return None if frame.empty else int(frame.iloc[0]["id"])

    # -- events ------------------------------------------------------------------------------------

    def _edited(self) -> None:
        self.fmt = DisplayFormat(tuple(r.value() for r in self.rows))
        self.message.value = ""
        self._render_preview()

    def _move(self, key: str, offset: int) -> None:
        self._edited()
        self.fmt = self.fmt.move(key, offset)
        self._build_rows()
        self._render_preview()

    def _remove(self, key: str) -> None:
        self._edited()
        self.fmt = self.fmt.remove(key)
        self._build_rows()
        self._render_preview()

    def _add(self) -> None:
        key = self.add_field.value
        if not key:
            return
        self._edited()
        self.fmt = self.fmt.add(key)
        self._build_rows()
        self._render_preview()

    def _reset(self) -> None:
        self.fmt = dfm.default_format()
        self._build_rows()
        self.message.value = ""
        self._render_preview()

    def save(self) -> bool:
        """Save the edited format; True on success (errors show in the error box)."""
        self._edited()
        try:
            dfm.save_format(self.crm, self.fmt)
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            return False
        self.error.show(None, self.lang)
        self.message.value = f'<span style="color:#107c10">{html.escape(t("display_format.saved", self.lang))}</span>'
        return True

    # -- preview -----------------------------------------------------------------------------------

    def _load_record(self) -> None:
        address_id = self.preview_address.value
        note = ""
        try:
            self._record = self.crm.address(address_id) if address_id else SAMPLE_RECORD
        except NotFound:
            self._record = SAMPLE_RECORD
            note = t("display_format.no_address", self.lang)
        self._note = note
        self._render_preview()

    def _render_preview(self) -> None:
        lang = self.preview_lang.value
        try:
            self.fmt.validate()
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            return
        self.error.show(None, self.lang)
        card = self.fmt.card(self._record, lang)
        sample = f"<div><i>{html.escape(self._note)}</i></div>" if self._note else ""
        self.card_preview.value = sample + dfm.card_to_html(card)
        self.table_preview.value = self.fmt.html_table(self._record, lang)
        names = ", ".join(_field_name(k, self.lang) for k in self.fmt.rendered_field_names(self._record))
        text = t("display_format.logged_fields", self.lang, fields=names)
        self.logged_fields.value = f"<small>{html.escape(text)}</small>"
