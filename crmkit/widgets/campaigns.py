"""Campaign views: the editor »Kampagnen einrichten«, recording reactions, and the runs of the actions.

Path through the editor, as in the reference: campaign → »Aktivitäts-Details« → »Reaktions-Details«
→ »Vorgänge der Reaktion…« → »Neu« → »Nachricht in Microsoft Teams versenden« with a
»Beschreibung« → »OK« → the dialog »MS Teams Nachricht versenden«
(:class:`~crmkit.widgets.campaign_action.TeamsActionDialog`).

Thin views over :class:`crmkit.campaigns.Campaigns`; rights are checked there (editing needs
``campaign.admin``, recording reactions any CRM user), the views only hide what cannot be used.
"""

from __future__ import annotations

import html
import logging
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import pandas as pd

from ..errors import CrmkitError, ValidationError
from ..i18n import format_datetime, t
from .campaign_action import TeamsActionDialog
from .common import ErrorBox, error_html
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..campaigns import Campaigns
    from ..crm import CRM

__all__ = ["CampaignEditor", "CampaignRuns", "CampaignsPage", "ReactionActions", "RecordReactions",
           "campaigns_dashboard"]

log = logging.getLogger(__name__)
_LABEL = {"description_width": "initial"}


def _options(frame: pd.DataFrame) -> list[tuple[str, int]]:
    return [(str(r.name), int(r.id)) for r in frame.itertuples()]


def _set_options(dropdown: widgets.Dropdown, options: list[tuple[str, int]], select: int | None = None) -> None:
    """New options; keep ``select`` (or the current value) when still there, else the first option."""
    keep = select if select is not None else dropdown.value
    dropdown.options = options
    values = [v for _label, v in options]
    dropdown.value = keep if keep in values else (values[0] if values else None)


# Without it the editing controls are disabled, their tooltip naming the right (rights_hint.disable_without,
# the one helper for that); the core refuses the calls anyway.
_EDIT_RIGHT = "campaign.admin"


def _ids(text: str) -> list[int]:
    out = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if part.strip():
            if not part.strip().isdigit():
                raise ValidationError(f"{part.strip()!r} is not an address number; write e.g. 1, 2, 3.")
            out.append(int(part))
    return out


