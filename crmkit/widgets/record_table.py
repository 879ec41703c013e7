"""The record table view: binds a :class:`RecordTableModel` to ipywidgets and does nothing else.

Layout (CSS classes in brackets, for browser tests and styling)::

    [crmkit-record-table]
      title [crmkit-title]                               language [crmkit-language]
      search [crmkit-search]  city [crmkit-city]  country [crmkit-country]  per page [crmkit-page-size]
      error [crmkit-error]                         (hidden unless something failed)
      [crmkit-rows]: header [crmkit-header] + one [crmkit-row] per record:
          checkbox [crmkit-row-select] + cells [crmkit-cells] (escaped HTML)
      ◀ [crmkit-prev]  "Page X of Y (N addresses)" [crmkit-page-label]  [crmkit-next] ▶
      "n selected" [crmkit-selection-label]  [crmkit-clear-selection]  [crmkit-refresh]
      actions [crmkit-actions]                    (empty: later issues add buttons here)

Rows are a fixed pool of widgets sized to the page size; paging rewrites their values instead of
creating widgets, which keeps a page turn in the browser to a handful of small comm messages.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..i18n import format_count, t
from ..text_rules import inert
from .common import ErrorBox, LanguageSwitch
from .record_table_model import DEFAULT_COLUMNS, PAGE_SIZES, RecordTableModel

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["RecordTable"]

# Relative column widths; unknown columns get 2.
_WEIGHTS = {"salutation": 1, "title": 1, "postal_code": 1, "country": 1, "kind": 1, "id": 1,
            "company": 3, "street": 3, "email": 3}
_CELL = "overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding:2px 6px"

SelectionCallback = Callable[[list[int]], None]


class _Row:
    """One reusable table row: a checkbox and the escaped cells."""

    def __init__(self, on_toggle: Callable[[_Row, bool], None]) -> None:
        self.address_id: int | None = None
        self.check = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(width="2em"))
        self.check.add_class("crmkit-row-select")
        self.cells = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", width="auto"))
        self.cells.add_class("crmkit-cells")
        self.box = widgets.HBox([self.check, self.cells],
                                layout=widgets.Layout(display="none", width="100%", align_items="center"))
        self.box.add_class("crmkit-row")
        self.check.observe(lambda change: on_toggle(self, bool(change["new"])), "value")


class RecordTable(widgets.VBox):
    """A filterable, paged, selectable table of addresses.

    Args:
        crm: the CRM session to read from (its user's rights and language apply).
        columns: address columns to show, in order.
        where, params: a fixed SQL filter beneath the interactive ones.
        model: an existing model to bind (then ``crm`` and the filter arguments are ignored).

    Attributes:
        model: the :class:`RecordTableModel` holding all state.
        actions: an HBox for action buttons on the selection; see :meth:`add_action`.
    """

    def __init__(
        self, crm: CRM | None = None, *, columns: Sequence[str] = DEFAULT_COLUMNS, where: str | None = None,
        params: Sequence[Any] = (), model: RecordTableModel | None = None,
    ) -> None:
        if model is None:
            if crm is None:
                raise TypeError("RecordTable needs a crm or a model")
            model = RecordTableModel(crm, columns=columns, where=where, params=params)
        self.model = model
        self._binding = False  # True while the view writes widget values itself
        self._selection_callbacks = widgets.CallbackDispatcher()
        self._selection_actions: list[widgets.Button] = []
        lang = model.language

        self.title = widgets.HTML()
        self.title.add_class("crmkit-title")
        self.language_switch = LanguageSwitch(lang, self._language_picked)
        self.search = widgets.Text(value=model.search, continuous_update=False, style={"description_width": "initial"})
        self.search.add_class("crmkit-search")
        self.city = widgets.Dropdown(style={"description_width": "initial"}, layout=widgets.Layout(width="auto"))
        self.city.add_class("crmkit-city")
        self.country = widgets.Dropdown(style={"description_width": "initial"}, layout=widgets.Layout(width="auto"))
        self.country.add_class("crmkit-country")
        sizes = sorted({*PAGE_SIZES, model.page_size})
        self.page_size = widgets.Dropdown(
            options=[(str(s), s) for s in sizes], value=model.page_size, style={"description_width": "initial"},
            layout=widgets.Layout(width="auto"),
        )
        self.page_size.add_class("crmkit-page-size")
        self.error = ErrorBox()
        self.header = widgets.HTML(layout=widgets.Layout(flex="1 1 auto", width="auto"))
        self.select_page = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(width="2em"))
        self.select_page.add_class("crmkit-select-page")
        header_row = widgets.HBox([self.select_page, self.header],
                                  layout=widgets.Layout(width="100%", align_items="center"))
        header_row.add_class("crmkit-header")
        self.empty = widgets.HTML()
        self.empty.add_class("crmkit-empty")
        self.rows_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.rows_box.add_class("crmkit-rows")
        self._rows: list[_Row] = []
        self.prev_button = widgets.Button(icon="chevron-left")
        self.prev_button.add_class("crmkit-prev")
        self.next_button = widgets.Button(icon="chevron-right")
        self.next_button.add_class("crmkit-next")
        self.page_label = widgets.Label()
        self.page_label.add_class("crmkit-page-label")
        self.selection_label = widgets.Label()
        self.selection_label.add_class("crmkit-selection-label")
        self.clear_button = widgets.Button()
        self.clear_button.add_class("crmkit-clear-selection")
        self.refresh_button = widgets.Button(icon="refresh")
        self.refresh_button.add_class("crmkit-refresh")
        self.actions = widgets.HBox()
        self.actions.add_class("crmkit-actions")

        super().__init__([
            widgets.HBox([self.title, self.language_switch],
                         layout=widgets.Layout(justify_content="space-between", align_items="center")),
            widgets.HBox([self.search, self.city, self.country, self.page_size],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.error,
            header_row,
            self.empty,
            self.rows_box,
            widgets.HBox([self.prev_button, self.page_label, self.next_button], layout=widgets.Layout(
                align_items="center")),
            widgets.HBox([self.selection_label, self.clear_button, self.refresh_button, self.actions],
                         layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
        ])
        self.add_class("crmkit-record-table")

        # widgets → model
        self.search.observe(lambda c: self._to_model("search", c["new"]), "value")
        self.city.observe(lambda c: self._to_model("city", c["new"] or ""), "value")
        self.country.observe(lambda c: self._to_model("country", c["new"] or ""), "value")
        self.page_size.observe(lambda c: self._to_model("page_size", int(c["new"])), "value")
        self.prev_button.on_click(lambda _b: self.model.previous_page())
        self.next_button.on_click(lambda _b: self.model.next_page())
        self.clear_button.on_click(lambda _b: self.model.clear_selection())
        self.refresh_button.on_click(lambda _b: self.model.refresh())
        self.select_page.observe(self._page_toggled, "value")
        # model → widgets
        model.observe(lambda _c: self._render_rows(), "loads")
        model.observe(lambda _c: self._render_choices(), ["cities", "countries"])
        model.observe(lambda _c: self._relabel(), "language")
        model.observe(lambda _c: self._render_error(), "error")
        model.observe(self._selection_changed, "selected_ids")
        model.observe(self._page_size_changed, "page_size")

        self._relabel()

    # -- public API ------------------------------------------------------------------------------------

    @property
    def selected_ids(self) -> list[int]:
        """Ids of the selected addresses, across pages, in the order they were selected."""
        return list(self.model.selected_ids)

    @selected_ids.setter
    def selected_ids(self, ids: Sequence[int]) -> None:
        self.model.selected_ids = [int(i) for i in ids]

    def on_selection(self, callback: SelectionCallback, remove: bool = False) -> None:
        """Call ``callback(selected_ids)`` whenever the selection changes (``remove=True`` to stop)."""
        self._selection_callbacks.register_callback(callback, remove=remove)

    def add_action(self, button: widgets.Button, *, needs_selection: bool = True) -> widgets.Button:
        """Put a button into the actions bar; with ``needs_selection`` it is enabled only while
        at least one record is selected. The button's own ``on_click`` reads :attr:`selected_ids`
        or ``model.selected_frame()``."""
        self.actions.children = (*self.actions.children, button)
        if needs_selection:
            self._selection_actions.append(button)
            button.disabled = not self.model.selected_ids
        return button

    def refresh(self) -> None:
        """Read the current page again."""
        self.model.refresh()

    # -- binding helpers ---------------------------------------------------------------------------------

    def _language_picked(self, lang: str) -> None:
        if self._binding:
            return
        self.model.set_language(lang)
        # A failed switch (e.g. a locked database) must not leave the dropdown showing it.
        self._set_quietly(self.language_switch, value=self.model.language)

    def _to_model(self, name: str, value: Any) -> None:
        if not self._binding:
            setattr(self.model, name, value)

    def _set_quietly(self, widget: widgets.Widget, **values: Any) -> None:
        self._binding = True
        try:
            for name, value in values.items():
                setattr(widget, name, value)
        finally:
            self._binding = False

    def _page_size_changed(self, change: dict[str, Any]) -> None:
        size = int(change["new"])
        offered = [value for _label, value in self.page_size.options]
        if size not in offered:
            self._set_quietly(self.page_size, options=[(str(s), s) for s in sorted({*offered, size})])
        self._set_quietly(self.page_size, value=size)
        self._render_rows()

    def _resize_pool(self, size: int) -> None:
        lang = self.model.language
        while len(self._rows) < size:
            row = _Row(self._row_toggled)
            row.check.tooltip = t("table.select_row", lang)
            self._rows.append(row)
        boxes = tuple(r.box for r in self._rows[:size])
        if self.rows_box.children != boxes:
            self.rows_box.children = boxes

    # -- rendering -----------------------------------------------------------------------------------------

    def _relabel(self) -> None:
        lang = self.model.language
        self._set_quietly(self.language_switch, value=lang)
        self.language_switch.relabel(lang)
        self.title.value = f"<h3 style='margin:4px 0'>{html.escape(t('app.addresses', lang))}</h3>"
        self.search.description = t("table.search", lang)
        self.search.placeholder = t("table.search_placeholder", lang)
        self.city.description = t("address.city", lang)
        self.country.description = t("address.country", lang)
        self.page_size.description = t("table.page_size", lang)
        self.prev_button.description = t("table.previous", lang)
        self.next_button.description = t("table.next", lang)
        self.clear_button.description = t("table.clear_selection", lang)
        self.refresh_button.description = t("table.refresh", lang)
        self.refresh_button.tooltip = t("table.refresh", lang)
        self.select_page.tooltip = t("table.select_page", lang)
        for row in self._rows:
            row.check.tooltip = t("table.select_row", lang)
        self.header.value = self._cells_html({c: t(f"address.{c}", lang) for c in self.model.columns}, header=True)
        self._render_choices()
        self._render_rows()
        self._render_error()
        self._render_selection()

    def _render_choices(self) -> None:
        all_label = t("table.all", self.model.language)
        for widget, values, current in (
            (self.city, self.model.cities, self.model.city),
            (self.country, self.model.countries, self.model.country),
        ):
            options = [(all_label, ""), *[(v, v) for v in values]]
            if current and current not in values:
                options.append((current, current))  # a filter set in code stays visible
            # Replacing options resets a Dropdown to its first entry; put the model's value back.
            self._set_quietly(widget, options=options, value=current)

    def _render_rows(self) -> None:
        model = self.model
        lang = model.language
        rows = model.rows
        selected = set(model.selected_ids)
        self._resize_pool(model.page_size)
        self._binding = True
        try:
            for i, row in enumerate(self._rows):
                if i < len(rows):
                    record = rows[i]
                    row.address_id = int(record["id"])
                    row.cells.value = self._cells_html(record)
                    row.check.value = row.address_id in selected
                    row.box.layout.display = None
                else:
                    row.address_id = None
                    row.check.value = False
                    row.box.layout.display = "none"
        finally:
            self._binding = False
        self.empty.value = "" if rows else f"<i>{html.escape(t('table.empty', lang))}</i>"
        self.page_label.value = t(
            "table.page_one" if model.total == 1 else "table.page", lang, page=model.page + 1, pages=model.pages,
            total=format_count(model.total, lang),
        )
        self.prev_button.disabled = not model.has_previous
        self.next_button.disabled = not model.has_next
        self._render_select_page()

    def _cells_html(self, record: dict[str, Any], *, header: bool = False) -> str:
        columns = self.model.columns
        template = " ".join(f"minmax(0,{_WEIGHTS.get(c, 2)}fr)" for c in columns)
        weight = "font-weight:bold;" if header else ""
        cells = []
        for column in columns:
            value = record.get(column)
            # A stored value may predate the input rule: its controls and bidi overrides are not shown.
            text = "" if value is None else html.escape(inert(str(value)), quote=True)
            cells.append(f'<div class="crmkit-cell" data-col="{column}" title="{text}" style="{weight}{_CELL}">'
                         f"{text}</div>")
        border = "2px solid #888" if header else "1px solid #e0e0e0"
        return (f'<div style="display:grid;grid-template-columns:{template};border-bottom:{border}">'
                f"{''.join(cells)}</div>")

    def _render_error(self) -> None:
        self.error.show(self.model.error, self.model.language)

    def _render_selection(self) -> None:
        count = len(self.model.selected_ids)
        self.selection_label.value = t("table.selected", self.model.language, count=format_count(count))
        self.clear_button.disabled = count == 0
        for button in self._selection_actions:
            button.disabled = count == 0

    def _render_select_page(self) -> None:
        ids = self.model.page_ids
        self._set_quietly(self.select_page, value=bool(ids) and set(ids) <= set(self.model.selected_ids),
                          disabled=not ids)

    # -- events from the row widgets -------------------------------------------------------------------------

    def _row_toggled(self, row: _Row, checked: bool) -> None:
        if not self._binding and row.address_id is not None:
            self.model.select([row.address_id], checked)

    def _page_toggled(self, change: dict[str, Any]) -> None:
        if not self._binding:
            self.model.select(self.model.page_ids, bool(change["new"]))

    def _selection_changed(self, change: dict[str, Any]) -> None:
        selected = set(change["new"])
        self._binding = True
        try:
            for row in self._rows:
                if row.address_id is not None:
                    row.check.value = row.address_id in selected
        finally:
            self._binding = False
        self._render_select_page()
        self._render_selection()
        self._selection_callbacks(list(change["new"]))
