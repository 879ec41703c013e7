"""The record table, driven like a user would (set values, click buttons), without a browser or kernel."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest

import crmkit
from crmkit.errors import DatabaseLocked, ValidationError
from crmkit.widgets import RecordTable, address_dashboard

pytestmark = pytest.mark.widgets

CITIES = ["Berlin", "Köln", "Hamburg", "München"]  # 40 addresses: 10 per city
EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 addresses plus one hostile one, built once and copied per test (writes ~4 ms each)."""
    path = tmp_path_factory.mktemp("template") / "crm.duckdb"
    crm = crmkit.open(path)
    for i in range(40):
        crm.add_address(
            company=f"Firma {i:02d} GmbH", salutation="Frau" if i % 2 else "Herr", first_name=f"Vor{i}",
            last_name=f"Name{i:02d}", street=f"Hauptstraße {i}", postal_code=f"{10000 + i}",
            city=CITIES[i % 4], country="AT" if i % 10 == 0 else "DE", email=f"p{i}@example.test",
        )
    crm.add_address(company=EVIL, last_name='Quote " & <b>bold</b>', city="Wien", country="AT")
    crm.store.close()
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "crm.duckdb"
    shutil.copy(template_db, path)
    return path


@pytest.fixture
def statements(db: Path) -> list[str]:
    return []


@pytest.fixture
def crm(db: Path, statements: list[str]) -> crmkit.CRM:
    return crmkit.open(db, tracer=lambda sql, _params: statements.append(" ".join(sql.split())))


def visible_rows(table: RecordTable) -> list[str]:
    return table.shown_rows()


def cell(row_html: str, column: str) -> str:
    match = re.search(rf'data-col="{column}"[^>]*>(.*?)</td>', row_html)
    assert match, row_html
    return match.group(1)


def test_first_page(crm: crmkit.CRM) -> None:
    table = RecordTable(crm)
    assert table.page_label.value == "Seite 1 von 2 (41 Adressen)"
    assert len(visible_rows(table)) == 25
    assert cell(visible_rows(table)[0], "company") == "Firma 00 GmbH"
    assert table.prev_button.disabled and not table.next_button.disabled
    assert table.city.options[0] == ("(alle)", "")
    assert [v for _l, v in table.city.options[1:]] == sorted([*CITIES, "Wien"])
    assert "Firma" in table.header.value and "PLZ" in table.header.value
    assert table.error.layout.display == "none"


def test_paging(crm: crmkit.CRM) -> None:
    table = RecordTable(crm)
    first = visible_rows(table)
    table.next_button.click()
    assert table.page_label.value == "Seite 2 von 2 (41 Adressen)"
    assert len(visible_rows(table)) == 16
    assert visible_rows(table)[0] != first[0]
    assert table.next_button.disabled and not table.prev_button.disabled
    table.next_button.click()  # at the end: nothing happens
    assert table.model.page == 1
    table.prev_button.click()
    assert visible_rows(table) == first


def test_filters_query_one_page_per_interaction(crm: crmkit.CRM, statements: list[str]) -> None:
    table = RecordTable(crm)
    statements.clear()
    table.city.value = "Berlin"
    reads = [s for s in statements if "FROM addresses" in s]
    assert table.page_label.value == f"Seite 1 von 1 ({crm.count_addresses(city='Berlin')} Adressen)"
    assert {cell(r, "city") for r in visible_rows(table)} == {"Berlin"}
    # one statement: the count and a LIMITed page; the table never loads the whole address table
    assert len(reads) == 1 and "LIMIT 25 OFFSET 0" in reads[0] and "count(*)" in reads[0], reads

    table.country.value = "AT"
    assert table.page_label.value == f"Seite 1 von 1 ({crm.count_addresses(city='Berlin', country='AT')} Adressen)"
    table.city.value = "Wien"
    assert table.page_label.value == "Seite 1 von 1 (1 Adresse)"
    table.city.value = ""
    table.search.value = "name0"  # case-insensitive, in names too
    assert table.model.total == crm.count_addresses(search="name0", country="AT")
    table.search.value = "nobody-has-this"
    assert visible_rows(table) == [] and "Keine Adressen gefunden." in table.empty.value
    assert table.page_label.value == "Seite 1 von 1 (0 Adressen)"
    assert table.next_button.disabled and table.prev_button.disabled