class ReactionActions(widgets.VBox):
    """»Vorgänge der Reaktion…«: the actions of one reaction, »Neu« with type and description, then the dialog."""

    def __init__(self, campaigns: Campaigns, reaction_id: int, lang: str) -> None:
        self.campaigns = campaigns
        self.reaction_id = reaction_id
        self.lang = lang
        self.title = widgets.HTML(f"<h4>{html.escape(t('campaigns.reaction_actions', lang).rstrip('…'))}</h4>")
        self.table = widgets.HTML()
        self.table.add_class("crmkit-actions-table")
        self.new = widgets.Button(description=t("campaigns.new", lang), icon="plus")
        self.new.add_class("crmkit-action-new")
        self.may_edit = disable_without([self.new], campaigns.crm.user, [_EDIT_RIGHT], lang)
        self.kind = widgets.Dropdown(options=[(t("campaigns.action_type.teams_message", lang), "teams_message")],
                                     description=t("campaigns.action_type", lang), style=_LABEL)
        self.kind.add_class("crmkit-action-kind")
        self.description = widgets.Text(description=t("campaigns.description", lang), style=_LABEL,
                                        layout=widgets.Layout(width="60%"))
        self.description.add_class("crmkit-new-action-description")
        self.ok = widgets.Button(description=t("campaigns.ok", lang), button_style="primary")
        self.ok.add_class("crmkit-new-action-ok")
        self.chooser = widgets.VBox([self.kind, self.description, self.ok], layout=widgets.Layout(display="none"))
        self.chooser.add_class("crmkit-action-chooser")
        self.dialog_area = widgets.VBox()
        self.status = widgets.HTML()
        self.status.add_class("crmkit-actions-status")
        self.error = ErrorBox()
        self.new.on_click(lambda _b: self._show_chooser())
        self.ok.on_click(lambda _b: self.open_dialog())
        super().__init__([self.title, self.table, self.new, self.chooser, self.dialog_area, self.status, self.error],
                         layout=widgets.Layout(border="1px solid #ddd", padding="6px"))
        self.add_class("crmkit-reaction-actions")
        self.refresh()

    def refresh(self) -> None:
        frame = self.campaigns.actions(self.reaction_id)
        if frame.empty:
            self.table.value = f"<p><i>{html.escape(t('campaigns.no_actions', self.lang))}</i></p>"
            return
        kind = html.escape(t("campaigns.action_type.teams_message", self.lang))
        rows = "".join(
            f'<tr data-action-id="{int(r.id)}"><td>{kind}</td><td>{html.escape(str(r.description))}</td>'
            f"<td>{html.escape(t(f'campaigns.timing.{r.timing}', self.lang))}</td>"
            f"<td>{'✓' if r.active else '–'}</td></tr>" for r in frame.itertuples())
        self.table.value = f'<table class="crmkit-actions">{rows}</table>'

    def _show_chooser(self) -> None:
        self.chooser.layout.display = None
        self.status.value = ""

    def open_dialog(self, action_id: int | None = None) -> TeamsActionDialog | None:
        """»OK« after »Neu« (or edit ``action_id``): open »MS Teams Nachricht versenden«."""
        try:
            action = self.campaigns.action(action_id) if action_id is not None else None
            if action is None and not self.description.value.strip():
                raise ValidationError(t("campaigns.description_required", self.lang))
        except CrmkitError as exc:
            self.error.show(exc, self.lang)
            return None
        self.error.show(None, self.lang)
        self.chooser.layout.display = "none"
        dialog = TeamsActionDialog(self.campaigns, self.reaction_id, description=self.description.value.strip(),
                                   action=action, on_done=self._dialog_done, lang=self.lang)
        self.dialog_area.children = [dialog]
        return dialog

    def _dialog_done(self, action_id: int | None) -> None:
        self.dialog_area.children = []
        self.description.value = ""
        if action_id is not None:
            self.status.value = f'<p role="status">{html.escape(t("campaigns.saved", self.lang))}</p>'
        self.refresh()


def _picked(choice: widgets.Dropdown, pick_key: str, lang: str) -> Any:
    """The id selected in ``choice``; none selected is a ValidationError asking to pick one (``pick_key``) first,
    before anything is written (the one guard of the editor's add/open buttons)."""
    if choice.value is None:
        raise ValidationError(t(pick_key, lang))
    return choice.value


