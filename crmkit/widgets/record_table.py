"""The record table view: binds a :class:`RecordTableModel` to ipywidgets and does nothing else.

Layout (CSS classes in brackets, for browser tests and styling)::

    [crmkit-record-table]
      title [crmkit-title]                               language [crmkit-language]
      the session's mode [crmkit-mode-line]              (header.ModeLine: single-user, or team and who)
      search [crmkit-search]  city [crmkit-city]  country [crmkit-country]  per page [crmkit-page-size]
      error [crmkit-error]                         (hidden unless something failed)
      [crmkit-table-body]: the table, and beside it the side panel [crmkit-side] (row menu, compose, contacts)
        header [crmkit-header]: select-page box [crmkit-select-page] + column titles
        [crmkit-rows]: three columns of one row height each:
            checkboxes [crmkit-row-select] | the page's cells, one HTML table [crmkit-grid]
            (rows <tr class="crmkit-row" data-id>, cells <td data-col>, escaped) | ⋯ [crmkit-row-menu-button]
        [crmkit-first] [crmkit-prev] "Page X of Y (N addresses)" [crmkit-page-label] [crmkit-next] [crmkit-last]
        go to page [crmkit-goto] + its message [crmkit-goto-error]
        "n selected" [crmkit-selection-label]  [crmkit-clear-selection]  [crmkit-refresh]
        actions [crmkit-actions]                    (buttons on the selection, see add_action)
      a row's ⋯ opens its menu [crmkit-row-menu] in the side panel: the row actions (what
      :meth:`RecordTable.add_row_action` added, and »Kontakte anzeigen« [crmkit-row-contacts])

Why this shape (the table at 100 rows per page): the cells of a page are one HTML table with a fixed
layout, so a page turn is one message instead of one per row, and columns cannot drift from row to row
(per-row boxes sized their cells by content, 2-4 px apart). The only widgets per row are its checkbox
and its ⋯ button, from a pool sized to the largest page shown that shares one Layout and Style each;
the first switch to 100 rows per page built eight comm objects per row (checkbox, HTML, box, their
layouts and styles), and that, in kernel and browser, was most of its time. Checkboxes, cells and
buttons line up by one fixed row height.

The rows scroll inside the table (at most about a screen high): the pager, the actions and the side
panel stay where the user is looking, so the compose dialog opens in view beside the table.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_bool import CheckboxStyle

from ..errors import CrmkitError
from ..i18n import format_count, t
from ..text_rules import inert
from .common import ErrorBox, LanguageSwitch
from .header import ModeLine
from .record_table_model import DEFAULT_COLUMNS, PAGE_SIZES, RecordTableModel

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["RecordTable"]

# Relative column widths; unknown columns get 2.
_WEIGHTS = {"salutation": 1, "title": 1, "postal_code": 1, "country": 1, "kind": 1, "id": 1,
            "company": 3, "street": 3, "email": 3}
_CHECK_W = "2em"  # the checkbox column
_MENU_W = "2.4em"  # the row-menu column
_ROW_H = "30px"  # one row: checkbox, cells and ⋯ button line up by it
# The header and the rows reserve the same scroll-bar gutter, so their columns match with or without one;
# the cells are one fixed-layout table whose rows have exactly the checkboxes' height.
_STYLE = (
    "<style>"
    ".crmkit-record-table .crmkit-rows{overflow-y:auto;scrollbar-gutter:stable}"
    ".crmkit-record-table .crmkit-header{overflow-y:hidden;scrollbar-gutter:stable}"
    ".crmkit-grid{table-layout:fixed;width:100%;border-collapse:separate;border-spacing:0}"
    f".crmkit-grid td,.crmkit-grid th{{height:{_ROW_H};box-sizing:border-box;padding:0 6px;line-height:28px;"
    "overflow:hidden;text-overflow:ellipsis;white-space:nowrap;text-align:left;border-bottom:1px solid #e0e0e0}"
    ".crmkit-grid th{font-weight:bold;border-bottom:2px solid #888}"
    ".crmkit-grid tr.crmkit-row-open td{background:#e8f0fb}"
    "</style>"
)
# Rows scroll inside the table once they are taller than this, so the pager and actions stay in view.
_ROWS_MAX_HEIGHT = "calc(100vh - 300px)"

SelectionCallback = Callable[[list[int]], None]
RowCallback = Callable[[int], None]


class _Shared:
    """Layout and Style objects every row uses: one comm object each instead of one per row."""

    def __init__(self) -> None:
        self.check = widgets.Layout(width=_CHECK_W, min_width=_CHECK_W, height=_ROW_H, margin="0",
                                    flex="0 0 auto", align_items="center")
        self.check_style = CheckboxStyle()
        self.menu = widgets.Layout(width=_MENU_W, min_width=_MENU_W, height=_ROW_H, margin="0", padding="0",
                                   flex="0 0 auto")
        self.menu_style = widgets.ButtonStyle()


class _Row:
    """The widgets of one table row: its checkbox and its ⋯ button (the cells are in the page's HTML)."""

    def __init__(self, shared: _Shared, on_toggle: Callable[[_Row, bool], None],
                 on_menu: Callable[[_Row], None], tooltips: tuple[str, str]) -> None:
        self.address_id: int | None = None
        # Classes and tooltips go into the widgets' first state: add_class afterwards is a message each.
        self.check = widgets.Checkbox(value=False, indent=False, layout=shared.check, style=shared.check_style,
                                      tooltip=tooltips[0], _dom_classes=("crmkit-row-select",))
        self.menu = widgets.Button(description="⋯", layout=shared.menu, style=shared.menu_style,
                                   tooltip=tooltips[1], _dom_classes=("crmkit-row-menu-button",))
        self.check.observe(lambda change: on_toggle(self, bool(change["new"])), "value")
        self.menu.on_click(lambda _b: on_menu(self))


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
        row_menu: the menu that opens under a row (its ⋯ button); see :meth:`add_row_action`.
        side: the panel beside the table (compose dialog, contacts); see :meth:`show_side`.
        contacts: the contacts panel a row's »Kontakte anzeigen« shows in ``side``.
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
        self._denied_actions: set[int] = set()  # ids of actions the user lacks the right for
        self._shared = _Shared()
        lang = model.language

        self.title = widgets.HTML()
        self.title.add_class("crmkit-title")
        self.language_switch = LanguageSwitch(lang, self._language_picked)
        self.mode_line = ModeLine(model.crm, lang)
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
        self.header = widgets.HTML(layout=widgets.Layout(flex="1 1 0%", width="auto", min_width="0", margin="0"))
        self.select_page = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(
            width=_CHECK_W, min_width=_CHECK_W, height=_ROW_H, margin="0", flex="0 0 auto"))
        self.select_page.add_class("crmkit-select-page")
        menu_gap = widgets.HTML(layout=widgets.Layout(width=_MENU_W, min_width=_MENU_W, flex="0 0 auto", margin="0"))
        self.header_row = header_row = widgets.HBox([self.select_page, self.header, menu_gap],
                                                    layout=widgets.Layout(width="100%", align_items="center"))
        header_row.add_class("crmkit-header")
        self.empty = widgets.HTML()
        self.empty.add_class("crmkit-empty")
        self._rows: list[_Row] = []
        self._menu_row: _Row | None = None
        self.checks_column = widgets.VBox(layout=widgets.Layout(flex="0 0 auto"))
        self.grid = widgets.HTML(layout=widgets.Layout(flex="1 1 0%", width="auto", min_width="0", margin="0"))
        self.grid.add_class("crmkit-grid-box")
        self.menus_column = widgets.VBox(layout=widgets.Layout(flex="0 0 auto"))
        self.rows_box = widgets.HBox([self.checks_column, self.grid, self.menus_column], layout=widgets.Layout(
            width="100%", max_height=_ROWS_MAX_HEIGHT, align_items="flex-start"))
        self.rows_box.add_class("crmkit-rows")
        self.row_menu_label = widgets.HTML()
        self.row_menu_label.add_class("crmkit-row-menu-label")
        self.contacts_button = widgets.Button(icon="history", layout=widgets.Layout(width="auto"))
        self.contacts_button.add_class("crmkit-row-contacts")
        self.contacts_button.on_click(lambda _b: self._row_action(self.show_contacts))
        self.row_menu_close = widgets.Button(icon="times", layout=widgets.Layout(width="auto"))
        self.row_menu_close.add_class("crmkit-row-menu-close")
        self.row_menu_close.on_click(lambda _b: self.close_row_menu())
        self.row_menu_actions = widgets.HBox([self.contacts_button], layout=widgets.Layout(flex_flow="row wrap"))
        self.row_menu = widgets.VBox([self.row_menu_label, self.row_menu_actions, self.row_menu_close],
                                     layout=widgets.Layout(border="1px solid #c8c8c8", padding="8px"))
        self.row_menu.add_class("crmkit-row-menu")
        self.first_button = widgets.Button(icon="step-backward", layout=widgets.Layout(width="auto"))
        self.first_button.add_class("crmkit-first")
        self.prev_button = widgets.Button(icon="chevron-left")
        self.prev_button.add_class("crmkit-prev")
        self.next_button = widgets.Button(icon="chevron-right")
        self.next_button.add_class("crmkit-next")
        self.last_button = widgets.Button(icon="step-forward", layout=widgets.Layout(width="auto"))
        self.last_button.add_class("crmkit-last")
        self.page_label = widgets.Label()
        self.page_label.add_class("crmkit-page-label")
        self.goto = widgets.Text(continuous_update=False, style={"description_width": "initial"},
                                 layout=widgets.Layout(width="13em"))
        self.goto.add_class("crmkit-goto")
        self.goto_error = ErrorBox()
        self.goto_error.add_class("crmkit-goto-error")
        self.selection_label = widgets.Label()
        self.selection_label.add_class("crmkit-selection-label")
        self.clear_button = widgets.Button()
        self.clear_button.add_class("crmkit-clear-selection")
        self.refresh_button = widgets.Button(icon="refresh")
        self.refresh_button.add_class("crmkit-refresh")
        self.actions = widgets.HBox()
        self.actions.add_class("crmkit-actions")
        # As wide as what it shows (the compose dialog ~600 px, a row menu less), the table takes the rest.
        self.side = widgets.VBox(layout=widgets.Layout(display="none", width="auto", max_width="640px",
                                                       flex="0 0 auto", margin="0 0 0 12px"))
        self.side.add_class("crmkit-side")
        self.contacts = _ContactsPanel(self)

        main = widgets.VBox([
            header_row,
            self.empty,
            self.rows_box,
            widgets.HBox([self.first_button, self.prev_button, self.page_label, self.next_button, self.last_button,
                          self.goto], layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
            self.goto_error,
            widgets.HBox([self.selection_label, self.clear_button, self.refresh_button, self.actions],
                         layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
        ], layout=widgets.Layout(flex="1 1 0%", min_width="0"))
        body = widgets.HBox([main, self.side], layout=widgets.Layout(width="100%", align_items="flex-start"))
        body.add_class("crmkit-table-body")
        super().__init__([
            widgets.HBox([self.title, self.language_switch],
                         layout=widgets.Layout(justify_content="space-between", align_items="center")),
            self.mode_line,
            widgets.HBox([self.search, self.city, self.country, self.page_size],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.error,
            body,
        ])
        self.add_class("crmkit-record-table")

        # widgets → model
        self.search.observe(lambda c: self._to_model("search", c["new"]), "value")
        self.city.observe(lambda c: self._to_model("city", c["new"] or ""), "value")
        self.country.observe(lambda c: self._to_model("country", c["new"] or ""), "value")
        self.page_size.observe(lambda c: self._to_model("page_size", int(c["new"])), "value")
        self.first_button.on_click(lambda _b: self.model.first_page())
        self.prev_button.on_click(lambda _b: self.model.previous_page())
        self.next_button.on_click(lambda _b: self.model.next_page())
        self.last_button.on_click(lambda _b: self.model.last_page())
        self.goto.observe(self._goto_typed, "value")
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

    def add_action(self, button: widgets.Button, *, needs_selection: bool = True,
                   allowed: bool = True) -> widgets.Button:
        """Put a button into the actions bar; with ``needs_selection`` it is enabled only while
        at least one record is selected, and never when not ``allowed`` (the user lacks the right;
        the caller has put the reason in its tooltip). The button's own ``on_click`` reads
        :attr:`selected_ids` or ``model.selected_frame()``."""
        self.actions.children = (*self.actions.children, button)
        if not allowed:
            self._denied_actions.add(id(button))
            button.disabled = True
        if needs_selection:
            self._selection_actions.append(button)
            button.disabled = not allowed or not self.model.selected_ids
        return button

    def add_row_action(self, button: widgets.Button, on_click: RowCallback) -> widgets.Button:
        """Put a button into the row menu: clicking it calls ``on_click(address_id)`` for the row whose
        menu is open, after closing the menu (the action may show its own panel beside the table). A
        button the user may not use stays disabled (set ``disabled`` and the reason in ``tooltip``)."""
        button.on_click(lambda _b: self._row_action(on_click))
        children = list(self.row_menu_actions.children)
        children.insert(len(children) - 1, button)  # »Kontakte anzeigen« stays last
        self.row_menu_actions.children = tuple(children)
        return button

    def open_row_menu(self, address_id: int) -> None:
        """Open the row menu of the shown row of ``address_id`` beside the table (what its ⋯ does)."""
        row = next((r for r in self._rows if r.address_id == address_id), None)
        if row is None:
            raise ValueError(f"address {address_id} is not on this page")
        self._menu_row = row
        self.row_menu_label.value = self._row_menu_label(address_id)
        self.show_side(self.row_menu)
        self._render_grid()

    def close_row_menu(self) -> None:
        if self._menu_row is not None:
            self._menu_row = None
            self._render_grid()
        if self.row_menu in self.side.children:
            self.show_side(None)

    @property
    def row_menu_address(self) -> int | None:
        """The address whose row menu is open, or None."""
        return None if self._menu_row is None else self._menu_row.address_id

    def shown_rows(self) -> list[str]:
        """The HTML of each row shown on this page (its ``<tr>``), for tests and tools."""
        return re.findall(r'<tr class="crmkit-row[^"]*".*?</tr>', self.grid.value, flags=re.S)

    def show_side(self, widget: widgets.Widget | None) -> None:
        """Show ``widget`` beside the table (replacing what was there), or hide the side panel."""
        if widget is None:
            self.side.children = ()
            self.side.layout.display = "none"
        else:
            self.side.children = (widget,)
            self.side.layout.display = None

    def show_contacts(self, address_id: int) -> None:
        """Show the contact history of ``address_id`` beside the table."""
        self.contacts.load(address_id)
        self.show_side(self.contacts)

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

    def _goto_typed(self, change: dict[str, Any]) -> None:
        text = str(change["new"]).strip()
        if self._binding or not text:
            return
        lang = self.model.language
        try:
            self.model.go_to_page(text)
        except CrmkitError as exc:
            self.goto_error.show(exc, lang)
            return
        self.goto_error.show(None, lang)
        self._set_quietly(self.goto, value="")  # ready for the next number

    def _grow_pool(self, size: int) -> None:
        lang = self.model.language
        tip, menu_tip = t("table.select_row", lang), t("table.row_menu", lang)
        while len(self._rows) < size:
            self._rows.append(_Row(self._shared, self._row_toggled, self._menu_clicked, (tip, menu_tip)))

    def _layout_rows(self, count: int) -> None:
        """The checkbox and ⋯ columns hold exactly the page's rows (two messages when that changes)."""
        checks = tuple(r.check for r in self._rows[:count])
        if self.checks_column.children != checks:
            self.checks_column.children = checks
            self.menus_column.children = tuple(r.menu for r in self._rows[:count])

    # -- rendering -----------------------------------------------------------------------------------------

    def _relabel(self) -> None:
        lang = self.model.language
        self._set_quietly(self.language_switch, value=lang)
        self.language_switch.relabel(lang)
        self.title.value = f"<h3 style='margin:4px 0'>{html.escape(t('app.addresses', lang))}</h3>{_STYLE}"
        self.mode_line.relabel(lang)
        self.search.description = t("table.search", lang)
        self.search.placeholder = t("table.search_placeholder", lang)
        self.city.description = t("address.city", lang)
        self.country.description = t("address.country", lang)
        self.page_size.description = t("table.page_size", lang)
        for button, key in ((self.first_button, "table.first"), (self.last_button, "table.last")):
            button.description = t(key, lang)
            button.tooltip = t(f"{key}_tooltip", lang)
        self.prev_button.description = t("table.previous", lang)
        self.next_button.description = t("table.next", lang)
        self.goto.description = t("table.goto", lang)
        self.goto.tooltip = t("table.goto_tooltip", lang)
        self.clear_button.description = t("table.clear_selection", lang)
        self.refresh_button.description = t("table.refresh", lang)
        self.refresh_button.tooltip = t("table.refresh", lang)
        self.select_page.tooltip = t("table.select_page", lang)
        self.contacts_button.description = t("table.row_contacts", lang)
        self.row_menu_close.description = t("compose.close", lang)
        for row in self._rows:
            row.check.tooltip = t("table.select_row", lang)
            row.menu.tooltip = t("table.row_menu", lang)
        self.header.value = self._header_html()
        self.contacts.relabel()
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
        self._grow_pool(len(rows))
        if self._menu_row is not None:  # a page turn closes the row menu
            self._menu_row = None
            if self.row_menu in self.side.children:
                self.show_side(None)
        self._binding = True
        try:
            for i, row in enumerate(self._rows):
                if i < len(rows):
                    row.address_id = int(rows[i]["id"])
                    row.check.value = row.address_id in selected  # sends only when it changes
                else:
                    row.address_id = None
                    row.check.value = False
        finally:
            self._binding = False
        self._render_grid()
        self._layout_rows(len(rows))
        self.empty.value = "" if rows else f"<i>{html.escape(t('table.empty', lang))}</i>"
        self.page_label.value = t(
            "table.page_one" if model.total == 1 else "table.page", lang, page=format_count(model.page + 1, lang),
            pages=format_count(model.pages, lang), total=format_count(model.total, lang),
        )
        self.first_button.disabled = self.prev_button.disabled = not model.has_previous
        self.next_button.disabled = self.last_button.disabled = not model.has_next
        self.goto.disabled = model.pages <= 1
        self._render_select_page()

    def _colgroup(self) -> str:
        weights = [_WEIGHTS.get(c, 2) for c in self.model.columns]
        total = sum(weights) or 1
        return "<colgroup>" + "".join(f'<col style="width:{100 * w / total:.3f}%">' for w in weights) + "</colgroup>"

    def _render_grid(self) -> None:
        """The page's cells as one HTML table (one message per page turn)."""
        open_id = self.row_menu_address
        body = []
        for record in self.model.rows:
            address_id = int(record["id"])
            cells = []
            for column in self.model.columns:
                value = record.get(column)
                # A stored value may predate the input rule: its controls and bidi overrides are not shown.
                text = "" if value is None else html.escape(inert(str(value)), quote=True)
                cells.append(f'<td class="crmkit-cell" data-col="{column}" title="{text}">{text}</td>')
            css = "crmkit-row crmkit-row-open" if address_id == open_id else "crmkit-row"
            body.append(f'<tr class="{css}" data-id="{address_id}">{"".join(cells)}</tr>')
        self.grid.value = (f'<table class="crmkit-grid">{self._colgroup()}<tbody>{"".join(body)}</tbody></table>'
                           if body else "")

    def _header_html(self) -> str:
        lang = self.model.language
        cells = "".join(f'<th class="crmkit-cell" data-col="{c}">{html.escape(t(f"address.{c}", lang))}</th>'
                        for c in self.model.columns)
        return f'<table class="crmkit-grid">{self._colgroup()}<tr>{cells}</tr></table>'

    def _row_menu_label(self, address_id: int) -> str:
        record = next((r for r in self.model.rows if int(r["id"]) == address_id), {})
        name = record_name(record)
        label = t("table.record_label", self.model.language, id=address_id)
        text = f"{label}: {name}" if name else label
        return f"<h4 style='margin:4px 0'>{html.escape(inert(text))}</h4>"

    def _render_error(self) -> None:
        self.error.show(self.model.error, self.model.language)

    def _render_selection(self) -> None:
        count = len(self.model.selected_ids)
        self.selection_label.value = t("table.selected", self.model.language,
                                       count=format_count(count, self.model.language))
        self.clear_button.disabled = count == 0
        for button in self._selection_actions:
            button.disabled = count == 0 or id(button) in self._denied_actions

    def _render_select_page(self) -> None:
        ids = self.model.page_ids
        self._set_quietly(self.select_page, value=bool(ids) and set(ids) <= set(self.model.selected_ids),
                          disabled=not ids)

    # -- events from the row widgets -------------------------------------------------------------------------

    def _row_toggled(self, row: _Row, checked: bool) -> None:
        if not self._binding and row.address_id is not None:
            self.model.select([row.address_id], checked)

    def _menu_clicked(self, row: _Row) -> None:
        if row.address_id is None:
            return
        if self._menu_row is row:
            self.close_row_menu()
        else:
            self.open_row_menu(row.address_id)

    def _row_action(self, action: RowCallback) -> None:
        address_id = self.row_menu_address
        if address_id is None:
            return
        self.close_row_menu()
        action(address_id)

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


def record_name(record: dict[str, Any]) -> str:
    """How a record is named in a menu or panel title: company, else the person's name."""
    person = " ".join(str(record[k]) for k in ("first_name", "last_name") if record.get(k))
    return str(record.get("company") or "") or person


class _ContactsPanel(widgets.VBox):
    """The contact history of one record (what a row's »Kontakte anzeigen« opens beside the table)."""

    def __init__(self, table: RecordTable) -> None:
        self.table = table
        self.address_id: int | None = None
        self.title = widgets.HTML()
        self.body = widgets.HTML()
        self.body.add_class("crmkit-contacts-rows")
        self.error = ErrorBox()
        self.close_button = widgets.Button(icon="times", layout=widgets.Layout(width="auto"))
        self.close_button.add_class("crmkit-contacts-close")
        self.close_button.on_click(lambda _b: table.show_side(None))
        super().__init__([self.title, self.error, self.body, self.close_button],
                         layout=widgets.Layout(border="1px solid #c8c8c8", padding="8px"))
        self.add_class("crmkit-contacts")

    def relabel(self) -> None:
        self.close_button.description = t("table.contacts.close", self.table.model.language)
        if self.address_id is not None:
            self.load(self.address_id)

    def load(self, address_id: int) -> None:
        crm, lang = self.table.model.crm, self.table.model.language
        self.address_id = address_id
        try:
            record = crm.address(address_id)
            frame = crm.contacts(address_id, limit=200)
            types = dict(crm.contact_types()[["code", "label"]].itertuples(index=False))
            users = dict(crm.users()[["name", "display_name"]].itertuples(index=False))
        except CrmkitError as exc:
            self.error.show(exc, lang)
            self.title.value = self.body.value = ""
            return
        self.error.show(None, lang)
        label = t("table.record_label", lang, id=address_id)
        name = record_name(record)
        title = t("table.contacts.title", lang, record=f"{label}: {name}" if name else label)
        self.title.value = f"<h4 style='margin:4px 0'>{html.escape(inert(title))}</h4>"
        if frame.empty:
            self.body.value = f"<i>{html.escape(t('table.contacts.empty', lang))}</i>"
            return
        cols = ("happened_at", "type", "subject", "user")
        head = "".join(f"<th style='text-align:left;padding-right:10px'>"
                       f"{html.escape(t(f'table.contacts.col.{c}', lang))}</th>" for c in cols)
        date_format = "%d.%m.%Y %H:%M" if lang == "de" else "%Y-%m-%d %H:%M"
        rows = []
        for r in frame.astype(object).where(frame.notna(), None).to_dict("records"):
            cells = (f"{r['happened_at']:{date_format}}" if r["happened_at"] is not None else "",
                     types.get(r["type_code"], r["type_code"]), r["subject"] or "",
                     users.get(r["user_name"], r["user_name"]))
            rows.append("<tr class='crmkit-contact'>" + "".join(
                f"<td style='padding-right:10px'>{html.escape(inert(str(c)))}</td>" for c in cells) + "</tr>")
        self.body.value = (f"<table class='crmkit-contacts-table'><tr>{head}</tr>{''.join(rows)}</table>")
