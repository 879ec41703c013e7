"""System settings, tab »Verzeichniskonten«: which directory account each CRM user signs in with (issue 16 item 1).

A thin view over :class:`crmkit.directory_links.DirectoryLinks`: the core checks ``system.admin``, the ids and
UPNs, one account per user, and audits each change; this view lists, picks and asks. An account is picked from
the organisation's directory (read as the admin's own Microsoft 365 account, like the compose panel's people
picker), or its UPN is typed: then the link is pending and the core fills the object id in at that person's first
verified sign-in. Unlinking asks first. Without ``system.admin`` the core refuses even the list, so the tab says
why instead and its controls are disabled with the reason as tooltip.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..auth import SignInRequired
from ..directory_links import BOOTSTRAP_BY
from ..errors import CrmkitError
from ..i18n import format_datetime, t
from .common import ErrorBox
from .compose_model import person_label
from .rights_hint import disable_without, missing_right_text

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["RIGHT", "DirectoryLinksView", "short_id"]

RIGHT = "system.admin"  # what DirectoryLinks requires; named here only to word the reason beforehand
_LABEL = {"description_width": "190px"}  # the fields line up; room for "Directory account (UPN)"
_FOUND = 8  # people shown from one directory search


def short_id(value: str) -> str:
    """A GUID as people compare it at a glance: its first block (the whole id goes in the tooltip)."""
    return value if len(value) <= 9 else value[:8] + "…"


def _text(value: object) -> str:
    """A cell's text; a missing value (None, NaN, NaT) is empty."""
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _h(value: object) -> str:
    return html.escape(_text(value), quote=True)