class CampaignEditor(widgets.VBox):
    """»Kampagnen einrichten«: campaigns, activity details with participants, reaction details and their actions."""

    def __init__(self, campaigns: Campaigns, lang: str | None = None) -> None:
        self.campaigns = campaigns
        self.lang = lang = lang or campaigns.crm.language
        self.campaign = widgets.Dropdown(description=t("campaigns.campaign", lang), style=_LABEL)
        self.campaign.add_class("crmkit-campaign-select")
        self.campaign_name = widgets.Text(placeholder=t("campaigns.name", lang))
        self.campaign_name.add_class("crmkit-campaign-name")
        self.campaign_new = widgets.Button(description=t("campaigns.new", lang), icon="plus")
        self.campaign_new.add_class("crmkit-campaign-new")
        self.activity = widgets.Dropdown(description=t("campaigns.activity", lang), style=_LABEL)
        self.activity.add_class("crmkit-activity-select")
        self.activity_name = widgets.Text(placeholder=t("campaigns.name", lang))
        self.activity_name.add_class("crmkit-activity-name")
        self.activity_new = widgets.Button(description=t("campaigns.new", lang), icon="plus")
        self.activity_new.add_class("crmkit-activity-new")
        self.participant_ids = widgets.Text(description=t("campaigns.participant_ids", lang), style=_LABEL,
                                            placeholder="1, 2, 3")
        self.participant_ids.add_class("crmkit-participant-ids")
        self.participants_add = widgets.Button(description=t("campaigns.add_participants", lang), icon="user-plus")
        self.participants_add.add_class("crmkit-participants-add")
        self.participants = widgets.HTML()
        self.participants.add_class("crmkit-participants")
        self.reaction = widgets.Dropdown(description=t("campaigns.reaction", lang), style=_LABEL)
        self.reaction.add_class("crmkit-reaction-select")
        self.reaction_name = widgets.Text(placeholder=t("campaigns.name", lang))
        self.reaction_name.add_class("crmkit-reaction-name")
        self.reaction_new = widgets.Button(description=t("campaigns.new", lang), icon="plus")
        self.reaction_new.add_class("crmkit-reaction-new")
        self.actions_button = widgets.Button(description=t("campaigns.reaction_actions", lang), icon="cogs")
        self.actions_button.add_class("crmkit-reaction-actions-open")
        self.actions_area = widgets.VBox()
        self.error = ErrorBox()
        self.may_edit = disable_without(
            [self.campaign_name, self.campaign_new, self.activity_name, self.activity_new, self.participant_ids,
             self.participants_add, self.reaction_name, self.reaction_new], campaigns.crm.user, [_EDIT_RIGHT], lang)
        self.campaign_new.on_click(lambda _b: self._act(self._new_campaign))
        self.activity_new.on_click(lambda _b: self._act(self._new_activity))
        self.participants_add.on_click(lambda _b: self._act(self._add_participants))
        self.reaction_new.on_click(lambda _b: self._act(self._new_reaction))
        self.actions_button.on_click(lambda _b: self._act(self.open_actions))
        self.campaign.observe(lambda _c: self._load_activities(), "value")
        self.activity.observe(lambda _c: self._load_reactions(), "value")
        self.reaction.observe(lambda _c: self._reaction_changed(), "value")
        section = widgets.Layout(border="1px solid #ddd", padding="6px", margin="4px 0")
        self.activity_box = widgets.VBox([
            widgets.HTML(f"<h4>{html.escape(t('campaigns.activity_details', lang))}</h4>"),
            widgets.HBox([self.activity, self.activity_name, self.activity_new]),
            widgets.HBox([self.participant_ids, self.participants_add]), self.participants,
        ], layout=section)
        self.activity_box.add_class("crmkit-activity-details")
        self.reaction_box = widgets.VBox([
            widgets.HTML(f"<h4>{html.escape(t('campaigns.reaction_details', lang))}</h4>"),
            widgets.HBox([self.reaction, self.reaction_name, self.reaction_new]), self.actions_button,
            self.actions_area,
        ], layout=section)
        self.reaction_box.add_class("crmkit-reaction-details")
        super().__init__([
            widgets.HTML(f"<h3>{html.escape(t('campaigns.title', lang))}</h3>"),
            widgets.HBox([self.campaign, self.campaign_name, self.campaign_new]),
            self.activity_box, self.reaction_box, self.error,
        ])
        self.add_class("crmkit-campaign-editor")
        self._load_campaigns()

    def _act(self, fn: Any) -> None:
        try:
            fn()
            self.error.show(None, self.lang)
        except Exception as exc:
            self.error.show(exc, self.lang)

    def _load_campaigns(self, select: int | None = None) -> None:
        _set_options(self.campaign, _options(self.campaigns.campaigns()), select)
        self._load_activities()

    def _load_activities(self, select: int | None = None) -> None:
        frame = self.campaigns.activities(self.campaign.value) if self.campaign.value is not None else None
        _set_options(self.activity, [] if frame is None else _options(frame), select)
        self._load_reactions()

    def _load_reactions(self, select: int | None = None) -> None:
        if self.activity.value is None:
            self.reaction.options = []
            self.participants.value = ""
        else:
            _set_options(self.reaction, _options(self.campaigns.reactions(self.activity.value)), select)
            count = len(self.campaigns.participants(self.activity.value))
            self.participants.value = f"<p>{html.escape(t('campaigns.participants_count', self.lang, count=count))}</p>"
        self._reaction_changed()

    def _reaction_changed(self) -> None:
        self.actions_area.children = []
        self.actions_button.disabled = self.reaction.value is None

    def _new_campaign(self) -> None:
        new_id = self.campaigns.add_campaign(self.campaign_name.value)
        self.campaign_name.value = ""
        self._load_campaigns(select=new_id)

    def _new_activity(self) -> None:
        new_id = self.campaigns.add_activity(_picked(self.campaign, "campaigns.pick_campaign", self.lang),
                                             self.activity_name.value)
        self.activity_name.value = ""
        self._load_activities(select=new_id)

    def _add_participants(self) -> None:
        self.campaigns.add_participants(_picked(self.activity, "campaigns.pick_activity", self.lang),
                                        _ids(self.participant_ids.value))
        self.participant_ids.value = ""
        self._load_reactions(select=self.reaction.value)

    def _new_reaction(self) -> None:
        new_id = self.campaigns.add_reaction(_picked(self.activity, "campaigns.pick_activity", self.lang),
                                             self.reaction_name.value)
        self.reaction_name.value = ""
        self._load_reactions(select=new_id)

    def open_actions(self) -> ReactionActions:
        """»Vorgänge der Reaktion…« for the selected reaction."""
        panel = ReactionActions(self.campaigns, _picked(self.reaction, "campaigns.pick_reaction", self.lang), self.lang)
        self.actions_area.children = [panel]
        return panel

    def refresh(self) -> None:
        self._load_campaigns()