def test_filter_change_goes_back_to_page_one_and_page_size(crm: crmkit.CRM) -> None:
    table = RecordTable(crm)
    table.next_button.click()
    table.city.value = "Köln"
    assert table.model.page == 0
    table.city.value = ""
    table.page_size.value = 10
    assert table.page_label.value == "Seite 1 von 5 (41 Adressen)"
    assert len(visible_rows(table)) == 10 and len(table.checks_column.children) == 10
    table.page_size.value = 50
    assert len(visible_rows(table)) == 41 and len(table.checks_column.children) == 41
    table.page_size.value = 25
    assert len(visible_rows(table)) == 25 and len(table.checks_column.children) == 25


def test_page_size_follows_the_user_setting(crm: crmkit.CRM) -> None:
    crm.set_user_setting("page_size", 10)
    table = RecordTable(crm)
    assert table.page_size.value == 10 and len(visible_rows(table)) == 10


def test_values_are_escaped(crm: crmkit.CRM) -> None:
    table = RecordTable(crm)
    table.city.value = "Wien"
    (row,) = visible_rows(table)
    assert "<script>" not in row and "<b>" not in row
    assert cell(row, "company") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert 'title="Quote &quot; &amp; &lt;b&gt;bold&lt;/b&gt;"' in row


def test_selection_across_pages_and_hooks(crm: crmkit.CRM) -> None:
    table = RecordTable(crm)
    seen: list[list[int]] = []
    table.on_selection(seen.append)
    send = table.add_action(widgets.Button(description="Per Teams senden"))
    other = table.add_action(widgets.Button(description="Export"), needs_selection=False)
    assert send.disabled and not other.disabled and table.actions.children == (send, other)

    table._rows[0].check.value = True
    table._rows[2].check.value = True
    assert table.selected_ids == [1, 3] and seen[-1] == [1, 3]
    assert table.selection_label.value == "2 ausgewählt" and not send.disabled
    table.next_button.click()
    table.select_page.value = True  # the whole second page
    assert len(table.selected_ids) == 2 + 16
    table.prev_button.click()
    assert [r.check.value for r in table._rows[:3]] == [True, False, True]
    assert not table.select_page.value  # page one is only partly selected
    table._rows[0].check.value = False
    assert 1 not in table.selected_ids

    frame = table.model.selected_frame()
    assert sorted(frame["id"]) == sorted(table.selected_ids)

    table.clear_button.click()
    assert table.selected_ids == [] and seen[-1] == [] and send.disabled
    assert not any(r.check.value for r in table._rows)

    table.selected_ids = [5]  # set from code: the checkbox follows
    assert table._rows[4].check.value
    table.on_selection(seen.append, remove=True)
    table.selected_ids = []
    assert seen[-1] == [5]


def test_language_switch_relabels_and_persists(crm: crmkit.CRM, db: Path) -> None:
    table = RecordTable(crm)
    table.city.value = "Berlin"
    table.language_switch.value = "en"
    assert table.page_label.value == "Page 1 of 1 (10 addresses)"
    assert table.city.description == "City" and table.next_button.description == "Next"
    assert table.city.options[0] == ("(all)", "") and table.city.value == "Berlin"  # filter kept
    assert "Postcode" in table.header.value
    assert crm.user_setting("language") == "en"
    # a new session of the same user opens in English
    assert RecordTable(crmkit.open(db)).page_label.value == "Page 1 of 2 (41 addresses)"
    table.language_switch.value = "de"
    assert table.city.description == "Ort" and crm.user_setting("language") == "de"


