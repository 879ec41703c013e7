"""The record table at size: first/last/go-to page, page labels with separators, one HTML table per page,
per-row actions (send this record via Teams, show its contacts), and a viewer's disabled actions with the
missing right in the tooltip. Driven like a user would (set values, click), without a browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import ipywidgets.widgets.widget as widget_module
import pytest

import crmkit
from crmkit.crm import CRM
from crmkit.errors import PermissionDenied, ValidationError
from crmkit.teams import activation
from crmkit.widgets import RecordTable
from crmkit.widgets.compose import ComposeDialog
from crmkit.widgets.teams_action import add_teams_action

pytestmark = pytest.mark.widgets


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,501 addresses (101 pages of 25: separators in the page count), users, and contacts on address 2."""
    path = tmp_path_factory.mktemp("paging") / "crm.duckdb"
    crm = crmkit.open(path)

    def load(tx: Any) -> None:
        tx.execute("INSERT INTO addresses (id, kind, company, city, country, created_by, created_at, modified_by, "
                   "modified_at) SELECT i, 'company', 'Firma ' || i, 'Berlin', 'DE', 'admin', now(), 'admin', now() "
                   "FROM range(1, 2502) t(i)")

    crm.store.write(load)
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    types = crm.contact_types()
    code = str(types["code"].iloc[0])
    crm.add_contact(2, code, "Angebot besprochen")
    crm.add_contact(2, code, "Rückruf <vereinbart>")
    crm.store.close()
    return path


@pytest.fixture
def crm(template_db: Path, tmp_path: Path) -> CRM:
    path = tmp_path / "crm.duckdb"
    shutil.copy(template_db, path)
    return crmkit.open(path)


def test_first_last_and_go_to_page(crm: CRM) -> None:
    table = RecordTable(crm)
    assert table.first_button.disabled and table.prev_button.disabled and not table.last_button.disabled
    table.last_button.click()
    assert table.model.page == 100
    assert table.page_label.value == "Seite 101 von 101 (2.501 Adressen)"
    assert len(table.shown_rows()) == 1 and table.last_button.disabled and table.next_button.disabled
    table.first_button.click()
    assert table.model.page == 0 and table.first_button.disabled

    table.goto.value = "42"  # what Enter in the box sends
    assert table.model.page == 41 and table.goto.value == ""
    assert table.page_label.value.startswith("Seite 42 von 101")
    table.goto.value = "1.000"  # as the label writes numbers, but past the end
    assert table.model.page == 41
    assert isinstance(table.goto_error.exc, ValidationError)
    assert "»1.000« ist keine Seitenzahl" in table.goto_error.value and "1 bis 101" in table.goto_error.value
    table.goto.value = "drei"
    assert table.model.page == 41 and "»drei« ist keine Seitenzahl" in table.goto_error.value
    table.goto.value = "0"
    assert table.model.page == 41 and table.goto_error.layout.display is None
    table.goto.value = "101"
    assert table.model.page == 100 and table.goto_error.layout.display == "none"


def test_a_bad_page_number_in_english(crm: CRM) -> None:
    table = RecordTable(crm)
    table.model.set_language("en")
    table.goto.value = "-3"
    assert "“-3” is not a page number. Enter a whole number from 1 to 101." in table.goto_error.value
    with pytest.raises(ValidationError):
        table.model.go_to_page("1.5")


def test_page_label_formats_every_number_with_the_languages_separators(crm: CRM) -> None:
    table = RecordTable(crm)
    table.page_size.value = 10
    assert table.page_label.value == "Seite 1 von 251 (2.501 Adressen)"
    table.model.page_size = 1  # a page size set in code: 2,501 pages
    table.last_button.click()
    assert table.page_label.value == "Seite 2.501 von 2.501 (2.501 Adressen)"
    table.model.set_language("en")
    assert table.page_label.value == "Page 2,501 of 2,501 (2,501 addresses)"
    table.model.select(range(1, 1201))
    assert table.selection_label.value == "1,200 selected"