class RecordReactions(widgets.VBox):
    """»Reaktionen erfassen«: pick an activity, a reaction and participants; record (any CRM user)."""

    def __init__(self, campaigns: Campaigns, lang: str, on_recorded: Any = None) -> None:
        self.campaigns = campaigns
        self.lang = lang
        self.on_recorded = on_recorded
        self.activity = widgets.Dropdown(description=t("campaigns.activity", lang), style=_LABEL)
        self.activity.add_class("crmkit-record-activity")
        self.reaction = widgets.Dropdown(description=t("campaigns.reaction", lang), style=_LABEL)
        self.reaction.add_class("crmkit-record-reaction")
        self.addresses = widgets.SelectMultiple(description=t("campaigns.participants", lang), style=_LABEL, rows=8,
                                                layout=widgets.Layout(width="70%"))
        self.addresses.add_class("crmkit-record-addresses")
        self.record = widgets.Button(description=t("campaigns.record", lang), button_style="primary", icon="check")
        self.record.add_class("crmkit-record-button")
        self.reload = widgets.Button(description=t("campaigns.refresh", lang), icon="refresh")
        self.status = widgets.HTML()
        self.status.add_class("crmkit-record-status")
        self.error = ErrorBox()
        self.activity.observe(lambda _c: self._load_activity(), "value")
        self.record.on_click(lambda _b: self.start_recording())
        self.reload.on_click(lambda _b: self.refresh())
        self._busy = threading.Lock()
        super().__init__([
            widgets.HTML(f"<h3>{html.escape(t('campaigns.record_title', lang))}</h3>"),
            widgets.HBox([self.activity, self.reload]), self.reaction, self.addresses, self.record, self.status,
            self.error,
        ])
        self.add_class("crmkit-record-reactions")
        self.refresh()

    def refresh(self) -> None:
        frame = self.campaigns.activities()
        _set_options(self.activity, [(f"{r.campaign} – {r.name}", int(r.id)) for r in frame.itertuples()])
        self._load_activity()

    def _load_activity(self) -> None:
        if self.activity.value is None:
            self.reaction.options, self.addresses.options = [], []
            return
        _set_options(self.reaction, _options(self.campaigns.reactions(self.activity.value)))
        people = self.campaigns.participants(self.activity.value)
        self.addresses.options = [
            (f"{r.id}: {_address_label(r)}" + (f" [{r.reaction}]" if isinstance(r.reaction, str) else ""), int(r.id))
            for r in people.itertuples()]

    def start_recording(self) -> threading.Thread | None:
        """Record in a background thread: immediate actions are delivered during the call."""
        if not self._busy.acquire(blocking=False):
            return None
        reaction, addresses = self.reaction.value, list(self.addresses.value)
        self.record.disabled = True
        self.status.value = f"<p>{html.escape(t('campaigns.recording', self.lang))}</p>"
        thread = threading.Thread(target=self._record, args=(reaction, addresses), daemon=True)
        thread.start()
        return thread

    def _record(self, reaction: int | None, addresses: list[int]) -> None:
        try:
            if reaction is None or not addresses:
                raise ValidationError(t("campaigns.pick_reaction_addresses", self.lang))
            result = self.campaigns.record_reaction(reaction, addresses)
            self.error.show(None, self.lang)
            self.status.value = '<p role="status" class="crmkit-recorded">' + html.escape(t(
                "campaigns.recorded", self.lang, new=len(result.new), already=len(result.already),
                runs=len(result.runs))) + "</p>"
        except Exception as exc:
            self.status.value = ""
            self.error.show(exc, self.lang)
        finally:
            self.record.disabled = False
            self._busy.release()
        self._load_activity()
        if self.on_recorded is not None:
            self.on_recorded()


