"""What building the settings dashboard costs the kernel, counted (issue 12, item 13): how often the
DuckDB file is attached, how often the Teams setting is read, how many widget models go to the
browser. Counts, not times: timing goals live in the bench (bench/dashboard.py, bench/settings_profile.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pytest
from ipywidgets.widgets.widget import _instances

import crmkit
from crmkit.crm import CRM
from crmkit.teams import activation
from crmkit.widgets.settings_app import SettingsApp

pytestmark = pytest.mark.widgets


class _CountingEngine:
    """Stands between the store and its DuckDB engine and counts the ATTACH statements of the file."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.attaches = 0

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.lstrip().upper().startswith("ATTACH") and ":memory:" not in sql:
            self.attaches += 1
        return self._engine.execute(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def file_crm(db_path: Path) -> CRM:
    crm = crmkit.open(db_path)
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    yield crm
    crm.store.close()


def test_building_the_settings_page_attaches_the_file_once(file_crm: CRM) -> None:
    teams_reads: list[str] = []
    file_crm.store.tracer = lambda sql, params: (
        teams_reads.append(sql) if activation.SETTING in list(params or []) else None)
    engine = file_crm.store._engine = _CountingEngine(file_crm.store._engine)  # type: ignore[assignment]
    app = SettingsApp(file_crm)
    # Language, the Teams switch, this session's notice and the sessions to reopen: one read session.
    assert engine.attaches == 1
    assert len(teams_reads) == 1  # the Teams tab shows the switch and the notice from one read
    assert app.teams is not None and app.teams.enabled.value is False  # type: ignore[union-attr]
    # The page does not keep the file attached: another process may write as soon as the page is up.
    assert file_crm.store._engine.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = 'crm'"
                                          ).fetchone()[0] == 0
    file_crm.set_setting("teams.enabled", True)  # and a write after the build attaches as before
    assert activation.is_enabled(file_crm)
    app.close()


def test_the_settings_page_sends_few_widget_models(file_crm: CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    updates: list[tuple[str, object]] = []
    send_state = widgets.Widget.send_state
    monkeypatch.setattr(widgets.Widget, "send_state",
                        lambda self, key=None: (updates.append((type(self).__name__, key)), send_state(self, key))[1])
    before = set(_instances)
    app = SettingsApp(file_crm)
    created = len(set(_instances) - before)
    # 55 models before item 13 (a Layout for each of the six panes, a Layout and a style for each text);
    # one more since issue 16: the header's mode line (sharing the user line's layout and style).
    assert created <= 43, created
    # 25 update messages after construction before (classes, texts, titles and children set one by
    # one); the page's own widgets now get them in their constructors, the header's and error boxes' remain.
    assert len(updates) <= 10, updates
    monkeypatch.undo()
    # Every tab still gets its view when shown.
    for key in SettingsApp.TAB_KEYS:
        app.tabs.selected_index = SettingsApp.TAB_KEYS.index(key)
        assert app.panes[key].children == (app.views[key],)
    app.close()
