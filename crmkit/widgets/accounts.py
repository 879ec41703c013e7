"""User settings, tab "Microsoft 365": the user's own accounts (list, add by device code, remove).

A thin view over :class:`crmkit.auth.Accounts`. Adding shows Microsoft's code and link while the
sign-in waits in the background; "Cancel" stops it. Everything the view shows comes from the core.
"""

from __future__ import annotations

import html
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..auth import DeviceSignIn, M365Account, Microsoft365
from ..i18n import t
from .common import ErrorBox

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["AccountsView", "SignInPanel"]


class SignInPanel(widgets.VBox):
    """Shows a running device-code sign-in: link, code, time left, Cancel; then the outcome."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.prompt = widgets.HTML()
        self.prompt.add_class("crmkit-signin-prompt")
        self.status = widgets.HTML()
        self.status.add_class("crmkit-signin-status")
        self.cancel = widgets.Button(description=t("common.cancel", lang), icon="times")
        self.cancel.add_class("crmkit-signin-cancel")
        self.cancel.on_click(lambda _b: self.sign_in.cancel() if self.sign_in else None)
        self.error = ErrorBox()
        self.sign_in: DeviceSignIn | None = None
        self._timer: threading.Timer | None = None
        super().__init__([self.prompt, self.status, self.cancel, self.error], layout=widgets.Layout(display="none"))

    def start(self, sign_in: DeviceSignIn) -> None:
        self.sign_in = sign_in
        link = html.escape(sign_in.verification_uri)
        code = html.escape(sign_in.user_code)
        self.prompt.value = "<p>" + t(
            "m365.sign_in_prompt", self.lang,
            link=f'<a href="{link}" target="_blank" rel="noopener">{link}</a>',
            code=f'<b style="font-size:120%;letter-spacing:2px">{code}</b>') + "</p>"
        self.error.show(None, self.lang)
        self.cancel.layout.display = None
        self.layout.display = None
        self._tick()

    def _tick(self) -> None:
        sign_in = self.sign_in
        if sign_in is None or sign_in.done:
            return
        minutes = max(1, round(sign_in.seconds_left / 60))
        self.status.value = html.escape(t("m365.seconds_left", self.lang, minutes=minutes))
        self._timer = threading.Timer(15, self._tick)
        self._timer.daemon = True
        self._timer.start()

    def finish(self, sign_in: DeviceSignIn, success_text: str | None) -> None:
        """Show how the sign-in ended (called from the sign-in's thread)."""
        if self._timer is not None:
            self._timer.cancel()
        self.prompt.value = ""
        self.cancel.layout.display = "none"
        if sign_in.status == "signed_in":
            self.status.value = html.escape(success_text or "")
        elif sign_in.status in ("cancelled", "timed_out") and sign_in.error is not None and \
                sign_in.error.error in ("cancelled", "timed_out"):
            self.status.value = html.escape(t(f"m365.{sign_in.status}", self.lang))
        else:
            self.status.value = ""
            self.error.show(sign_in.error, self.lang)


class AccountsView(widgets.VBox):
    """"My Microsoft 365 accounts" for the session user.

    Attributes (for tests and dashboards): ``table`` (HTML list), ``choice`` (account picker),
    ``use_teams``/``use_smtp`` (flags of the picked account), ``remove``, ``add``, the flags for
    a new account ``new_teams``/``new_smtp``, the rows' labels ``edit_label``/``new_label``,
    ``panel`` (:class:`SignInPanel`), ``error``.
    """

    def __init__(self, crm: CRM | None = None, *, m365: Microsoft365 | None = None, lang: str | None = None) -> None:
        if m365 is None:
            if crm is None:
                raise ValueError("pass crm or m365")
            m365 = Microsoft365(crm)
        self.m365 = m365
        self.lang = lang = lang or m365.crm.language
        self.title = widgets.HTML(f"<h3>{html.escape(t('m365.my_accounts', lang))}</h3>")
        self.table = widgets.HTML()
        self.table.add_class("crmkit-m365-accounts")
        self.choice = widgets.Dropdown(description=t("m365.selected", lang), style={"description_width": "initial"},
                                       layout=widgets.Layout(width="auto", align_self="flex-start"))  # fits the address
        fit = {"layout": widgets.Layout(width="auto", margin="0 16px 0 0")}
        self.use_teams = widgets.Checkbox(description=t("m365.use_teams", lang), indent=False, **fit)
        self.use_smtp = widgets.Checkbox(description=t("m365.use_smtp", lang), indent=False, **fit)
        self.remove = widgets.Button(description=t("m365.remove", lang), icon="trash", button_style="danger")
        # Each row of Teams/SMTP boxes says which account it is for: the picked one, or the one to add.
        row_label = {"layout": widgets.Layout(width="auto", min_width="280px")}  # the two rows' boxes line up
        self.edit_label = widgets.Label(t("m365.row.selected", lang), **row_label)
        self.edit_label.add_class("crmkit-m365-row-label")
        self.edit = widgets.VBox([
            self.choice,
            widgets.HBox([self.edit_label, self.use_teams, self.use_smtp, self.remove],
                         layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
        ])
        self.edit.add_class("crmkit-m365-edit")
        self.new_teams = widgets.Checkbox(value=True, description=t("m365.use_teams", lang), indent=False, **fit)
        self.new_smtp = widgets.Checkbox(value=False, description=t("m365.use_smtp", lang), indent=False, **fit)
        self.add = widgets.Button(description=t("teams.add_account", lang), icon="plus", button_style="primary")
        self.add.add_class("crmkit-m365-add")
        self.new_label = widgets.Label(t("m365.row.new", lang), **row_label)
        self.new_label.add_class("crmkit-m365-row-label")
        self.hint = widgets.HTML(f'<p class="crmkit-muted">{html.escape(t("m365.work_only", lang))}<br>'
                                 f"{html.escape(self._storage_text())}</p>")
        self.panel = SignInPanel(lang)
        self.error = ErrorBox()
        self._syncing = False
        self.choice.observe(lambda _c: self._show_choice(), "value")
        self.use_teams.observe(self._flags_changed, "value")
        self.use_smtp.observe(self._flags_changed, "value")
        self.remove.on_click(lambda _b: self._remove())
        self.add.on_click(lambda _b: self.start_add())
        new_row = widgets.HBox([self.new_label, self.new_teams, self.new_smtp, self.add],
                               layout=widgets.Layout(align_items="center", flex_flow="row wrap"))
        new_row.add_class("crmkit-m365-new")
        super().__init__([self.title, self.table, self.edit, new_row, self.panel, self.error, self.hint])
        self.add_class("crmkit-m365-accounts-view")
        self.refresh()

    def _storage_text(self) -> str:
        cache = self.m365.accounts.cache_file
        if cache.encrypted:
            return t("m365.storage_encrypted", self.lang)
        return t("m365.storage_file", self.lang, path=str(cache.path))

    # -- reading ------------------------------------------------------------------------------------

    def refresh(self) -> None:
        accounts = self.m365.accounts.list()
        self.table.value = _table_html(accounts, self.lang)
        self._syncing = True
        try:
            keep = self.choice.value
            self.choice.options = [(a.username, a.home_account_id) for a in accounts]
            ids = [a.home_account_id for a in accounts]
            self.choice.value = keep if keep in ids else (ids[0] if ids else None)
        finally:
            self._syncing = False
        self.edit.layout.display = None if accounts else "none"
        self._show_choice()

    def _selected(self) -> M365Account | None:
        if self.choice.value is None:
            return None
        return next((a for a in self.m365.accounts.list() if a.home_account_id == self.choice.value), None)

    def _show_choice(self) -> None:
        account = self._selected()
        if account is None:
            return
        self._syncing = True
        try:
            self.use_teams.value, self.use_smtp.value = account.use_teams, account.use_smtp
        finally:
            self._syncing = False

    # -- actions ------------------------------------------------------------------------------------

    def _flags_changed(self, _change: dict[str, Any]) -> None:
        if self._syncing or self.choice.value is None:
            return
        try:
            self.m365.accounts.set_usage(self.choice.value, use_teams=self.use_teams.value,
                                         use_smtp=self.use_smtp.value)
            self.error.show(None, self.lang)
        except Exception as exc:
            self.error.show(exc, self.lang)
        self.refresh()

    def _remove(self) -> None:
        if self.choice.value is None:
            return
        try:
            self.m365.accounts.remove(self.choice.value)
            self.error.show(None, self.lang)
        except Exception as exc:
            self.error.show(exc, self.lang)
        self.refresh()

    def start_add(self) -> DeviceSignIn | None:
        """Start adding an account (the "Add new account..." button); returns the running sign-in."""
        self.error.show(None, self.lang)
        try:
            sign_in = self.m365.accounts.start_sign_in(use_teams=self.new_teams.value, use_smtp=self.new_smtp.value)
        except Exception as exc:
            self.error.show(exc, self.lang)
            return None
        self.add.disabled = True
        self.panel.start(sign_in)
        sign_in.add_done_callback(self._finished)
        return sign_in

    def _finished(self, sign_in: DeviceSignIn) -> None:
        user = sign_in.result.username if sign_in.status == "signed_in" else ""
        self.panel.finish(sign_in, t("m365.signed_in", self.lang, user=user))
        self.add.disabled = False
        self.refresh()


def _table_html(accounts: list[M365Account], lang: str) -> str:
    if not accounts:
        return f"<p><i>{html.escape(t('m365.none', lang))}</i></p>"
    head = "".join(f"<th style='text-align:left;padding-right:12px'>{html.escape(t(k, lang))}</th>"
                   for k in ("m365.col.account", "m365.col.name", "m365.col.teams", "m365.col.smtp", "m365.col.added"))
    rows = "".join(
        "<tr>" + "".join(f"<td style='padding-right:12px'>{html.escape(str(v))}</td>" for v in (
            a.username, a.display_name or "", "✓" if a.use_teams else "–", "✓" if a.use_smtp else "–",
            a.added_at.strftime("%d.%m.%Y %H:%M" if lang == "de" else "%Y-%m-%d %H:%M"))) + "</tr>"
        for a in accounts
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