class DirectoryLinksView(widgets.VBox):
    """The CRM users with their directory accounts, and a form to link or unlink the one picked.

    Attributes (for tests and dashboards): ``table`` (HTML; a row per user, ``data-user`` its login), ``user``
    (the CRM user), ``search`` + ``search_button`` (the directory), ``found`` (people found; picking one fills
    ``account``), ``account`` (the UPN), ``link_button``, ``unlink_button``, ``confirm`` with ``confirm_text``,
    ``confirm_unlink`` and ``cancel_unlink``, ``hint``, ``status``, ``error``, ``may_edit``.
    """

    def __init__(self, crm: CRM, lang: str | None = None) -> None:
        self.crm = crm
        self.lang = lang = lang or crm.language
        self.frame: pd.DataFrame | None = None  # the core's links, None when the core refused them
        self.names: dict[str, str] = {}  # login → display name: people are shown by name
        self._found: dict[str, dict[str, Any]] = {}  # object id → the person found
        self.title = widgets.HTML(f"<h3>{html.escape(t('settings.tab.directory_links', lang))}</h3>")
        self.intro = widgets.HTML(f'<p class="crmkit-muted">{html.escape(t("directory_links.intro", lang))}</p>')
        self.table = widgets.HTML(_dom_classes=("crmkit-directory-links",))
        wide = widgets.Layout(width="500px")
        self.user = widgets.Dropdown(description=t("directory_links.col.user", lang), style=_LABEL, layout=wide,
                                     _dom_classes=("crmkit-directory-links-user",))
        self.search = widgets.Text(description=t("directory_links.search_label", lang), style=_LABEL, layout=wide,
                                   placeholder=t("directory_links.search_placeholder", lang),
                                   _dom_classes=("crmkit-directory-links-search",))
        self.search_button = widgets.Button(description=t("directory_links.search", lang), icon="search",
                                            layout=widgets.Layout(width="auto"),
                                            _dom_classes=("crmkit-directory-links-search-button",))
        self.found = widgets.Dropdown(description=t("directory_links.found", lang), style=_LABEL,
                                      layout=widgets.Layout(width="500px", display="none"),
                                      _dom_classes=("crmkit-directory-links-found",))
        self.account = widgets.Text(description=t("directory_links.col.upn", lang), style=_LABEL, layout=wide,
                                    placeholder=t("directory_links.account_placeholder", lang),
                                    _dom_classes=("crmkit-directory-links-account",))
        self.link_button = widgets.Button(description=t("directory_links.link", lang), icon="link",
                                          button_style="primary", layout=widgets.Layout(width="auto"),
                                          _dom_classes=("crmkit-directory-links-link",))
        self.unlink_button = widgets.Button(description=t("directory_links.unlink", lang), icon="unlink",
                                            layout=widgets.Layout(width="auto"),
                                            _dom_classes=("crmkit-directory-links-unlink",))
        self.confirm_text = widgets.HTML()
        self.confirm_unlink = widgets.Button(description=t("directory_links.confirm", lang), button_style="danger",
                                             layout=widgets.Layout(width="auto"),
                                             _dom_classes=("crmkit-directory-links-confirm",))
        self.cancel_unlink = widgets.Button(description=t("common.cancel", lang), layout=widgets.Layout(width="auto"),
                                            _dom_classes=("crmkit-directory-links-cancel",))
        self.confirm = widgets.HBox([self.confirm_text, self.confirm_unlink, self.cancel_unlink],
                                    layout=widgets.Layout(display="none", align_items="center"),
                                    _dom_classes=("crmkit-directory-links-confirm-box",))
        self.hint = widgets.HTML(layout=widgets.Layout(display="none"), _dom_classes=("crmkit-directory-links-hint",))
        self.status = widgets.HTML(_dom_classes=("crmkit-directory-links-status",))
        self.error = ErrorBox()
        self.may_edit = disable_without(
            (self.account, self.search, self.search_button, self.found, self.link_button, self.unlink_button),
            crm.user, [RIGHT], lang)
        self.user.observe(lambda _c: self._user_picked(), "value")
        self.found.observe(lambda _c: self._person_picked(), "value")
        self.search_button.on_click(lambda _b: self.search_directory())
        self.link_button.on_click(lambda _b: self.link())
        self.unlink_button.on_click(lambda _b: self.ask_unlink())
        self.confirm_unlink.on_click(lambda _b: self.unlink())
        self.cancel_unlink.on_click(lambda _b: self._hide_confirm())
        row = widgets.Layout(align_items="center")
        super().__init__([
            self.title, self.intro, self.table, self.user,
            widgets.HBox([self.search, self.search_button], layout=row), self.found, self.hint,
            widgets.HBox([self.account, self.link_button, self.unlink_button], layout=row),
            self.confirm, self.status, self.error,
        ], _dom_classes=("crmkit-directory-links-view",))
        self.refresh()

    # -- reading ------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the users and (for admins) their links; keep the picked user."""
        users = self.crm.users()
        self.names = {str(r.name): str(r.display_name or r.name) for r in users.itertuples()}
        self.frame = None
        if self.may_edit:
            try:
                self.frame = self.crm.directory_links.links()
            except CrmkitError as exc:  # the core decides; the view only worded the reason beforehand
                self.error.show(exc, self.lang)
        self.table.value = self._table_html() if self.frame is not None else self._refused_html()
        keep = self.user.value
        self.user.options = [(f"{self.names[n]} ({n})" if self.names[n] != n else n, n) for n in self.names]
        self.user.value = keep if keep in self.names else (next(iter(self.names), None))

    def _refused_html(self) -> str:
        reason = missing_right_text(self.crm.user, [RIGHT], self.lang) or ""
        text = t("directory_links.admin_only", self.lang, reason=reason)
        return f'<p class="crmkit-muted">{html.escape(text)}</p>'

    def _who(self, login: object) -> str:
        """A user by display name; crmkit init's bootstrap by what ran it."""
        name = _text(login)
        if name == BOOTSTRAP_BY:
            return t("directory_links.by_init", self.lang)
        return self.names.get(name, name)

    def _table_html(self) -> str:
        lang = self.lang
        assert self.frame is not None
        cols = ("user", "upn", "display_name", "object_id", "tenant_id", "linked_at", "linked_by")
        cell = "padding:2px 16px 2px 0;text-align:left;vertical-align:top"
        head = "".join(f'<th style="{cell}">{html.escape(t(f"directory_links.col.{c}", lang))}</th>' for c in cols)
        muted = '<span class="crmkit-muted">{}</span>'
        rows = []
        for r in self.frame.itertuples():
            user = self._who(r.user_name)
            if not r.active:
                user += " · " + t("directory_links.inactive", lang)
            if pd.isna(r.tenant_id):
                cells = [_h(user), muted.format(html.escape(t("directory_links.not_linked", lang))), "", "", "", "",
                         ""]
            else:
                oid = _text(r.object_id)
                oid_cell = (f'<span title="{_h(oid)}">{_h(short_id(oid))}</span>' if oid else
                            muted.format(html.escape(t("directory_links.pending", lang))))
                tid = _text(r.tenant_id)
                cells = [_h(user), _h(r.upn), _h(r.display_name), oid_cell,
                         f'<span title="{_h(tid)}">{_h(short_id(tid))}</span>',
                         _h(format_datetime(r.linked_at, lang)), _h(self._who(r.linked_by))]
            rows.append(f'<tr data-user="{_h(r.user_name)}">' +
                        "".join(f'<td style="{cell}">{c}</td>' for c in cells) + "</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def _link_of(self, user: str | None) -> dict[str, Any] | None:
        """The picked user's link from the last read (None: none, or not readable)."""
        if self.frame is None or user is None:
            return None
        rows = self.frame[self.frame["user_name"] == user]
        if rows.empty or pd.isna(rows.iloc[0]["tenant_id"]):
            return None
        return rows.iloc[0].to_dict()

    # -- the directory ------------------------------------------------------------------------------

    def search_directory(self) -> None:
        """»Im Verzeichnis suchen«: people whose name starts with ``search``, into ``found``."""
        text = self.search.value.strip()
        self._show_hint(None)
        if not text:
            return
        try:
            frame = self.crm.teams.directory(text, limit=_FOUND)
        except SignInRequired:  # the directory is read as the admin's own account; typing the UPN needs none
            self._show_found([])
            self._show_hint(t("directory_links.sign_in_hint", self.lang))
            return
        except Exception as exc:  # a typed error shows as such, anything else generically
            self.error.show(exc, self.lang)
            return
        self.error.show(None, self.lang)
        people = [{k: (None if pd.isna(v) else str(v)) for k, v in row.items()} for row in frame.to_dict("records")]
        self._show_found(people)
        if not people:
            self._show_hint(t("directory_links.found_none", self.lang))

    def _show_found(self, people: list[dict[str, Any]]) -> None:
        self._found = {str(p["id"]): p for p in people if p.get("id")}
        self.found.options = [(person_label(p), pid) for pid, p in self._found.items()]
        self.found.value = None
        self.found.layout.display = None if self._found else "none"

    def _person_picked(self) -> None:
        person = self._found.get(self.found.value or "")
        if person is not None:
            self.account.value = person.get("userPrincipalName") or ""

    def _show_hint(self, text: str | None) -> None:
        self.hint.value = "" if text is None else f'<p class="crmkit-muted">{html.escape(text)}</p>'
        self.hint.layout.display = None if text else "none"

    # -- actions ------------------------------------------------------------------------------------

    def link(self) -> bool:
        """»Verknüpfen«: link the picked user to the account: the person picked from the directory (by object id)
        when ``account`` still names them, else a pending link by the typed UPN. True when the core took it."""
        user = self.user.value
        if user is None:
            return False
        upn = self.account.value.strip()
        person = self._found.get(self.found.value or "")
        if person is not None and (person.get("userPrincipalName") or "").lower() != upn.lower():
            person = None  # typed over the pick: the typed UPN counts
        self._hide_confirm()
        try:
            from ..config import TeamsConfig

            tenant = TeamsConfig.resolve(self.crm).tenant_id  # the tenant people sign in at
            if person is None:
                self.crm.directory_links.link(user, tenant, None, upn)
            else:
                self.crm.directory_links.link(user, tenant, str(person["id"]), upn, person.get("displayName"))
        except CrmkitError as exc:
            self.status.value = ""
            self.error.show(exc, self.lang)
            return False
        self.error.show(None, self.lang)
        self.refresh()
        key = "directory_links.linked" if person is not None else "directory_links.linked_pending"
        self._say(t(key, self.lang, user=self.names.get(user, user), account=upn))
        return True

    def ask_unlink(self) -> None:
        """»Verknüpfung aufheben«: ask first (the person cannot sign in until linked again)."""
        user = self.user.value
        if user is None:
            return
        link = self._link_of(user)
        if link is None and self.frame is not None:  # nothing to unlink: said, not asked
            self._hide_confirm()
            self._say(t("directory_links.none_to_unlink", self.lang, user=self.names.get(user, user)))
            return
        who = self.names.get(user, user)
        if link is None:  # the links were not readable (the core refused them): ask without naming the account
            text = t("directory_links.confirm_unlink_any", self.lang, user=who)
        else:
            account = _text(link.get("upn")) or _text(link.get("object_id"))
            text = t("directory_links.confirm_unlink", self.lang, user=who, account=account)
        self.confirm_text.value = html.escape(text)
        self.confirm.layout.display = None

    def unlink(self) -> bool:
        """The confirmation's »Aufheben«: remove the picked user's link; True when one was removed."""
        user = self.user.value
        self._hide_confirm()
        if user is None:
            return False
        try:
            removed = self.crm.directory_links.unlink(user)
        except CrmkitError as exc:
            self.status.value = ""
            self.error.show(exc, self.lang)
            return False
        self.error.show(None, self.lang)
        self.refresh()
        key = "directory_links.unlinked" if removed else "directory_links.none_to_unlink"
        self._say(t(key, self.lang, user=self.names.get(user, user)))
        return removed

    def _hide_confirm(self) -> None:
        self.confirm.layout.display = "none"

    def _say(self, text: str) -> None:
        self.status.value = f'<p role="status">{html.escape(text)}</p>'

    def _user_picked(self) -> None:
        self._hide_confirm()
        self.status.value = ""
