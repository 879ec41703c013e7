"""The dialog »MS Teams Nachricht versenden« of a campaign reaction action, and its recipients picker.

A thin view over :class:`crmkit.campaigns.Campaigns`: the campaign account is shown as the default
sender (the only one there is), recipients come from the directory, the message is a template
with record placeholders, and the send options follow the product decision (timing, record
contact, record in the Teams display format, 1:1 or group chat, importance, skip blocked
addresses). Saving validates in the core; errors show in the dialog and nothing is saved.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..campaigns import PLACEHOLDERS
from ..campaigns._template import CONTEXT_PLACEHOLDERS
from ..i18n import field_label, format_datetime, t
from ..i18n.dates import parse_datetime
from ..teams.options import CAMPAIGN_OPTIONS, CHOICES, label_key
from .common import ErrorBox
from .rights_hint import apply_right

if TYPE_CHECKING:
    from ..campaigns import Campaigns, TeamsAction

__all__ = ["RecipientsPicker", "TeamsActionDialog"]

_WIDE = widgets.Layout(width="95%")
_LABEL = {"description_width": "initial"}


class RecipientsPicker(widgets.VBox):
    """Search the directory, pick people; ``recipients`` is the picked list of ``{id, name, upn}``."""

    def __init__(self, search: Callable[[str], Any], lang: str,
                 recipients: list[dict[str, str]] | None = None) -> None:
        self._search_fn = search
        self.lang = lang
        self.recipients: list[dict[str, str]] = list(recipients or [])
        self._found: dict[str, dict[str, str]] = {}
        self.query = widgets.Text(placeholder=t("campaigns.search_placeholder", lang), continuous_update=False)
        self.query.add_class("crmkit-recipient-query")
        self.search_button = widgets.Button(description=t("campaigns.search", lang), icon="search")
        self.search_button.add_class("crmkit-recipient-search")
        self.results = widgets.SelectMultiple(options=[], rows=5, layout=widgets.Layout(width="60%"))
        self.results.add_class("crmkit-recipient-results")
        self.add_button = widgets.Button(description=t("campaigns.add", lang), icon="plus")
        self.add_button.add_class("crmkit-recipient-add")
        self.chosen = widgets.SelectMultiple(options=[], rows=4, layout=widgets.Layout(width="60%"))
        self.chosen.add_class("crmkit-recipients-chosen")
        self.remove_button = widgets.Button(description=t("campaigns.remove", lang), icon="minus")
        self.remove_button.add_class("crmkit-recipient-remove")
        self.error = ErrorBox()
        self.search_button.on_click(lambda _b: self.search())
        self.query.observe(lambda _c: self.search(), "value")
        self.add_button.on_click(lambda _b: self.add_selected())
        self.remove_button.on_click(lambda _b: self.remove_selected())
        super().__init__([
            widgets.HTML(f"<b>{html.escape(t('campaigns.recipients', lang))}</b>"),
            widgets.HBox([self.query, self.search_button]),
            widgets.HBox([self.results, self.add_button]),
            widgets.HBox([self.chosen, self.remove_button]),
            self.error,
        ])
        self.add_class("crmkit-recipients-picker")
        self._show_chosen()

    def search(self) -> None:
        try:
            frame = self._search_fn(self.query.value.strip())
        except Exception as exc:
            self.error.show(exc, self.lang)
            return
        self.error.show(None, self.lang)
        self._found = {}
        for row in frame.astype(object).where(frame.notna(), None).to_dict("records"):
            upn = row.get("userPrincipalName") or ""
            self._found[str(row["id"])] = {"id": str(row["id"]), "name": str(row.get("displayName") or upn),
                                          "upn": str(upn)}
        self.results.options = [(f"{p['name']} <{p['upn']}>", key) for key, p in self._found.items()]

    def add_selected(self) -> None:
        known = {r["id"] for r in self.recipients}
        self.recipients += [self._found[k] for k in self.results.value if k not in known]
        self._show_chosen()

    def remove_selected(self) -> None:
        drop = set(self.chosen.value)
        self.recipients = [r for r in self.recipients if r["id"] not in drop]
        self._show_chosen()

    def _show_chosen(self) -> None:
        self.chosen.options = [(f"{r['name']} <{r.get('upn') or r['id']}>", r["id"]) for r in self.recipients]


class TeamsActionDialog(widgets.VBox):
    """»MS Teams Nachricht versenden«: edit a new or an existing "Send message in Microsoft Teams" action.

    Args:
        campaigns: the service (rights are checked there).
        reaction_id: the reaction the action belongs to.
        description: the description given with »Neu« (for a new action).
        action: an existing action to edit instead.
        on_done: called with the saved action id, or None when cancelled.
    """

    def __init__(self, campaigns: Campaigns, reaction_id: int, *, description: str = "",
                 action: TeamsAction | None = None, on_done: Callable[[int | None], None] | None = None,
                 lang: str | None = None) -> None:
        self.campaigns = campaigns
        self.reaction_id = reaction_id
        self.action = action
        self.on_done = on_done
        self.lang = lang = lang or campaigns.crm.language
        self.saved_id: int | None = None
        self.title = widgets.HTML(f"<h4>{html.escape(t('campaigns.dialog_title', lang))}</h4>")
        self.sender = widgets.HTML()
        self.sender.add_class("crmkit-action-sender")
        self.description = widgets.Text(value=action.description if action else description,
                                        description=t("campaigns.description", lang), style=_LABEL, layout=_WIDE)
        self.description.add_class("crmkit-action-description")
        self.picker = RecipientsPicker(campaigns.directory, lang, action.recipients if action else None)
        self.subject = widgets.Text(value=action.subject if action else "", description=t("campaigns.subject", lang),
                                    style=_LABEL, layout=_WIDE, placeholder=t("campaigns.subject_hint", lang))
        self.subject.add_class("crmkit-action-subject")
        self.message = widgets.Textarea(value=action.message if action else "",
                                        description=t("campaigns.message", lang), style=_LABEL,
                                        layout=widgets.Layout(width="95%", height="7em"))
        self.message.add_class("crmkit-action-message")
        # Each placeholder as it is typed, with the field's label: the key alone is not the user's language.
        names = ", ".join("{" + p + "} (" + (t(f"campaigns.{p}", lang) if p in CONTEXT_PLACEHOLDERS
                                             else field_label(p, lang)) + ")" for p in PLACEHOLDERS)
        hint = t("campaigns.placeholders_hint", lang, names=names)
        self.hint = widgets.HTML(f'<p class="crmkit-muted">{html.escape(hint)}</p>')
        self.timing = widgets.Dropdown(
            options=[(t(f"campaigns.timing.{k}", lang), k) for k in ("immediately", "delay", "at")],
            value=action.timing if action else "immediately", description=t("campaigns.timing", lang), style=_LABEL)
        self.timing.add_class("crmkit-action-timing")
        minutes = int(action.delay.total_seconds() // 60) if action and action.delay else 60
        self.delay = widgets.BoundedIntText(value=max(minutes, 1), min=1, max=60 * 24 * 365,
                                            description=t("campaigns.delay_minutes", lang), style=_LABEL)
        self.delay.add_class("crmkit-action-delay")
        local_at = action.at.replace(tzinfo=UTC).astimezone().replace(tzinfo=None) if action and action.at else None
        # Text, not a date picker: a native date field writes dates as the browser's locale does, not as the
        # user's language does; this one takes "31.12.2026 14:30" (German) or "2026-12-31 14:30" (English).
        self.at = widgets.Text(value=format_datetime(local_at, lang), description=t("campaigns.at", lang),
                               placeholder=t("common.datetime_placeholder", lang), style=_LABEL)
        self.at.add_class("crmkit-action-at")
        self.record_contact = widgets.Checkbox(value=action.record_contact if action else True,
                                               description=t("teams.record_contact", lang), indent=False)
        self.record_contact.add_class("crmkit-action-record-contact")
        self.include_record = widgets.Checkbox(value=action.include_record if action else True,
                                               description=t("campaigns.include_record", lang), indent=False,
                                               layout=widgets.Layout(width="auto"))
        # The choices of crmkit.teams.options, labelled from the catalog (chat as toggle buttons).
        self._choices = [n for n in CAMPAIGN_OPTIONS if n in CHOICES]
        for name in self._choices:
            control = widgets.ToggleButtons if name == "chat" else widgets.Dropdown
            setattr(self, name, control(
                options=[(t(label_key(name, "campaigns", v), lang), v) for v in CHOICES[name].values],
                value=getattr(action, name) if action else CHOICES[name].default,
                description=t(label_key(name, "campaigns"), lang), style=_LABEL))
        self.skip_blocked = widgets.Checkbox(value=action.skip_blocked if action else True,
                                             description=t("campaigns.skip_blocked", lang), indent=False)
        self.options_box = widgets.VBox([
            widgets.HTML(f"<b>{html.escape(t('campaigns.send_options', lang))}</b>"),
            widgets.HBox([self.timing, self.delay, self.at]), self.record_contact,
            # "include the record" beside the first choice (the layout), then the others (chat, importance)
            widgets.HBox([self.include_record, getattr(self, self._choices[0])]),
            *(getattr(self, name) for name in self._choices[1:]), self.skip_blocked,
        ])
        self.options_box.add_class("crmkit-action-options")
        self.ok = widgets.Button(description=t("campaigns.ok", lang), button_style="primary", icon="check")
        self.ok.add_class("crmkit-action-ok")
        # Saving needs campaign.admin: say so on the button; save() still goes to the core, which checks.
        apply_right(self.ok, campaigns.crm, "campaign.admin", lang)
        self.cancel = widgets.Button(description=t("campaigns.cancel", lang))
        self.cancel.add_class("crmkit-action-cancel")
        self.error = ErrorBox()
        self.timing.observe(lambda _c: self._timing_changed(), "value")
        self.ok.on_click(lambda _b: self.save())
        self.cancel.on_click(lambda _b: self._close(None))
        super().__init__([self.title, self.sender, self.description, self.picker, self.subject, self.message,
                          self.hint, self.options_box, self.error, widgets.HBox([self.ok, self.cancel])],
                         layout=widgets.Layout(border="1px solid #bbb", padding="8px"))
        self.add_class("crmkit-teams-action-dialog")
        self._timing_changed()
        self._show_sender()

    def _show_sender(self) -> None:
        label = html.escape(t("campaigns.default_sender", self.lang))
        try:
            info = self.campaigns.sender()
        except Exception as exc:
            self.error.show(exc, self.lang)
            info = None
        if info is None:
            self.sender.value = (f'<p>{label}: <span style="color:#8a5300">'
                                 f'{html.escape(t("campaigns.no_sender", self.lang))}</span></p>')
        else:
            name = f"{info.display_name} <{info.username}>" if info.display_name else info.username
            self.sender.value = f'<p>{label}: <b class="crmkit-sender-name">{html.escape(name)}</b></p>'

    def _timing_changed(self) -> None:
        self.delay.layout.display = None if self.timing.value == "delay" else "none"
        self.at.layout.display = None if self.timing.value == "at" else "none"

    def values(self) -> dict[str, Any]:
        """The form as keyword arguments of :meth:`Campaigns.add_teams_action`."""
        at = parse_datetime(self.at.value, self.lang) if self.timing.value == "at" else None
        return {
            "description": self.description.value, "recipients": list(self.picker.recipients),
            "subject": self.subject.value, "message": self.message.value, "timing": self.timing.value,
            "delay": timedelta(minutes=self.delay.value) if self.timing.value == "delay" else None,
            "at": at.astimezone() if isinstance(at, datetime) and self.timing.value == "at" else None,
            "record_contact": self.record_contact.value, "include_record": self.include_record.value,
            **{name: getattr(self, name).value for name in self._choices}, "skip_blocked": self.skip_blocked.value,
        }

    def save(self) -> int | None:
        """»OK«: validate and save in the core; the dialog stays open with the reason if that fails."""
        try:
            values = self.values()
            if self.action is None:
                description = values.pop("description")
                recipients = values.pop("recipients")
                self.saved_id = self.campaigns.add_teams_action(self.reaction_id, description,
                                                                recipients=recipients, **values)
            else:
                self.saved_id = self.campaigns.update_action(self.action.id, **values).id
        except Exception as exc:
            self.error.show(exc, self.lang)
            return None
        self.error.show(None, self.lang)
        self._close(self.saved_id)
        return self.saved_id

    def _close(self, action_id: int | None) -> None:
        if self.on_done is not None:
            self.on_done(action_id)