def test_a_page_is_one_fixed_layout_table_and_a_page_turn_one_message(
    crm: CRM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = RecordTable(crm)
    grid = table.grid.value
    assert grid.startswith('<table class="crmkit-grid"><colgroup>') and grid.count('<tr class="crmkit-row"') == 25
    # the header has the same columns as the rows
    assert re.search(r"<colgroup>.*?</colgroup>", table.header.value).group(0) == re.search(
        r"<colgroup>.*?</colgroup>", grid).group(0)
    assert "table-layout:fixed" in table.title.value  # the table's own stylesheet

    sent: list[dict[str, Any]] = []
    opened: list[object] = []
    real_send, real_open = widget_module.Widget._send, widget_module.Widget.open
    monkeypatch.setattr(widget_module.Widget, "_send",
                        lambda self, msg, buffers=None: (sent.append(msg), real_send(self, msg, buffers))[1])
    monkeypatch.setattr(widget_module.Widget, "open", lambda self: (opened.append(self), real_open(self))[1])
    table.next_button.click()
    cells = [m for m in sent if "value" in m.get("state", {}) and "crmkit-row" in str(m["state"]["value"])]
    assert len(cells) == 1 and not opened, [json.dumps(m)[:120] for m in sent]
    assert len(sent) <= 6  # the cells, the page label, the buttons' states
    sent.clear()
    table.page_size.value = 100  # the pool grows: two widgets per new row, shared layouts and styles
    assert len(table.shown_rows()) == 100
    assert len(opened) == 2 * 75 and len(sent) <= 8


def test_row_menu_sends_one_record_via_teams(crm: CRM) -> None:
    activation.enable(crm)
    table = RecordTable(crm)
    action = add_teams_action(table, crm)
    row = table._rows[2]
    row.menu.click()  # ⋯ on the third row
    assert table.row_menu_address == 3 and table.side.children == (table.row_menu,)
    assert "Datensatz 3: Firma 3" in table.row_menu_label.value
    assert '<tr class="crmkit-row crmkit-row-open" data-id="3">' in table.grid.value
    assert action.row_button in table.row_menu_actions.children and not action.row_button.disabled
    assert action.row_button.description == "Per Teams senden"
    assert table.selected_ids == []  # the row action does not need or change the selection
    action.row_button.click()
    dialog = action.dialog
    assert isinstance(dialog, ComposeDialog) and dialog.model.address_ids == [3]
    assert table.side.children == (action.host,) and table.side.layout.display is None  # beside the table
    assert "crmkit-row-open" not in table.grid.value and table.row_menu_address is None
    dialog.close_button.click()
    assert table.side.layout.display == "none" and action.dialog is None


def test_row_menu_shows_the_contact_history(crm: CRM) -> None:
    table = RecordTable(crm)
    table.open_row_menu(2)
    table.contacts_button.click()
    assert table.side.children == (table.contacts,)
    body = table.contacts.body.value
    assert "Kontakte: Datensatz 2: Firma 2" in table.contacts.title.value
    assert body.count("<tr class='crmkit-contact'>") == 2 and "Rückruf &lt;vereinbart&gt;" in body
    assert "Administrator" in body  # the user's display name, not the login
    assert re.search(r"\d\d\.\d\d\.\d{4} \d\d:\d\d", body)  # a German date
    table.open_row_menu(1)
    table.contacts_button.click()
    assert "Zu diesem Datensatz sind noch keine Kontakte erfasst." in table.contacts.body.value
    table.model.set_language("en")
    assert "No contacts are recorded for this record yet." in table.contacts.body.value
    table.contacts.close_button.click()
    assert table.side.layout.display == "none"


def test_a_page_turn_closes_the_row_menu(crm: CRM) -> None:
    table = RecordTable(crm)
    table._rows[0].menu.click()
    assert table.row_menu_address == 1
    table._rows[0].menu.click()  # the same ⋯ again closes it
    assert table.row_menu_address is None and table.side.layout.display == "none"
    table._rows[0].menu.click()
    table.next_button.click()
    assert table.row_menu_address is None and table.side.layout.display == "none"


@pytest.mark.parametrize(("lang", "reason"), [
    ("de", "Nicht möglich: Ihnen fehlt das Recht »Datensätze per Teams versenden« (teams.send)."),
    ("en", "Not available: you lack the right “Send records via Teams” (teams.send)."),
])
def test_a_viewer_sees_the_teams_actions_disabled_with_the_missing_right(crm: CRM, lang: str, reason: str) -> None:
    activation.enable(crm)
    vera = CRM(crm.store, "vera")
    vera.set_user_setting("language", lang)
    table = RecordTable(vera)
    action = add_teams_action(table, vera)
    assert action.button.disabled and action.row_button.disabled
    assert reason in action.button.tooltip and reason in action.row_button.tooltip
    table.selected_ids = [1, 2]  # a selection does not enable what the right forbids
    assert action.button.disabled
    assert not table.contacts_button.disabled  # reading contacts needs no right
    # The core still refuses (a click from code, or an old page).
    action.button.click()
    assert action.dialog is None and isinstance(action.error.exc, PermissionDenied)


def test_a_sales_user_has_them_enabled_with_plain_tooltips(crm: CRM) -> None:
    activation.enable(crm)
    anna = CRM(crm.store, "anna")
    table = RecordTable(anna)
    action = add_teams_action(table, anna)
    table.selected_ids = [1]
    assert not action.button.disabled and not action.row_button.disabled
    assert "Recht" not in action.button.tooltip and action.button.tooltip
