"""»Im CRM öffnen«: the link base in the system settings, and a record opened from a deep link on the
addresses dashboard. Thin views over :mod:`crmkit.record_links`: the core checks, resolves and refuses."""

from __future__ import annotations

import html
import os
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .. import record_links
from ..addresses import ADDRESS_FIELDS
from ..errors import CrmkitError, PermissionDenied
from ..i18n import LANGUAGES, t
from ..settings import SETTINGS
from ..text_rules import inert
from .common import ErrorBox, error_html
from .record_table import record_name
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..crm import CRM
    from .record_table import RecordTable

__all__ = ["LinkedRecord", "RecordLinkSetting", "open_linked_record", "refused_box"]


class RecordLinkSetting(widgets.VBox):
    """The setting :data:`crmkit.record_links.SETTING` [crmkit-record-link-setting]: ``base`` (the text
    field), ``save`` (button), ``status``, ``error``; disabled, the missing right in the tooltip, without it."""

    def __init__(self, crm: CRM, lang: str | None = None) -> None:
        self.crm = crm
        self.lang = lang or crm.language
        title = widgets.HTML(f"<h4>{html.escape(t('record_link.setting', self.lang))}</h4>")
        hint = widgets.HTML(f'<p class="crmkit-muted">{html.escape(t("record_link.setting_help", self.lang))}</p>')
        self.base = widgets.Text(value=crm.setting(record_links.SETTING) or "", layout=widgets.Layout(width="100%"),
                                 _dom_classes=("crmkit-record-link-base",))
        self.save = widgets.Button(description=t("record_link.save", self.lang), icon="save",
                                   layout=widgets.Layout(width="auto"), _dom_classes=("crmkit-record-link-save",))
        disable_without((self.base, self.save), crm.user, (SETTINGS[record_links.SETTING].right,), self.lang)
        self.status = widgets.HTML(_dom_classes=("crmkit-record-link-status",))
        self.error = ErrorBox()
        self.save.on_click(lambda _b: self.store())
        super().__init__([title, hint, self.base, self.save, self.error, self.status],
                         _dom_classes=("crmkit-record-link-setting",))

    def store(self) -> None:
        """Save what the field holds (the core checks the right and the value)."""
        try:
            self.base.value = record_links.set_base(self.crm, self.base.value)
        except CrmkitError as exc:
            self.status.value = ""
            self.error.show(exc, self.lang)
            return
        self.error.show(None, self.lang)
        self.status.value = f"<div role='status'>{html.escape(t('record_link.saved', self.lang))}</div>"


class LinkedRecord(widgets.VBox):
    """A record opened from a deep link [crmkit-linked-record]: its title and its fields, beside the table."""

    def __init__(self, table: RecordTable, link: record_links.RecordLink) -> None:
        lang = table.model.language
        record = link.record
        name = record_name(record)
        label = t("record_link.title", lang, id=link.address_id)
        heading = f"{label}: {name}" if name else label
        rows = "".join(
            f"<tr><th style='text-align:left;padding-right:10px'>{html.escape(t(f'address.{key}', lang))}</th>"
            f"<td>{html.escape(inert(str(record[key])))}</td></tr>"
            for key in ("id", *ADDRESS_FIELDS) if key != "parent_id" and record.get(key) not in (None, ""))
        self.title = widgets.HTML(f"<h4 style='margin:4px 0'>{html.escape(inert(heading))}</h4>")
        self.fields = widgets.HTML(f"<table class='crmkit-linked-record-fields'>{rows}</table>")
        self.close_button = widgets.Button(description=t("record_link.close", lang), icon="times",
                                           layout=widgets.Layout(width="auto"))
        self.close_button.add_class("crmkit-linked-record-close")
        self.close_button.on_click(lambda _b: table.show_side(None))
        super().__init__([self.title, self.fields, self.close_button],
                         layout=widgets.Layout(border="1px solid #c8c8c8", padding="8px"))
        self.add_class("crmkit-linked-record")
        self.address_id = link.address_id


def refused_box(exc: CrmkitError) -> widgets.HTML:
    """The refusal of a deep link [crmkit-record-link-refused], in both languages (there may be no session,
    so no language): the whole page, nothing of any record."""
    box = widgets.HTML("".join(error_html(exc, lang) for lang in LANGUAGES))
    box.add_class("crmkit-error")
    box.add_class("crmkit-record-link-refused")
    return box


def open_linked_record(table: RecordTable, query: str | None = None) -> widgets.Widget:
    """Open the record the page's query (``QUERY_STRING``) names beside ``table``; returns what the page
    shows: the table, or :func:`refused_box` instead of it when the core refuses the visit. A malformed or
    unknown id is said in the table's error box."""
    query = os.environ.get("QUERY_STRING", "") if query is None else query
    try:
        link = record_links.resolve(table.model.crm, query)
    except PermissionDenied as exc:
        table.close()
        return refused_box(exc)
    except CrmkitError as exc:
        table.error.show(exc, table.model.language)
        return table
    if link is not None:
        table.show_side(LinkedRecord(table, link))

        def relabel(_change: object) -> None:  # the language switch: the open record in the new language
            shown = table.side.children
            if shown and isinstance(shown[0], LinkedRecord):
                shown[0].close()
                table.show_side(LinkedRecord(table, link))

        table.model.observe(relabel, "language")
    return table
