"""The Teams action of a record table: »Per Teams senden« on the selected rows.

>>> table = RecordTable(crm)                          # doctest: +SKIP
>>> action = add_teams_action(table, crm)             # doctest: +SKIP
>>> table.selected_ids = [1, 2]; action.button.click()  # doctest: +SKIP
>>> action.dialog                                     # the ComposeDialog for addresses 1 and 2

The button sits in the table's actions bar and is enabled only with a selection, and every row's
menu offers the same for that one record (:meth:`TeamsAction.open_for`). The dialog opens beside the
table (its side panel), where the user is looking. A user without ``teams.send`` sees both disabled,
the missing right named in the tooltip; the core still decides every send (integration on,
``teams.send``), and a refusal shows in place of the dialog.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .. import record_links
from ..errors import CrmkitError, PermissionDenied, UnknownUser
from ..i18n import t
from .common import ErrorBox
from .compose import ComposeDialog
from .rights_hint import missing_right

if TYPE_CHECKING:
    from ..crm import CRM
    from .record_table import RecordTable

__all__ = ["TeamsAction", "add_teams_action", "teams_address_dashboard"]

log = logging.getLogger(__name__)


class TeamsAction:
    """The buttons, the place beside the table where the dialog opens, and the open dialog.

    Attributes: ``button`` [crmkit-teams-action] (on the selection), ``row_button`` [crmkit-row-teams]
    (in the row menu), ``host`` [crmkit-compose-host], ``error``, ``dialog`` (the open
    :class:`ComposeDialog`, or None), ``allowed`` (the user holds ``teams.send``).
    """

    RIGHT = "teams.send"

    def __init__(self, table: RecordTable, crm: CRM, *, debounce: float = 0.3) -> None:
        self.table = table
        self.crm = crm
        self.debounce = debounce
        self.dialog: ComposeDialog | None = None
        self.button = widgets.Button(icon="comments", button_style="info")
        self.button.add_class("crmkit-teams-action")
        self.row_button = widgets.Button(icon="comments", layout=widgets.Layout(width="auto"))
        self.row_button.add_class("crmkit-row-teams")
        self.allowed = crm.user.can(self.RIGHT)
        self.row_button.disabled = not self.allowed
        self.error = ErrorBox()
        self.host = widgets.VBox(layout=widgets.Layout(display="none"))
        self.host.add_class("crmkit-compose-host")
        self.button.on_click(lambda _b: self.open())
        table.model.observe(lambda _c: self._relabel(), "language")
        self._relabel()

    def _relabel(self) -> None:
        lang = self.table.model.language
        reason = missing_right(self.crm, self.RIGHT, lang)
        for button, tip in ((self.button, t("teams.with_record", lang)),
                            (self.row_button, t("table.row_teams_tooltip", lang))):
            button.description = t("teams.send_via", lang)
            button.tooltip = tip if reason is None else f"{tip} – {reason}"

    def open(self) -> ComposeDialog | None:
        """Open the compose dialog for the selected addresses (replacing one that is open)."""
        return self.open_for(self.table.selected_ids)

    def open_for(self, ids: list[int]) -> ComposeDialog | None:
        """Open the compose dialog for ``ids`` beside the table (a row's action: one record)."""
        self.close()
        lang = self.table.model.language
        try:
            if not ids:
                from ..errors import ValidationError

                raise ValidationError(t("compose.no_selection", lang))
            self.crm.teams.require_ready()
            self.dialog = ComposeDialog(self.crm, ids, on_close=lambda _d: self.close(), debounce=self.debounce)
        except CrmkitError as exc:
            self.error.show(exc, lang)
            self._show((self.error,))
            return None
        self.error.show(None, lang)
        self._show((self.dialog,))
        return self.dialog

    def _show(self, children: tuple[widgets.Widget, ...]) -> None:
        self.host.children = children
        self.host.layout.display = None
        self.table.show_side(self.host)

    def close(self) -> None:
        """Hide the dialog (a running send was cancelled by the dialog's Close)."""
        dialog, self.dialog = self.dialog, None
        self.host.children = ()
        self.host.layout.display = "none"
        if self.host in self.table.side.children:
            self.table.show_side(None)
        if dialog is not None and not dialog.model.busy:
            dialog.close()


def add_teams_action(record_table: RecordTable, crm: CRM | None = None, *, debounce: float = 0.3) -> TeamsAction:
    """Add »Per Teams senden« / "Send via Teams" to ``record_table`` (enabled only with a selection).

    Args:
        record_table: the table; the dialog opens beside it.
        crm: the session that sends (default: the table's).
        debounce: the people picker's typing pause (see :class:`~crmkit.widgets.compose_model.ComposeModel`).
    """
    action = TeamsAction(record_table, crm or record_table.model.crm, debounce=debounce)
    record_table.add_action(action.button, needs_selection=True, allowed=action.allowed)
    record_table.add_row_action(action.row_button, lambda address_id: action.open_for([address_id]))
    record_table.teams_action = action  # type: ignore[attr-defined]
    return action


def teams_address_dashboard(crm: CRM | None = None) -> Any:
    """The addresses dashboard with the Teams action; opens the session like the settings dashboard.

    A visit by a record's deep link (``?record=<id>``, :mod:`crmkit.record_links`) opens that record beside
    the table; a visitor the core refuses (no CRM user for the visit, too) sees the refusal and nothing else."""
    from .app import address_dashboard
    from .record_link import open_linked_record, refused_box
    from .settings_app import open_dashboard_crm, open_error_box

    def build(crm: CRM) -> Any:
        table = address_dashboard(crm)
        add_teams_action(table, crm)
        return open_linked_record(table)

    if crm is None:
        try:
            crm = open_dashboard_crm()
        except CrmkitError as exc:
            log.warning("addresses dashboard: cannot open the CRM: %s", exc)
            if isinstance(exc, (UnknownUser, PermissionDenied)):  # no CRM user for this visit: a link is refused
                try:
                    record_links.resolve(None, os.environ.get("QUERY_STRING", ""))
                except CrmkitError as refusal:
                    return refused_box(refusal)
            return open_error_box(exc)
    return build(crm)
