"""The Teams action of a record table: »Per Teams senden« on the selected rows.

>>> table = RecordTable(crm)                          # doctest: +SKIP
>>> action = add_teams_action(table, crm)             # doctest: +SKIP
>>> table.selected_ids = [1, 2]; action.button.click()  # doctest: +SKIP
>>> action.dialog                                     # the ComposeDialog for addresses 1 and 2

The button sits in the table's actions bar and is enabled only with a selection; the dialog opens
below the table. The core decides whether the user may send (integration on, ``teams.send``); a
refusal shows in place of the dialog.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..errors import CrmkitError
from ..i18n import t
from .common import ErrorBox
from .compose import ComposeDialog

if TYPE_CHECKING:
    from ..crm import CRM
    from .record_table import RecordTable

__all__ = ["TeamsAction", "add_teams_action", "teams_address_dashboard"]

log = logging.getLogger(__name__)


class TeamsAction:
    """The button, the place below the table where the dialog opens, and the open dialog.

    Attributes: ``button`` [crmkit-teams-action], ``host`` [crmkit-compose-host], ``error``,
    ``dialog`` (the open :class:`ComposeDialog`, or None).
    """

    def __init__(self, table: RecordTable, crm: CRM, *, debounce: float = 0.3) -> None:
        self.table = table
        self.crm = crm
        self.debounce = debounce
        self.dialog: ComposeDialog | None = None
        self.button = widgets.Button(icon="comments", button_style="info")
        self.button.add_class("crmkit-teams-action")
        self.error = ErrorBox()
        self.host = widgets.VBox(layout=widgets.Layout(display="none"))
        self.host.add_class("crmkit-compose-host")
        self.button.on_click(lambda _b: self.open())
        table.model.observe(lambda _c: self._relabel(), "language")
        self._relabel()

    def _relabel(self) -> None:
        lang = self.table.model.language
        self.button.description = t("teams.send_via", lang)
        self.button.tooltip = t("teams.with_record", lang)

    def open(self) -> ComposeDialog | None:
        """Open the compose dialog for the selected addresses (replacing one that is open)."""
        self.close()
        ids = self.table.selected_ids
        lang = self.table.model.language
        try:
            if not ids:
                from ..errors import ValidationError

                raise ValidationError(t("compose.no_selection", lang))
            self.crm.teams.require_ready()
            self.dialog = ComposeDialog(self.crm, ids, on_close=lambda _d: self.close(), debounce=self.debounce)
        except CrmkitError as exc:
            self.error.show(exc, lang)
            self.host.children = (self.error,)
            self.host.layout.display = None
            return None
        self.error.show(None, lang)
        self.host.children = (self.dialog,)
        self.host.layout.display = None
        return self.dialog

    def close(self) -> None:
        """Hide the dialog (a running send was cancelled by the dialog's Close)."""
        dialog, self.dialog = self.dialog, None
        self.host.children = ()
        self.host.layout.display = "none"
        if dialog is not None and not dialog.model.busy:
            dialog.close()


def add_teams_action(record_table: RecordTable, crm: CRM | None = None, *, debounce: float = 0.3) -> TeamsAction:
    """Add »Per Teams senden« / "Send via Teams" to ``record_table`` (enabled only with a selection).

    Args:
        record_table: the table; the dialog opens below it.
        crm: the session that sends (default: the table's).
        debounce: the people picker's typing pause (see :class:`~crmkit.widgets.compose.ComposeModel`).
    """
    action = TeamsAction(record_table, crm or record_table.model.crm, debounce=debounce)
    record_table.add_action(action.button, needs_selection=True)
    record_table.children = (*record_table.children, action.host)
    record_table.teams_action = action  # type: ignore[attr-defined]
    return action


def teams_address_dashboard(crm: CRM | None = None) -> Any:
    """The addresses dashboard with the Teams action; opens the session like the settings dashboard."""
    from .app import address_dashboard
    from .settings_app import open_dashboard_crm, open_error_box

    if crm is None:
        try:
            crm = open_dashboard_crm()
        except CrmkitError as exc:
            log.warning("addresses dashboard: cannot open the CRM: %s", exc)
            return open_error_box(exc)
    table = address_dashboard(crm)
    add_teams_action(table, crm)  # type: ignore[arg-type]
    return table
