"""System settings, tab »Kontaktarten«: the contact types, renamed or given another short code.

A thin view over :mod:`crmkit.contact_types`; the core checks the right (``system.admin`` or
``teams.admin``) and the input. The Teams settings open this tab from their refusal when another
contact type holds the code TS.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import ipywidgets as widgets

from .. import contact_types as core
from ..errors import CrmkitError
from ..i18n import format_count, t
from .common import ErrorBox
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["ContactTypesView"]

_LABEL = {"description_width": "110px"}  # the same for the three fields, so they line up


class ContactTypesView(widgets.VBox):
    """The list of contact types and a form for the one picked: new code, new label.

    Attributes (for tests and dashboards): ``table`` (HTML), ``choice`` (the type's code),
    ``new_code`` + ``change_code``, ``new_label`` + ``rename``, ``status``, ``error``, ``may_edit``.
    """

    def __init__(self, crm: CRM, lang: str | None = None) -> None:
        self.crm = crm
        self.lang = lang = lang or crm.language
        self.title = widgets.HTML(f"<h3>{html.escape(t('settings.tab.contact_types', lang))}</h3>")
        self.table = widgets.HTML()
        self.table.add_class("crmkit-contact-types")
        self.choice = widgets.Dropdown(description=t("contact_types.pick", lang), style=_LABEL,
                                       layout=widgets.Layout(width="400px"))
        self.choice.add_class("crmkit-contact-type-choice")
        self.new_code = widgets.Text(description=t("contact_types.new_code", lang), style=_LABEL,
                                     layout=widgets.Layout(width="240px"))
        self.new_code.add_class("crmkit-contact-type-new-code")
        self.change_code = widgets.Button(description=t("contact_types.change_code", lang), icon="pencil",
                                          layout=widgets.Layout(width="auto"))
        self.change_code.add_class("crmkit-contact-type-change-code")
        self.new_label = widgets.Text(description=t("contact_types.new_label", lang), style=_LABEL,
                                      layout=widgets.Layout(width="400px"))
        self.new_label.add_class("crmkit-contact-type-new-label")
        self.rename = widgets.Button(description=t("contact_types.rename", lang), icon="pencil",
                                     layout=widgets.Layout(width="auto"))
        self.rename.add_class("crmkit-contact-type-rename")
        self.status = widgets.HTML()
        self.status.add_class("crmkit-contact-types-status")
        self.error = ErrorBox()
        self.may_edit = disable_without(
            (self.new_code, self.change_code, self.new_label, self.rename), crm.user, core.EDIT_RIGHTS, lang)
        self.choice.observe(lambda _c: self._show_choice(), "value")
        self.change_code.on_click(lambda _b: self.apply_code())
        self.rename.on_click(lambda _b: self.apply_label())
        super().__init__([
            self.title, self.table, self.choice,
            widgets.HBox([self.new_code, self.change_code], layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.new_label, self.rename], layout=widgets.Layout(align_items="center")),
            self.status, self.error,
        ])
        self.add_class("crmkit-contact-types-view")
        self.refresh()

    def refresh(self, select: str | None = None) -> None:
        """Re-read the contact types; keep (or pick) ``select``."""
        frame = core.contact_types(self.crm)
        lang = self.lang
        head = "".join(f"<th style='text-align:left;padding-right:16px'>{html.escape(t(k, lang))}</th>"
                       for k in ("contact_type.code", "contact_types.col.label", "contact_types.col.contacts"))
        rows = "".join(
            f'<tr data-code="{html.escape(str(r.code))}"><td style="padding-right:16px">{html.escape(str(r.code))}</td>'
            f'<td style="padding-right:16px">{html.escape(str(r.label))}</td>'
            f"<td>{html.escape(format_count(int(r.contacts)))}</td></tr>"
            for r in frame.itertuples())
        self.table.value = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        keep = select or self.choice.value
        codes = [str(c) for c in frame["code"]]
        self.choice.options = [(f"{r.code} – {r.label}", str(r.code)) for r in frame.itertuples()]
        self.choice.value = keep if keep in codes else (codes[0] if codes else None)
        self._show_choice()

    def _show_choice(self) -> None:
        code = self.choice.value
        label = next((lab for lab, value in self.choice.options if value == code), "")
        self.new_code.value = ""
        self.new_label.value = label.split(" – ", 1)[1] if " – " in label else ""

    def select(self, code: str) -> None:
        """Pick the contact type ``code`` (the Teams refusal opens the tab on the type holding TS)."""
        if code in [value for _lab, value in self.choice.options]:
            self.choice.value = code

    # -- actions ------------------------------------------------------------------------------------

    def apply_code(self) -> bool:
        """»Kürzel ändern«: give the picked type the code in ``new_code``; True when it changed."""
        old = self.choice.value
        if old is None:
            return False
        label = self.new_label.value
        try:
            changed = core.change_code(self.crm, old, self.new_code.value)
        except CrmkitError as exc:
            self.status.value = ""
            self.error.show(exc, self.lang)
            return False
        self.error.show(None, self.lang)
        new = core.check_code(self.new_code.value)
        self.refresh(select=new)
        text = (t("contact_types.code_changed", self.lang, old=old, new=new, label=label) if changed
                else t("contact_types.unchanged", self.lang))
        self.status.value = f'<p role="status">{html.escape(text)}</p>'
        return changed

    def apply_label(self) -> bool:
        """»Umbenennen«: give the picked type the label in ``new_label``; True when it changed."""
        code = self.choice.value
        if code is None:
            return False
        try:
            changed = core.rename(self.crm, code, self.new_label.value)
        except CrmkitError as exc:
            self.status.value = ""
            self.error.show(exc, self.lang)
            return False
        self.error.show(None, self.lang)
        label = self.new_label.value.strip()
        self.refresh(select=code)
        text = (t("contact_types.renamed", self.lang, code=code, label=label) if changed
                else t("contact_types.unchanged", self.lang))
        self.status.value = f'<p role="status">{html.escape(text)}</p>'
        return changed