def _address_label(row: Any) -> str:
    parts = [row.company, " ".join(p for p in (row.first_name, row.last_name) if isinstance(p, str)), row.city]
    return ", ".join(str(p) for p in parts if isinstance(p, str) and p)


class CampaignRuns(widgets.VBox):
    """The runs of the actions with status and error; refreshes itself for a while after each recording."""

    def __init__(self, campaigns: Campaigns, lang: str, *, teams_view: str | None = None) -> None:
        self.campaigns = campaigns
        self.lang = lang
        self.table = widgets.HTML()
        self.table.add_class("crmkit-runs")
        self.reload = widgets.Button(description=t("campaigns.refresh", lang), icon="refresh")
        self.reload.add_class("crmkit-runs-refresh")
        self.reload.on_click(lambda _b: self.refresh())
        link = (f'<p><a href="{html.escape(teams_view)}" target="_blank" rel="noopener" class="crmkit-teams-view">'
                f"{html.escape(t('campaigns.teams_view', lang))}</a></p>") if teams_view else ""
        self._watch: threading.Event | None = None
        super().__init__([widgets.HTML(f"<h3>{html.escape(t('campaigns.runs_title', lang))}</h3>{link}"),
                          self.reload, self.table])
        self.add_class("crmkit-campaign-runs")
        self.refresh()

    def refresh(self) -> None:
        try:
            frame = self.campaigns.runs(limit=200)
        except CrmkitError as exc:
            self.table.value = error_html(exc, self.lang)
            return
        cols = [("address_id", "campaigns.col.address"), ("action", "campaigns.col.action"),
                ("status", "campaigns.col.status"), ("due_at", "campaigns.col.due"),
                ("attempts", "campaigns.col.attempts"), ("error", "campaigns.col.error")]
        head = "".join(f"<th>{html.escape(t(key, self.lang))}</th>" for _c, key in cols)
        from ..campaigns._runner import run_error_text  # here: loading the runner is the campaigns page's cost only

        body = []
        for r in frame.astype(object).where(frame.notna(), None).to_dict("records"):
            cells = []
            for col, _key in cols:
                value = r[col]
                if col == "status":
                    value = t(f"campaigns.run_status.{value}", self.lang)
                elif col == "due_at" and value is not None:
                    value = format_datetime(pd.Timestamp(value), self.lang, seconds=True) + " UTC"
                elif col == "error":
                    value = run_error_text(value, self.lang)  # stored in English, shown in the user's language
                cells.append(f'<td data-col="{col}">{html.escape("" if value is None else str(value))}</td>')
            body.append(f'<tr class="crmkit-run" data-status="{html.escape(str(r["status"]))}">{"".join(cells)}</tr>')
        self.table.value = f'<table class="crmkit-runs-table"><tr>{head}</tr>{"".join(body)}</table>'

    def watch(self, seconds: float = 120.0, every: float = 2.0) -> None:
        """Refresh every ``every`` seconds for ``seconds`` (runs finish, the worker picks up delayed ones)."""
        if self._watch is not None:
            self._watch.set()
        stop = self._watch = threading.Event()

        def loop() -> None:
            waited = 0.0
            while waited < seconds and not stop.wait(every):
                waited += every
                try:
                    self.refresh()
                except Exception:  # a locked file now and then must not end the page
                    log.exception("campaign runs refresh failed")

        threading.Thread(target=loop, daemon=True).start()