def test_core_errors_become_friendly_messages(crm: crmkit.CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    table = RecordTable(crm)
    real = crm.address_page

    def locked(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseLocked("crm.duckdb stayed locked by another process for 60 s; close long-running jobs.")

    monkeypatch.setattr(crm, "address_page", locked)
    table.next_button.click()
    assert table.error.layout.display is None
    assert "Die Datenbank ist gerade gesperrt" in table.error.value
    assert "close long-running jobs" in table.error.value and "Traceback" not in table.error.value
    assert isinstance(table.model.error, DatabaseLocked)

    monkeypatch.setattr(crm, "address_page", real)
    table.refresh_button.click()
    assert table.error.layout.display == "none" and table.model.error is None


def test_bad_sql_filter_is_a_validation_message(crm: crmkit.CRM) -> None:
    table = RecordTable(crm, where="no_such_column = ?", params=[1])
    assert isinstance(table.model.error, ValidationError)
    assert "Die Eingabe ist ungültig" in table.error.value
    assert visible_rows(table) == []


def test_unexpected_errors_are_logged_not_shown(
    crm: crmkit.CRM, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    table = RecordTable(crm)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("/secret/path/internal detail")

    monkeypatch.setattr(crm, "address_page", broken)
    with caplog.at_level(logging.ERROR, logger="crmkit.widgets"):
        table.next_button.click()
    assert "unerwarteter Fehler" in table.error.value and "/secret/path" not in table.error.value
    assert "record table: unexpected error" in caplog.text


def test_no_lock_is_held_between_interactions(crm: crmkit.CRM, db: Path) -> None:
    table = RecordTable(crm)
    table.city.value = "Berlin"
    # Another process writes while the table is open: it would wait out a held lock and fail.
    code = (
        "import sys, crmkit; from crmkit.store import Store; "
        "crm = crmkit.CRM(Store(sys.argv[1], lock_timeout=3), 'admin'); "
        "crm.add_address(company='Neu', city='Berlin')"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=60)
    table.refresh_button.click()
    assert table.page_label.value == "Seite 1 von 1 (11 Adressen)"


def test_address_dashboard_opens_from_the_environment(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_DB", str(db))
    view = address_dashboard()
    assert isinstance(view, RecordTable)
    assert view.page_label.value == "Seite 1 von 2 (41 Adressen)"


@pytest.mark.parametrize(
    ("env", "expect"),
    [({"CRMKIT_DB": "/no/such/folder/crm.duckdb"}, "does not exist"), ({"CRMKIT_USER": "ghost"}, "ghost")],
)
def test_address_dashboard_explains_why_it_cannot_open(
    db: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expect: str,
) -> None:
    monkeypatch.setenv("CRMKIT_DB", str(db))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    view = address_dashboard()
    assert isinstance(view, widgets.HTML) and "crmkit-open-error" in view._dom_classes
    assert "Die CRM-Datenbank kann nicht geöffnet werden" in view.value
    assert "The CRM database cannot be opened" in view.value and expect in view.value


def test_the_table_needs_a_crm_or_a_model() -> None:
    factory: Callable[[], RecordTable] = RecordTable
    with pytest.raises(TypeError):
        factory()


def test_preheated_kernels_wait_for_the_request(
    db: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under Voila's preheat the CRM is read when a browser asks, not when the kernel was heated: the
    kernel waits on Voila's query websocket (a real one here) for the request's environment, once."""
    import threading

    from websockets.sync.server import serve

    from crmkit.widgets import app

    paths: list[str] = []

    def handler(ws: Any) -> None:
        paths.append(ws.request.path)
        ws.send(json.dumps({"QUERY_STRING": "user=admin", "SCRIPT_NAME": "/voila/render/addresses.ipynb"}))

    with serve(handler, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        monkeypatch.setattr(app, "_request_seen", False)
        monkeypatch.setenv("CRMKIT_DB", str(db))
        for name, value in {"VOILA_APP_IP": "127.0.0.1", "VOILA_APP_PORT": str(port), "VOILA_KERNEL_ID": "k-1",
                            "VOILA_SERVER_URL": "/"}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("QUERY_STRING", raising=False)
        monkeypatch.delenv("SCRIPT_NAME", raising=False)

        monkeypatch.setenv("VOILA_PREHEAT", "False")
        address_dashboard()
        assert paths == [] and "QUERY_STRING" not in os.environ
        monkeypatch.setenv("VOILA_PREHEAT", "True")
        address_dashboard()
        address_dashboard()  # the request comes once per kernel; never wait twice
        server.shutdown()
    assert paths == ["/voila/query/k-1"]
    assert os.environ["QUERY_STRING"] == "user=admin"
    assert os.environ["SCRIPT_NAME"] == "/voila/render/addresses.ipynb"


WAIT_IN_A_KERNEL = """
import json, os, sys, threading
from websockets.sync.server import serve
from crmkit.widgets.app import wait_for_voila_request
with serve(lambda ws: ws.send(json.dumps({"QUERY_STRING": "user=anna"})), "127.0.0.1", 0) as server:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ.update(VOILA_PREHEAT="True", VOILA_APP_IP="127.0.0.1", VOILA_KERNEL_ID="k-1",
                      VOILA_APP_PORT=str(server.socket.getsockname()[1]))
    wait_for_voila_request()
    server.shutdown()
print(json.dumps([os.environ.get("QUERY_STRING"),
                  sorted(m for m in sys.modules if m.split(".")[0] in ("voila", "jupyter_server", "nbconvert"))]))
"""


def test_a_preheated_kernel_waits_without_loading_voila() -> None:
    """A kernel heats for every visit; Voila's server stack loaded into it cost 1.3 of its ~3 CPU-seconds."""
    done = subprocess.run([sys.executable, "-c", WAIT_IN_A_KERNEL], capture_output=True, text=True, timeout=120,
                          check=True)
    assert json.loads(done.stdout) == ["user=anna", []]
