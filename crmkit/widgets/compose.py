"""The compose dialog »Datensatz per Teams senden« / "Send record via Teams".

Two parts, as everywhere in :mod:`crmkit.widgets`:

* :class:`~crmkit.widgets.compose_model.ComposeModel` (its own module, no ipywidgets) holds the state
  and runs the work (people-picker search, preview, send in a background thread with progress and
  cancel, the device-code sign-in when the user has no Teams account yet); tests drive it directly.
* :class:`ComposeDialog` here binds the model to widgets and does nothing else.

Everything the dialog shows about a message (subject, body, card, field names) comes from the core
(:meth:`crmkit.teams.send.TeamsService.preview`), already escaped; the view escapes what it adds.

Layout (CSS classes in brackets, for browser tests)::

    [crmkit-compose]
      title, "n records selected"
      search [crmkit-compose-search] → suggestions [crmkit-compose-suggestion] (click adds)
      chosen people [crmkit-compose-chip] (click removes)
      "cobra CRM - " [crmkit-compose-prefix] + subject [crmkit-compose-subject]
      message [crmkit-compose-message]   Kontakt erfassen [crmkit-compose-record-contact]
      Versandoptionen (accordion): chat, mode, format, include record, importance, purpose
      Vorschau [crmkit-compose-preview-button]  Absenden [crmkit-compose-send]
      Abbrechen [crmkit-compose-cancel]  Schließen [crmkit-compose-close]
      Neue Nachricht [crmkit-compose-new] (only once a send is over)
      progress [crmkit-compose-progress]  status [crmkit-compose-status]
      sign-in panel [crmkit-signin-prompt …]   error [crmkit-error]
      results [crmkit-compose-results]   preview [crmkit-compose-preview]
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..i18n import format_count, t
from ..teams.display_format import card_to_html
from ..teams.options import CHOICES, COMPOSE_CHOICES, FILE_THRESHOLD, IMPORTANCE, label_key
from .accounts import SignInPanel
from .common import ErrorBox
from .compose_model import SUGGESTIONS, ComposeModel, person_label

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["IMPORTANCE", "ComposeDialog", "ComposeModel"]

PREVIEW_LIMIT = 10  # messages rendered in the preview; the count names the rest
RESULT_ROWS = 500


# -- view ------------------------------------------------------------------------------------------------

def _h(value: object) -> str:
    return html.escape(str(value), quote=True)


def _labelled(widget: widgets.Widget, lang: str, key: str) -> widgets.Widget:
    widget.description = t(key, lang)
    widget.style = {"description_width": "initial"}
    return widget


class ComposeDialog(widgets.VBox):
    """The compose dialog over a :class:`ComposeModel`.

    Args:
        crm: the session (ignored when ``model`` is given).
        address_ids: the records to send.
        model: an existing model to bind.
        on_close: called when the user presses Close.
        debounce: see :class:`ComposeModel`.
    """

    def __init__(self, crm: CRM | None = None, address_ids: Sequence[int] = (), *, model: ComposeModel | None = None,
                 on_close: Callable[[ComposeDialog], None] | None = None, debounce: float = 0.3) -> None:
        if model is None:
            if crm is None:
                raise TypeError("ComposeDialog needs a crm or a model")
            model = ComposeModel(crm, address_ids, debounce=debounce)
        self.model = model
        self.lang = lang = model.language
        self._on_close = on_close
        n = len(model.address_ids)

        self.title = widgets.HTML(f"<h3 style='margin:4px 0'>{_h(t('compose.title', lang))}</h3>")
        self.records = widgets.HTML(_h(t("compose.records_one", lang) if n == 1 else
                                       t("compose.records", lang, n=format_count(n, lang))))
        self.records.add_class("crmkit-compose-records")

        # people picker
        self.search = widgets.Text(placeholder=t("compose.search_placeholder", lang), continuous_update=True,
                                   layout=widgets.Layout(width="420px"))
        _labelled(self.search, lang, "compose.search")
        self.search.add_class("crmkit-compose-search")
        self.search.observe(lambda c: setattr(model, "search_text", c["new"]), "value")
        # A UPN, e-mail address or object id typed in full is added as is (looked up by the core).
        self.add_button = widgets.Button(description=t("compose.add", lang), icon="user-plus",
                                         tooltip=t("compose.add_hint", lang), layout=widgets.Layout(width="auto"))
        self.add_button.add_class("crmkit-compose-add")
        self.add_button.on_click(lambda _b: self._add_typed())
        self.no_match = widgets.HTML()
        self._suggestion_buttons: list[widgets.Button] = []
        for _ in range(SUGGESTIONS):
            button = widgets.Button(icon="plus", layout=widgets.Layout(width="auto", display="none"))
            button.add_class("crmkit-compose-suggestion")
            button.on_click(self._suggestion_clicked)
            self._suggestion_buttons.append(button)
        self.suggestions = widgets.HBox([*self._suggestion_buttons, self.no_match],
                                        layout=widgets.Layout(flex_flow="row wrap"))
        self.chosen_label = widgets.HTML(f"<b>{_h(t('teams.recipients', lang))}:</b>")
        self.chosen = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        self.chosen.add_class("crmkit-compose-chosen")
        # shown once people and a channel are chosen: @mention the people in the channel post instead
        self.mention_people = widgets.Checkbox(value=model.mention_people, indent=False,
                                               description=t("compose.mention_people", lang),
                                               layout=widgets.Layout(display="none", width="auto"))
        self.mention_people.add_class("crmkit-compose-mention")

        # subject, message, contact
        self.prefix = widgets.HTML(f"<span style='white-space:pre'>{_h(model.prefix)}</span>")
        self.prefix.add_class("crmkit-compose-prefix")
        self.subject = widgets.Text(layout=widgets.Layout(width="360px"))
        self.subject.add_class("crmkit-compose-subject")
        self.message = widgets.Textarea(layout=widgets.Layout(width="560px", height="90px"))
        _labelled(self.message, lang, "teams.message")
        self.message.add_class("crmkit-compose-message")
        self.record_contact = widgets.Checkbox(value=model.record_contact, indent=False)
        self.record_contact.description = t("teams.record_contact", lang)
        self.record_contact.add_class("crmkit-compose-record-contact")

        # send options: one dropdown per choice of crmkit.teams.options, labelled from the catalog
        for name in COMPOSE_CHOICES:
            values = CHOICES[name].values
            dropdown = widgets.Dropdown(options=[(t(label_key(name, "compose", v), lang), v) for v in values],
                                        value=getattr(model, name))
            setattr(self, name, _labelled(dropdown, lang, label_key(name, "compose")))
        self.include_record = widgets.Checkbox(value=model.include_record, indent=False,
                                               description=t("compose.include_record", lang))
        # »Als eine Datei senden«: offered above the threshold only (crmkit/teams/file_send.py)
        self.as_file = widgets.Checkbox(value=model.as_file, indent=False, description=t("compose.as_file", lang),
                                        layout=widgets.Layout(width="auto"))
        self.as_file.add_class("crmkit-compose-as-file")
        as_file_hint = widgets.HTML("<small>" + _h(t("compose.as_file.hint", lang, count=format_count(n, lang),
                                                      threshold=FILE_THRESHOLD)) + "</small>")
        self.as_file_box = widgets.VBox([self.as_file, as_file_hint],
                                        layout=widgets.Layout(display=None if model.file_offered else "none"))
        self.purpose = widgets.Text(layout=widgets.Layout(width="560px"))
        _labelled(self.purpose, lang, "compose.purpose")
        self.purpose.add_class("crmkit-compose-purpose")
        purpose_note = widgets.HTML(f"<small>{_h(t('compose.purpose_required', lang))}</small>")
        self.purpose_box = purpose_box = widgets.VBox([self.purpose, purpose_note],
                                   layout=widgets.Layout(display=None if model.purpose_required else "none"))
        # chat and mode on the first row; the other choices and "include the record" on the second
        choices = [getattr(self, name) for name in COMPOSE_CHOICES]
        self.options = widgets.Accordion(children=[widgets.VBox([
            widgets.HBox(choices[:2], layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([*choices[2:], self.include_record], layout=widgets.Layout(flex_flow="row wrap")),
            self.as_file_box,
        ])], titles=(t("teams.send_options", lang),))
        self.options.add_class("crmkit-compose-options")

        # actions and feedback
        self.preview_button = widgets.Button(description=t("compose.preview", lang), icon="eye")
        self.preview_button.add_class("crmkit-compose-preview-button")
        self.send_button = widgets.Button(description=t("teams.send", lang), icon="paper-plane",
                                          button_style="primary")
        self.send_button.add_class("crmkit-compose-send")
        self.cancel_button = widgets.Button(description=t("common.cancel", lang), icon="times", disabled=True)
        self.cancel_button.add_class("crmkit-compose-cancel")
        self.close_button = widgets.Button(description=t("compose.close", lang))
        self.close_button.add_class("crmkit-compose-close")
        self.new_button = widgets.Button(description=t("compose.new_message", lang), icon="plus",
                                         layout=widgets.Layout(display="none"))
        self.new_button.add_class("crmkit-compose-new")
        self.progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(display="none"))
        self.progress.add_class("crmkit-compose-progress")
        self.status = widgets.HTML()
        self.status.add_class("crmkit-compose-status")
        self.sign_in_panel = SignInPanel(lang)
        self.sign_in_panel.add_class("crmkit-compose-sign-in")
        self.sign_in_note = widgets.HTML()
        self.error = ErrorBox()
        self.preview = widgets.HTML()
        self.preview.add_class("crmkit-compose-preview")
        self.results = widgets.HTML()
        self.results.add_class("crmkit-compose-results")

        super().__init__([
            self.title, self.records, widgets.HBox([self.search, self.add_button]), self.suggestions,
            widgets.HBox([self.chosen_label, self.chosen], layout=widgets.Layout(align_items="center")),
            self.mention_people,
            widgets.HBox([widgets.Label(t("teams.subject", lang), layout=widgets.Layout(margin="0 8px 0 0")),
                          self.prefix, self.subject],
                         layout=widgets.Layout(align_items="center")),
            self.message, self.record_contact, purpose_box, self.options,
            widgets.HBox([self.preview_button, self.send_button, self.cancel_button, self.close_button,
                          self.new_button]),
            widgets.HBox([self.progress, self.status], layout=widgets.Layout(align_items="center")),
            self.sign_in_note, self.sign_in_panel, self.error, self.results, self.preview,
        ], layout=widgets.Layout(border="1px solid #c8c8c8", padding="8px", margin="8px 0"))
        self.add_class("crmkit-compose")

        # widgets → model
        for name in ("subject", "message", "record_contact", *COMPOSE_CHOICES, "include_record", "as_file", "purpose",
                     "mention_people"):
            getattr(self, name).observe(lambda c, name=name: setattr(model, name, c["new"]), "value")
        self.preview_button.on_click(lambda _b: model.run_preview())
        self.send_button.on_click(lambda _b: model.send())
        self.cancel_button.on_click(lambda _b: model.cancel())
        self.close_button.on_click(lambda _b: self.close_dialog())
        self.new_button.on_click(lambda _b: model.new_message())
        # model → widgets (some of these fire on background threads; they only assign widget values)
        model.observe(lambda _c: self._render_suggestions(), ["suggestions", "searched"])
        model.observe(lambda _c: self._render_chosen(), "recipients")
        model.observe(lambda _c: self._render_state(), ["state", "progress"])
        model.observe(lambda _c: self._render_preview(), "preview")
        model.observe(lambda _c: self._render_results(), "results")
        model.observe(lambda _c: self.error.show(model.error, lang), "error")
        model.observe(self._sign_in_changed, ["sign_in", "sign_in_status"])
        model.observe(lambda _c: self._render_new_compose(), "compose_key")
        self._render_chosen()
        self._render_state()

    # -- events ----------------------------------------------------------------------------------------

    def _suggestion_clicked(self, button: widgets.Button) -> None:
        person = getattr(button, "_crmkit_person", None)
        if person is not None:
            self.model.add_recipient(person)
            self.search.value = ""  # ready for the next name

    def _add_typed(self) -> None:
        if self.model.add_typed(self.search.value):
            self.search.value = ""  # ready for the next name

    def close_dialog(self) -> None:
        """Close: stop a running send or sign-in, then tell the owner (the Teams action hides us)."""
        self.model.cancel()
        if self._on_close is not None:
            self._on_close(self)

    # -- rendering -------------------------------------------------------------------------------------

    def _render_suggestions(self) -> None:
        people = self.model.suggestions
        for i, button in enumerate(self._suggestion_buttons):
            if i < len(people):
                button._crmkit_person = people[i]  # type: ignore[attr-defined]
                channel = people[i].get("kind") == "channel"
                button.description = person_label(people[i])
                button.tooltip = (f"{t('compose.channel', self.lang)}: {people[i]['displayName']}" if channel
                                  else person_label(people[i]))
                button.icon = "users" if channel else "plus"
                button.layout.display = None
            else:
                button._crmkit_person = None  # type: ignore[attr-defined]
                button.layout.display = "none"
        searched = bool(self.model.searched) and self.model.searched == self.model.search_text.strip()
        self.no_match.value = (f"<i>{_h(t('compose.no_match', self.lang))}</i>"
                               if searched and not people and self.model.error is None else "")

    def _render_chosen(self) -> None:
        chips: list[widgets.Widget] = []
        for person in self.model.recipients:
            chip = widgets.Button(description=person.get("displayName") or person_label(person), icon="times",
                                  tooltip=f"{t('compose.remove_recipient', self.lang)}: {person_label(person)}",
                                  layout=widgets.Layout(width="auto"))
            chip.add_class("crmkit-compose-chip")
            chip.on_click(lambda _b, pid=person["id"]: self.model.remove_recipient(pid))
            chips.append(chip)
        if not chips:
            chips.append(widgets.HTML(f"<i>{_h(t('compose.no_recipients', self.lang))}</i>"))
        kinds = {p.get("kind") == "channel" for p in self.model.recipients}
        self.mention_people.layout.display = None if kinds == {True, False} else "none"
        old = self.chosen.children
        self.chosen.children = tuple(chips)
        for w in old:
            w.close()

    def _render_new_compose(self) -> None:
        """A new compose: the form shows the model's emptied fields, the old outcome goes."""
        model = self.model
        self.search.value = ""
        for name in ("subject", "message", "record_contact", "purpose"):
            getattr(self, name).value = getattr(model, name)
        self.progress.layout.display = "none"
        self.progress.bar_style = ""
        self.status.value = ""

    def _render_state(self) -> None:
        model, lang = self.model, self.lang
        state = model.state
        running = state in ("sending", "cancelling")
        # Sent (or cancelled): the form is what went out; only »Neue Nachricht« starts another.
        finished = state in ("done", "cancelled")
        for w in (self.send_button, self.preview_button, self.search, self.add_button, self.subject, self.message,
                  self.record_contact):
            w.disabled = running or state == "signing_in" or finished
        self.cancel_button.disabled = state != "sending"
        self.new_button.layout.display = None if finished else "none"
        progress = model.progress
        if progress is not None and state in ("sending", "cancelling", "done", "cancelled"):
            self.progress.layout.display = None
            self.progress.max = max(1, progress.total)
            self.progress.value = min(progress.done, self.progress.max)
        if state == "sending":
            self.status.value = _h(t("compose.progress", lang, done=progress.done, total=progress.total,
                                     sent=progress.sent, failed=progress.failed)
                                   if progress is not None and progress.total else t("compose.preparing", lang))
        elif state == "cancelling":
            self.status.value = _h(t("compose.cancelling", lang))
        elif state in ("done", "cancelled"):
            counts = model.counts()
            key = "compose.done" if state == "done" else "compose.cancelled"
            self.progress.bar_style = "success" if state == "done" and not counts.get("failed") else "warning"
            text = t(key, lang, sent=counts.get("sent", 0), failed=counts.get("failed", 0),
                     blocked=counts.get("blocked", 0))
            self.status.value = f"<b>{_h(text)}</b>"
        elif state == "idle" and model.error is not None:
            self.status.value = ""

    def _render_preview(self) -> None:
        frame = self.model.preview
        if frame is None or frame.empty:
            self.preview.value = ""
            return
        lang = self.lang
        blocked_col = frame["blocked"] if "blocked" in frame.columns else pd.Series([None] * len(frame))
        is_blocked = blocked_col.notna() & (blocked_col.astype(str) != "")
        messages = frame[~is_blocked.to_numpy()]
        count = t("compose.preview_count", lang, n=format_count(len(messages), lang))
        if self.model.file_send and len(messages):  # one workbook of the records, attached in each chat
            count = t("compose.preview.file", lang, count=format_count(len(messages.iloc[0]["records"]), lang))
        parts = [f"<h4>{_h(t('compose.preview', lang))}</h4>",
                 f"<p class=\"crmkit-compose-preview-count\">{_h(count)}</p>"]
        for row in messages.head(PREVIEW_LIMIT).to_dict("records"):
            fields = ", ".join(row.get("fields") or [])
            meta = (f"{_h(t('compose.preview_to', lang))}: {_h(row['recipients'])} · "
                    f"{_h(round(int(row['size_bytes']) / 1024, 1))} KB")
            if fields:
                meta += f" · {_h(t('compose.preview_fields', lang))}: {_h(fields)}"
            card = row.get("card")
            card_html = ""
            if isinstance(card, str) and card:
                card_html = card_to_html(json.loads(card))
            elif isinstance(card, dict):
                card_html = card_to_html(card)
            # body_html is the exact body the core will post; record values and the text are escaped
            # or sanitised there. The subject is shown as Teams shows it: the message's heading line.
            subject = f"<div class=\"crmkit-compose-preview-subject\"><strong>{_h(row['subject'])}</strong></div>"
            parts.append(
                '<div class="crmkit-compose-message-preview" style="border:1px solid #ddd;border-radius:4px;'
                f'padding:6px;margin:6px 0"><div style="color:#555"><small>{meta}</small></div>{subject}'
                f"<div>{row['body_html'] or ''}</div>{card_html}</div>")
        if len(messages) > PREVIEW_LIMIT:
            parts.append(f"<p>{_h(t('compose.preview_more', lang, n=len(messages) - PREVIEW_LIMIT))}</p>")
        for row in frame[is_blocked.to_numpy()].to_dict("records"):
            text = t("compose.preview_blocked", lang, id=row["records"][0], reason=row["blocked"])
            parts.append(f"<p style='color:#a4000f'>{_h(text)}</p>")
        self.preview.value = "".join(parts)

    def _render_results(self) -> None:
        frame = self.model.results
        if frame is None or frame.empty:
            self.results.value = ""
            return
        lang = self.lang
        cols = ("record", "recipient", "status", "error")
        head = "".join(f"<th style='text-align:left;padding-right:12px'>{_h(t(f'compose.col.{c}', lang))}</th>"
                       for c in cols)
        rows = []
        for r in frame.head(RESULT_ROWS).itertuples(index=False):
            error = "" if r.error is None or (isinstance(r.error, float) and pd.isna(r.error)) else r.error
            cells = (r.record, r.recipient_name or r.recipient or "", t(f"compose.status.{r.status}", lang), error)
            rows.append(f'<tr data-status="{_h(r.status)}">' +
                        "".join(f"<td style='padding-right:12px'>{_h(c)}</td>" for c in cells) + "</tr>")
        self.results.value = (f"<h4>{_h(t('compose.results', lang))}</h4>"
                              f'<table class="crmkit-compose-result-rows"><tr>{head}</tr>{"".join(rows)}</table>')

    def _sign_in_changed(self, _change: dict[str, Any]) -> None:
        model = self.model
        sign_in = model.sign_in
        if sign_in is None:
            return
        if model.sign_in_status == "waiting":
            self.sign_in_note.value = f"<p><b>{_h(t('compose.sign_in_needed', self.lang))}</b></p>"
            self.sign_in_panel.start(sign_in)
        else:
            user = sign_in.result.username if sign_in.status == "signed_in" and sign_in.result else ""
            self.sign_in_note.value = ""
            self.sign_in_panel.finish(sign_in, t("compose.signed_in", self.lang, user=user))