class CampaignsPage(widgets.VBox):
    """The campaigns page: the header every dashboard has (title, language, CRM user), then the editor
    (for campaign admins), recording reactions, and the runs. Picking a language stores it as the
    user's setting and rebuilds the views in it.

    Attributes (for tests): ``header``, ``error``, ``body`` (holds ``editor`` or None, ``recorder``, ``runs``).
    """

    def __init__(self, crm: CRM) -> None:
        from ..campaigns import Campaigns
        from .header import DashboardHeader

        self.crm = crm
        self.lang = crm.language
        self.campaigns = Campaigns(crm)
        self.header = DashboardHeader(crm, "campaigns.page_title", self.lang, self._language_picked)
        self.error = self.header.error
        self.body = widgets.VBox()
        self.editor: CampaignEditor | None = None
        super().__init__([self.header, self.error, self.body])
        self.add_class("crmkit-campaigns-dashboard")
        self._build()

    def _build(self) -> None:
        campaigns, lang = self.campaigns, self.lang
        teams_view = None
        try:
            config = campaigns.teams.m365.config
            teams_view = f"{config.sandbox_url}/teams" if config.sandbox_url else None
        except CrmkitError:
            pass
        runs = CampaignRuns(campaigns, lang, teams_view=teams_view)
        # Every user sees the campaigns; without campaign.admin the editor is read-only, and its disabled
        # controls say which right is missing (rather than a hidden editor, or a refusal after a click).
        editor = CampaignEditor(campaigns, lang)

        def recorded() -> None:
            runs.refresh()
            runs.watch()

        recorder = RecordReactions(campaigns, lang, on_recorded=recorded)
        if editor is not None:
            editor.campaign.observe(lambda _c: recorder.refresh(), "options")
            editor.activity.observe(lambda _c: recorder.refresh(), "options")
            editor.reaction.observe(lambda _c: recorder.refresh(), "options")
            editor.participants.observe(lambda _c: recorder.refresh(), "value")
        old = self.body.children
        self.editor, self.recorder, self.runs = editor, recorder, runs
        self.body.children = tuple(w for w in (editor, recorder, runs) if w is not None)
        for view in old:
            watching = getattr(view, "_watch", None)
            if watching is not None:
                watching.set()  # the old runs view stops refreshing
            view.close()

    def _language_picked(self, lang: str) -> None:  # stored by the header
        self.lang = lang
        self._build()


def campaigns_dashboard(crm: CRM | None = None) -> widgets.Widget:
    """The campaigns demo page (:class:`CampaignsPage`).

    Without ``crm`` it opens the CRM named by the environment at request time (Voila preheat), and
    explains in both languages instead of raising when that fails.
    """
    from .settings_app import open_dashboard

    return open_dashboard(CampaignsPage, crm, "campaigns")  # CRMKIT_USER, or ?user= against the sandbox
