"""Activation of the Teams integration: rights, the TS contact type, idempotence, the reopen notice."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest

import crmkit
from crmkit.crm import CRM
from crmkit.teams import activation, sessions

pytestmark = pytest.mark.core


def _snapshot(crm: CRM) -> dict[str, list[tuple[object, ...]]]:
    return crm.store.read(lambda tx: {
        "settings": tx.rows("SELECT key, value FROM system_settings ORDER BY key"),
        "types": tx.rows("SELECT code, label FROM contact_types ORDER BY code"),
        "audit": tx.rows("SELECT id, scope, key FROM audit ORDER BY id"),
    })


@pytest.fixture(autouse=True)
def _as_notebook(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sessions opened here stand for notebook kernels: scripts (pytest itself) are never listed to reopen.
    monkeypatch.setenv("CRMKIT_SESSION_KIND", "notebook")


@pytest.fixture
def admin(crm: CRM) -> CRM:
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    crm.add_user("sam", "Sam Sales", roles=["sales"])
    return crm


def as_user(crm: CRM, name: str) -> CRM:
    return CRM(crm.store, name)


def test_user_without_teams_admin_cannot_activate_and_nothing_changes(admin: CRM) -> None:
    sam = as_user(admin, "sam")
    before = _snapshot(admin)
    with pytest.raises(crmkit.PermissionDenied) as info:
        activation.enable(sam)
    assert info.value.right == "teams.admin"
    with pytest.raises(crmkit.PermissionDenied):
        activation.disable(sam)
    assert _snapshot(admin) == before
    assert activation.is_enabled(admin) is False


def test_teams_admin_without_system_admin_can_activate(admin: CRM) -> None:
    tina = as_user(admin, "tina")
    assert not tina.user.can("system.admin")
    assert activation.enable(tina) is True
    assert activation.is_enabled(admin)
    assert ("TS", "Teams") in admin.store.read(lambda tx: tx.rows("SELECT code, label FROM contact_types"))


def test_code_taken_is_refused_naming_the_other_type_and_nothing_changes(admin: CRM) -> None:
    admin.add_contact_type("TS", "Telefonschulung")
    before = _snapshot(admin)
    with pytest.raises(crmkit.ContactTypeCodeTaken) as info:
        activation.enable(admin)
    message = str(info.value)
    assert "Telefonschulung" in message and "'TS'" in message
    assert "change_contact_type_code" in message  # says how to fix it
    assert info.value.taken_by == "Telefonschulung"  # type: ignore[attr-defined]
    assert info.value.code == "TS"  # type: ignore[attr-defined]
    assert isinstance(info.value, crmkit.TeamsError)
    assert _snapshot(admin) == before

    # The fix the message names works.
    admin.change_contact_type_code("TS", "TSCH")
    assert activation.enable(admin) is True
    types = dict(admin.store.read(lambda tx: tx.rows("SELECT code, label FROM contact_types")))
    assert types["TS"] == "Teams" and types["TSCH"] == "Telefonschulung"


def test_enable_is_idempotent_one_type_one_audit_entry_each(admin: CRM) -> None:
    assert activation.enable(admin) is True
    assert activation.enable(admin) is False
    assert admin.store.one("SELECT count(*) FROM contact_types WHERE code = 'TS'") == 1
    audit = admin.audit_log()
    assert len(audit[(audit.scope == "system") & (audit.key == "teams.enabled")]) == 1
    assert len(audit[(audit.scope == "contact_types") & (audit.key == "TS")]) == 1
    assert activation.set_enabled(admin, True) is False


def test_setting_and_contact_type_commit_in_one_transaction(admin: CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    backend, done, running = admin.store.backend, [], []  # the statements of each write transaction
    real = backend.transaction

    @contextmanager
    def traced(*, read_only: bool, tracer: object) -> Iterator[object]:
        with real(read_only=read_only, tracer=tracer) as tx:  # type: ignore[arg-type]
            if not read_only:
                running.append([])
            try:
                yield tx
            finally:
                if not read_only:
                    done.append(running.pop())

    monkeypatch.setattr(backend, "transaction", traced)
    admin.store.tracer = lambda sql, params: running and running[-1].append(sql.strip().split()[0])
    activation.enable(admin)
    inserts = [w.count("INSERT") for w in done if "INSERT" in w]
    assert len(inserts) == 1 and inserts[0] >= 3  # contact type, its audit row, the setting + its audit row


def test_existing_teams_type_is_accepted(admin: CRM) -> None:
    admin.add_contact_type("TS", "teams")
    before_types = admin.store.read(lambda tx: tx.rows("SELECT code, label FROM contact_types ORDER BY code"))
    assert activation.enable(admin) is True  # the setting changed
    after_types = admin.store.read(lambda tx: tx.rows("SELECT code, label FROM contact_types ORDER BY code"))
    assert after_types == before_types


def test_disable_keeps_the_contact_type_and_is_idempotent(admin: CRM) -> None:
    activation.enable(admin)
    assert activation.disable(admin) is True
    assert activation.disable(admin) is False
    assert activation.is_enabled(admin) is False
    assert admin.store.one("SELECT count(*) FROM contact_types WHERE code = 'TS'") == 1
    audit = admin.audit_log()
    assert audit[audit.key == "teams.enabled"]["new_value"].tolist() == ["false", "true"]


def test_set_enabled_takes_a_bool(admin: CRM) -> None:
    with pytest.raises(TypeError):
        activation.set_enabled(admin, "yes")  # type: ignore[arg-type]


def test_reopen_notice_and_sessions_needing_reopen(admin: CRM) -> None:
    early = as_user(admin, "sam")  # opening a session registers it
    assert early.teams_enabled_at_open is False  # type: ignore[attr-defined]
    assert sessions.reopen_notice(early) is None

    activation.enable(admin)

    late = as_user(admin, "sam")
    assert late.teams_enabled_at_open is True  # type: ignore[attr-defined]
    assert sessions.reopen_notice(late) is None
    notice = sessions.reopen_notice(early, "en")
    assert notice is not None and "enabled after this session opened" in notice
    assert "neu" in str(sessions.reopen_notice(early, "de"))

    pending = activation.open_sessions_needing_reopen(admin)
    assert set(pending["id"]) == {early.session_id, admin.session_id}  # type: ignore[attr-defined]
    assert list(pending.columns) == ["id", "user_name", "kind", "pid", "host", "opened_at", "last_seen",
                                     "teams_enabled_at_open", "teams_enabled_now"]
    assert pending["teams_enabled_now"].all()

    # The sender's gate: a session opened before the switch must reopen first.
    with pytest.raises(crmkit.IntegrationDisabled, match="reopen"):
        activation.require_enabled(early)
    activation.require_enabled(late)

    # Switching off applies at once, and now the late session is the one to reopen.
    activation.disable(admin)
    with pytest.raises(crmkit.IntegrationDisabled, match="switched off"):
        activation.require_enabled(late)
    assert "disabled" in str(sessions.reopen_notice(late, "en"))
    assert set(activation.open_sessions_needing_reopen(admin)["id"]) == {late.session_id}  # type: ignore[attr-defined]


def test_sessions_list_needs_teams_admin(admin: CRM) -> None:
    with pytest.raises(crmkit.PermissionDenied):
        activation.open_sessions_needing_reopen(as_user(admin, "sam"))


def test_closed_and_dead_sessions_are_not_listed(admin: CRM) -> None:
    sessions.close_session(admin)
    gone = as_user(admin, "sam")
    dead = as_user(admin, "sam")
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    admin.store.execute("UPDATE sessions SET pid = ? WHERE id = ?", [int(proc.stdout), dead.session_id])  # type: ignore[attr-defined]
    sessions.close_session(gone)
    activation.enable(admin)
    assert activation.open_sessions_needing_reopen(admin).empty


def test_scripts_are_not_asked_to_reopen(admin: CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo launcher and the campaign worker open sessions too; nobody reopens a page for them.
    monkeypatch.setenv("CRMKIT_SESSION_KIND", "script")
    launcher = as_user(admin, "sam")
    monkeypatch.setenv("CRMKIT_SESSION_KIND", "dashboard")
    page = as_user(admin, "sam")
    activation.enable(admin)
    pending = activation.open_sessions_needing_reopen(admin)
    assert launcher.session_id not in set(pending["id"])  # type: ignore[attr-defined]
    assert page.session_id in set(pending["id"])  # type: ignore[attr-defined]
    assert admin.store.one("SELECT kind FROM sessions WHERE id = ?", [launcher.session_id]) == "script"  # type: ignore[attr-defined]
    assert set(pending["kind"]) == {"dashboard", "notebook"}


def test_a_session_of_unknown_kind_is_not_listed(admin: CRM) -> None:
    # Rows from before the kind was recorded (migration 9) have none.
    early = as_user(admin, "sam")
    admin.store.execute("UPDATE sessions SET kind = NULL WHERE id = ?", [early.session_id])  # type: ignore[attr-defined]
    activation.enable(admin)
    assert early.session_id not in set(activation.open_sessions_needing_reopen(admin)["id"])  # type: ignore[attr-defined]


def test_a_dead_kernel_whose_pid_went_to_a_newer_process_is_not_listed(admin: CRM) -> None:
    ghost = as_user(admin, "sam")
    # A process started now, under a session opened an hour ago: the kernel died and its pid was reused.
    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        admin.store.execute("UPDATE sessions SET pid = ?, opened_at = opened_at - INTERVAL '1 hour' WHERE id = ?",
                            [newer.pid, ghost.session_id])  # type: ignore[attr-defined]
        live = as_user(admin, "sam")
        admin.store.execute("UPDATE sessions SET pid = ? WHERE id = ?", [newer.pid, live.session_id])  # type: ignore[attr-defined]
        admin.store.execute("UPDATE sessions SET opened_at = opened_at + INTERVAL '2 seconds' WHERE id = ?",
                            [live.session_id])  # type: ignore[attr-defined]
        activation.enable(admin)
        ids = set(activation.open_sessions_needing_reopen(admin)["id"])
        assert ghost.session_id not in ids  # type: ignore[attr-defined]
        assert live.session_id in ids  # type: ignore[attr-defined]  # the same live process, opened after it started
    finally:
        newer.kill()
        newer.wait()


def test_register_session_never_fails_an_open(admin: CRM, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    def locked(*args: object, **kwargs: object) -> None:
        raise crmkit.DatabaseLocked("held by a batch job")

    monkeypatch.setattr(admin.store, "write", locked)
    with caplog.at_level(logging.WARNING, logger="crmkit.teams"):
        assert sessions.register_session(admin) is None
    assert "not registered" in caplog.text
    assert sessions.reopen_notice(admin) is None
    assert admin.store.lock_timeout == 60.0  # the shortened wait was restored


def test_register_session_on_a_shared_store_is_one_short_write(db_location: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    crm = crmkit.open(db_location)
    backend, writes = crm.store.backend, []
    real = backend.transaction

    def counted(*, read_only: bool, tracer: object) -> object:  # every operation is one backend transaction
        writes.append(read_only is False)
        return real(read_only=read_only, tracer=tracer)  # type: ignore[arg-type]

    monkeypatch.setattr(backend, "transaction", counted)
    session_id = sessions.register_session(crm)  # opening registered once already; this is a second row
    assert session_id is not None
    assert writes == [True]  # one write transaction, no read before it
    monkeypatch.undo()
    other = crmkit.open(db_location)  # registers on open
    assert other.session_id == session_id + 1  # type: ignore[attr-defined]
    frame = other.store.df("SELECT * FROM sessions ORDER BY id")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 3
    sessions.touch_session(crm)
    sessions.close_session(crm)
    assert other.store.one("SELECT count(*) FROM sessions") == 2
