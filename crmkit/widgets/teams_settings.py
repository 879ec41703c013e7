"""Microsoft Teams settings (Datei: Systemweite Einstellungen: Microsoft Teams-Einstellungen).

A thin view over :mod:`crmkit.teams.activation`: the checkbox "Microsoft Teams-Integration
aktivieren", the reopen notice for this session, the sessions that must reopen, and the refusal
when the short code TS is taken, shown with what to do and a button that opens the contact types
(when the page has that tab). Below it the opt-in »Antworten aus Teams am Datensatz ablegen«
(:mod:`crmkit.teams.replies`, setting ``teams.file_replies``) with what it does. Rights are checked in
the core; the view only disables what the user may not change, with the missing right in the tooltip.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

from .. import contact_types
from ..errors import ContactTypeCodeTaken, CrmkitError
from ..i18n import format_datetime, t
from ..teams import activation, replies
from ..teams.sessions import reopen_notice
from .common import ErrorBox
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["TeamsSettings"]


class TeamsSettings(widgets.VBox):
    """The Teams activation switch with its notices.

    Attributes (for tests and dashboards): ``enabled`` (the checkbox), ``status`` (HTML notice),
    ``sessions`` (HTML list of sessions to reopen), ``error`` (:class:`ErrorBox`),
    ``open_contact_types`` (the refusal's way out: shown when TS is taken and the page passed
    ``on_open_contact_types``, which is called with the code of the type holding it).
    """

    def __init__(self, crm: CRM, lang: str | None = None, *,
                 on_open_contact_types: Callable[[str], None] | None = None) -> None:
        self.crm = crm
        self.lang = lang or crm.language
        self.may_change = crm.user.can("teams.admin")
        self._on_open_contact_types = on_open_contact_types
        # The three texts never change their layout or style: they share one Layout and one style
        # model (fewer models for the browser to receive and build before the page is interactive).
        fixed, text_style = widgets.Layout(), HTMLStyle()
        self.title = widgets.HTML(f"<h3>{html.escape(t('teams.settings', self.lang))}</h3>", layout=fixed,
                                  style=text_style)
        enabled = activation.is_enabled(crm)  # read once: the checkbox and the reopen notice share it
        self.enabled = widgets.Checkbox(
            value=enabled, description=t("teams.enable", self.lang), indent=False,
            disabled=not self.may_change, _dom_classes=("crmkit-teams-enable",),
        )
        disable_without((self.enabled,), crm.user, ("teams.admin",), self.lang)
        # Texts and classes go into the constructors: a change after construction is one more
        # message to the browser before the page is interactive.
        self.status = widgets.HTML(self._status_html(enabled), layout=fixed, style=text_style,
                                   _dom_classes=("crmkit-teams-status",))
        self.sessions = widgets.HTML(self._sessions_html(), layout=fixed, style=text_style,
                                     _dom_classes=("crmkit-teams-reopen-sessions",))
        self.error = ErrorBox()
        self._open_button: widgets.Button | None = None  # made when first needed (the TS refusal)
        self._syncing = False
        self.enabled.observe(self._changed, "value")
        self._fixed, self._text_style = fixed, text_style
        self.file_replies: widgets.Checkbox | None = None  # offered once the integration is on
        self.file_replies_help: widgets.HTML | None = None
        parts = [self.title, self.enabled, self.status, self.error, self.sessions]
        if enabled:
            parts += self._replies_parts()
        super().__init__(parts, _dom_classes=("crmkit-teams-settings",))

    def _replies_parts(self) -> list[widgets.Widget]:
        """»Antworten aus Teams am Datensatz ablegen« (crmkit.teams.replies, a Teams administrator's opt-in) and what
        it does; sharing the switch's layout and style (two models more)."""
        self.file_replies = widgets.Checkbox(
            value=bool(self.crm.setting(replies.SETTING)), description=t("teams_settings.file_replies", self.lang),
            indent=False, disabled=not self.may_change, layout=self.enabled.layout, style=self.enabled.style,
            _dom_classes=("crmkit-teams-file-replies",))
        disable_without((self.file_replies,), self.crm.user, ("teams.admin",), self.lang)
        self.file_replies_help = widgets.HTML(
            f'<p class="crmkit-muted">{html.escape(t("teams_settings.file_replies_help", self.lang))}</p>',
            layout=self._fixed, style=self._text_style, _dom_classes=("crmkit-teams-file-replies-help",))
        self.file_replies.observe(self._replies_changed, "value")
        return [self.file_replies, self.file_replies_help]

    @property
    def open_contact_types(self) -> widgets.Button:
        """The refusal's way out; built on first use (most visits never see it), hidden until then."""
        if self._open_button is None:
            button = widgets.Button(description=t("teams_settings.open_contact_types", self.lang),
                                    icon="external-link",
                                    layout=widgets.Layout(display="none", width="auto", align_self="flex-start"))
            button.add_class("crmkit-open-contact-types")
            button.on_click(lambda _b: self._open_contact_types())
            self._open_button = button
            children = list(self.children)
            children.insert(children.index(self.error) + 1, button)
            self.children = tuple(children)
        return self._open_button

    def _hide_open_contact_types(self) -> None:
        if self._open_button is not None:
            self._open_button.layout.display = "none"

    def refresh(self, *, enabled: bool | None = None) -> None:
        """Re-read the setting (unless the caller just read it: ``enabled``), this session's notice
        and the sessions to reopen."""
        if enabled is None:
            enabled = activation.is_enabled(self.crm)
        self._set_checkbox(enabled)
        self.status.value = self._status_html(enabled)
        self.sessions.value = self._sessions_html()
        if enabled and self.file_replies is None:
            self.children = (*self.children, *self._replies_parts())

    def _status_html(self, enabled: bool) -> str:
        parts = []
        if not self.may_change:
            parts.append(f"<i>{html.escape(t('teams_settings.no_right', self.lang))}</i>")
        notice = reopen_notice(self.crm, self.lang, enabled=enabled)
        if notice:
            parts.append(f'<div class="crmkit-teams-reopen" role="status"><b>{html.escape(notice)}</b></div>')
        return "".join(parts)

    def _sessions_html(self) -> str:
        if not self.may_change:
            return ""
        frame = activation.open_sessions_needing_reopen(self.crm)
        if frame.empty:
            return ""
        own = getattr(self.crm, "session_id", None)
        users = dict(self.crm.users()[["name", "display_name"]].itertuples(index=False))  # names, not logins
        items = "".join(
            "<li>" + html.escape(t(
                "teams_settings.session_row", self.lang, user=users.get(row.user_name, row.user_name),
                host=row.host, pid=row.pid,
                opened=format_datetime(row.opened_at, self.lang),
            )) + (" ←" if row.id == own else "") + "</li>"
            for row in frame.itertuples()
        )
        return f"<div>{html.escape(t('teams_settings.reopen_sessions', self.lang))}<ul>{items}</ul></div>"

    def _set_checkbox(self, value: bool) -> None:
        self._syncing = True
        try:
            self.enabled.value = value
        finally:
            self._syncing = False

    def _changed(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        wanted = bool(change["new"])
        try:
            activation.set_enabled(self.crm, wanted)
        except ContactTypeCodeTaken as exc:
            self._set_checkbox(not wanted)
            self.error.show(None, self.lang)
            self.error.value = _code_taken_html(exc, self.lang)
            self.error.layout.display = None
            self.error.exc = exc
            way_out = self._on_open_contact_types is not None and contact_types.may_edit(self.crm)
            self.open_contact_types.layout.display = None if way_out else "none"
            return
        except CrmkitError as exc:
            self._set_checkbox(not wanted)
            self.error.show(exc, self.lang)
            self._hide_open_contact_types()
            return
        self.error.show(None, self.lang)
        self._hide_open_contact_types()
        self.refresh()
        done = t("teams_settings.enabled_ok" if wanted else "teams_settings.disabled_ok", self.lang)
        self.status.value = f"<div>{html.escape(done)}</div>" + self.status.value


    def _replies_changed(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        try:
            self.crm.set_setting(replies.SETTING, bool(change["new"]))
        except CrmkitError as exc:
            self._syncing = True
            try:
                if self.file_replies is not None:
                    self.file_replies.value = not change["new"]
            finally:
                self._syncing = False
            self.error.show(exc, self.lang)
            return
        self.error.show(None, self.lang)

    def _open_contact_types(self) -> None:
        """The refusal's button: the page shows its contact types, on the type that holds the code."""
        if self._on_open_contact_types is None:
            return
        exc = self.error.exc
        self._on_open_contact_types(str(getattr(exc, "code", activation.TEAMS_CONTACT_TYPE_CODE)))


def _code_taken_html(exc: ContactTypeCodeTaken, lang: str) -> str:
    code = getattr(exc, "code", "TS")
    label = getattr(exc, "taken_by", "?")
    text = t("teams_settings.code_taken", lang, code=code, label=label)
    return (f'<div role="alert" class="crmkit-teams-code-taken" style="color:#a4000f;padding:4px 0">'
            f"<b>{html.escape(t('teams_settings.not_enabled', lang))}</b><br>{html.escape(text)}</div>")
