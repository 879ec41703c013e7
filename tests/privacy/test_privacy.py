"""Personal data: policy per channel, block flags, the append-only transfer log, reports, export, purge."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

import crmkit
from crmkit import privacy
from crmkit.crm import CRM
from crmkit.privacy import TransferRecord

pytestmark = pytest.mark.core

FIELDS = ["company", "name", "email"]


@pytest.fixture
def crm(crm: CRM) -> CRM:
    crm.add_user("pia", "Pia Privacy", roles=["privacy_officer"])
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    return crm


def as_user(crm: CRM, name: str) -> CRM:
    return CRM(crm.store, name)


def _addresses(crm: CRM, n: int = 3) -> list[int]:
    return [crm.add_address(company=f"Firma {i}", last_name=f"Person {i}") for i in range(n)]


def _record(address_id: int, recipient: str = "r1", **kw: object) -> TransferRecord:
    values: dict[str, object] = {
        "user_name": "admin", "channel": "teams_manual", "address_id": address_id, "fields": FIELDS,
        "outcome": "sent", "recipient_id": recipient, "recipient_name": f"Name {recipient}",
        "ms_account": "admin@contoso.example", "message_id": f"m-{address_id}-{recipient}",
    }
    values.update(kw)
    return TransferRecord(**values)  # type: ignore[arg-type]


def _log(crm: CRM, rows: list[TransferRecord], **kw: object) -> int:
    return crm.store.write(lambda tx: privacy.log_transfers(tx, rows, **kw))  # type: ignore[arg-type]


def _count(crm: CRM) -> int:
    return int(crm.store.one("SELECT count(*) FROM transfer_log"))


# -- configuration ------------------------------------------------------------------------------------------------

def test_defaults(crm: CRM) -> None:
    assert privacy.policies(crm) == {"teams_manual": "log", "teams_campaign": "log", "file_export": "log"}
    assert "email" in privacy.personal_fields(crm) and "company" not in privacy.personal_fields(crm)
    assert privacy.retention_days(crm) == 730


def test_policy_and_fields_need_privacy_admin_and_are_audited(crm: CRM) -> None:
    tina = as_user(crm, "tina")
    with pytest.raises(crmkit.PermissionDenied):
        privacy.set_policy(tina, "teams_manual", "allow")
    with pytest.raises(crmkit.PermissionDenied):
        privacy.set_personal_fields(tina, ["email"])
    with pytest.raises(crmkit.PermissionDenied):
        privacy.set_retention_days(tina, 30)
    assert crm.store.one("SELECT count(*) FROM privacy_settings") == 0

    pia = as_user(crm, "pia")
    privacy.set_policy(pia, "teams_campaign", "log_purpose")
    privacy.set_personal_fields(pia, ["email", "last_name", "email"])
    privacy.set_retention_days(pia, 90)
    assert privacy.policy(crm, "teams_campaign") == "log_purpose"
    assert privacy.personal_fields(crm) == ("last_name", "email")
    assert privacy.retention_days(crm) == 90
    audit = crm.audit_log()
    assert set(audit[audit.scope == "privacy"]["key"]) == {"policy.teams_campaign", "personal_fields"}
    assert (audit.key == "privacy.retention_days").sum() == 1

    with pytest.raises(crmkit.ValidationError):
        privacy.set_policy(pia, "teams_manual", "maybe")
    with pytest.raises(crmkit.ValidationError):
        privacy.set_policy(pia, "fax", "allow")
    with pytest.raises(crmkit.ValidationError):
        privacy.set_personal_fields(pia, ["shoe_size"])
    with pytest.raises(crmkit.ValidationError):
        privacy.set_retention_days(pia, 0)


# -- decisions -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("action", "log"), [("allow", False), ("log", True), ("log_purpose", True)])
def test_policy_decisions_per_channel(crm: CRM, action: str, log: bool) -> None:
    ids = _addresses(crm, 2)
    for channel in privacy.CHANNELS:
        privacy.set_policy(crm, channel, action)
        decision = privacy.check_transfer(crm, channel, ids, purpose="Angebot", fields=FIELDS)
        assert decision.channel == channel and decision.action == action
        assert decision.log is log and decision.personal
        assert decision.allowed_ids == ids and decision.blocked == {}
        assert decision.purpose == "Angebot"


def test_log_purpose_requires_a_purpose(crm: CRM) -> None:
    ids = _addresses(crm, 1)
    privacy.set_policy(crm, "teams_manual", "log_purpose")
    for missing in (None, "", "   "):
        with pytest.raises(crmkit.ValidationError, match="purpose"):
            privacy.check_transfer(crm, "teams_manual", ids, missing)
    # Other channels are not affected.
    assert privacy.check_transfer(crm, "teams_campaign", ids).log


def test_blocked_channel_raises(crm: CRM) -> None:
    ids = _addresses(crm, 1)
    privacy.set_policy(crm, "file_export", "block")
    with pytest.raises(crmkit.TransferBlocked) as info:
        privacy.check_transfer(crm, "file_export", ids, "Export")
    assert info.value.channel == "file_export"  # type: ignore[attr-defined]
    assert privacy.check_transfer(crm, "teams_manual", ids).allowed_ids == ids


def test_without_personal_fields_the_policy_does_not_apply(crm: CRM) -> None:
    ids = _addresses(crm, 1)
    privacy.set_policy(crm, "teams_manual", "block")
    decision = privacy.check_transfer(crm, "teams_manual", ids, fields=["company", "country"])
    assert decision.personal is False and decision.log is False and decision.allowed_ids == ids
    with pytest.raises(crmkit.TransferBlocked):
        privacy.check_transfer(crm, "teams_manual", ids, fields=["company", "postal_city"])  # city is personal
    with pytest.raises(crmkit.TransferBlocked):
        privacy.check_transfer(crm, "teams_manual", ids)  # fields unknown: assume personal


def test_unknown_channel_and_bad_ids(crm: CRM) -> None:
    with pytest.raises(crmkit.ValidationError):
        privacy.check_transfer(crm, "fax", [1])
    with pytest.raises(crmkit.ValidationError):
        privacy.check_transfer(crm, "teams_manual", ["1"])  # type: ignore[list-item]


# -- block flags ------------------------------------------------------------------------------------------

def test_block_flags(crm: CRM) -> None:
    a, b, c = _addresses(crm, 3)
    tina = as_user(crm, "tina")
    with pytest.raises(crmkit.PermissionDenied):
        privacy.set_flag(tina, a, "no_transfer")
    pia = as_user(crm, "pia")
    assert privacy.set_flag(pia, a, "no_transfer") is True
    assert privacy.set_flag(pia, a, "no_transfer") is False
    assert privacy.set_flag(pia, b, "no_export") is True

    teams = privacy.check_transfer(crm, "teams_manual", [a, b, c, 999])
    assert teams.allowed_ids == [b, c]
    assert teams.blocked == {a: "flag:no_transfer", 999: "not_found"}
    assert not teams.allowed(a) and teams.allowed(b)
    export = privacy.check_transfer(crm, "file_export", [a, b, c])
    assert export.allowed_ids == [c] and export.blocked == {a: "flag:no_transfer", b: "flag:no_export"}

    flags = privacy.address_flags(crm)
    assert list(flags.columns) == ["address_id", "flag", "set_by", "set_at"]
    assert flags[["address_id", "flag", "set_by"]].values.tolist() == [
        [a, "no_transfer", "pia"], [b, "no_export", "pia"]]

    with pytest.raises(crmkit.PermissionDenied):
        privacy.clear_flag(tina, a, "no_transfer")
    assert privacy.clear_flag(pia, a, "no_transfer") is True
    assert privacy.clear_flag(pia, a, "no_transfer") is False
    assert privacy.check_transfer(crm, "teams_manual", [a]).allowed_ids == [a]
    assert (crm.audit_log(scope="address_flags")["key"] == f"{a}.no_transfer").sum() == 2

    with pytest.raises(crmkit.ValidationError):
        privacy.set_flag(pia, a, "no_fax")
    with pytest.raises(crmkit.NotFound):
        privacy.set_flag(pia, 999)


# -- the log ----------------------------------------------------------------------------------------------

def test_reading_the_log_needs_privacy_read_log(crm: CRM, tmp_path: Path) -> None:
    (a,) = _addresses(crm, 1)
    _log(crm, [_record(a)])
    tina = as_user(crm, "tina")
    for read in (
        lambda: privacy.transfer_log(tina), lambda: privacy.access_report(tina, a),
        lambda: privacy.recipient_report(tina, "r1"), lambda: privacy.transfer_counts(tina),
        lambda: privacy.export_transfer_log(tina, tmp_path / "x.csv"),
    ):
        with pytest.raises(crmkit.PermissionDenied) as info:
            read()
        assert info.value.right == "privacy.read_log"
    assert not (tmp_path / "x.csv").exists()
    assert len(privacy.transfer_log(as_user(crm, "pia"))) == 1


def test_log_rows_and_filters(crm: CRM) -> None:
    a, b = _addresses(crm, 2)
    when = datetime(2025, 1, 15, 9, 30)
    written = _log(crm, [
        _record(a, "r1", logged_at=when, purpose="Angebot", message_key="k1"),
        _record(a, "r2", logged_at=when, message_key="k1", outcome="failed", detail="Graph 500"),
        _record(b, "r1", logged_at=when + timedelta(days=1), channel="teams_campaign", trigger="campaign"),
        _record(b, "r3", logged_at=when, outcome="blocked", detail="flag:no_transfer", message_id=None),
    ])
    assert written == 4
    log = privacy.transfer_log(crm)
    assert list(log.columns) == list(privacy.LOG_COLUMNS)
    assert log.iloc[0]["address_id"] == b and log.iloc[0]["trigger"] == "campaign"  # newest first
    first = log[(log.address_id == a) & (log.recipient_id == "r1")].iloc[0]
    assert first["fields"] == FIELDS and first["purpose"] == "Angebot" and first["user_name"] == "admin"
    assert first["ms_account"] == "admin@contoso.example" and first["logged_at"] == pd.Timestamp(when)
    assert len(privacy.transfer_log(crm, channel="teams_campaign")) == 1
    assert len(privacy.transfer_log(crm, outcome="failed")) == 1
    assert len(privacy.transfer_log(crm, recipient_name="name r")) == 4
    assert len(privacy.transfer_log(crm, since=date(2025, 1, 16))) == 1
    assert len(privacy.transfer_log(crm, until=date(2025, 1, 15))) == 3
    assert len(privacy.transfer_log(crm, message_key="k1")) == 2
    assert len(privacy.transfer_log(crm, limit=1)) == 1


def test_log_writes_in_the_callers_transaction(crm: CRM) -> None:
    (a,) = _addresses(crm, 1)

    def deliver_then_fail(tx: crmkit.store.Tx) -> None:
        privacy.log_transfers(tx, [_record(a, f"r{i}") for i in range(40)])  # bulk path
        privacy.log_transfers(tx, [_record(a, "single")])  # row path
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crm.store.write(deliver_then_fail)
    assert _count(crm) == 0


def test_bulk_and_row_paths_write_the_same(crm: CRM) -> None:
    (a,) = _addresses(crm, 1)
    when = datetime(2025, 2, 1, 8, 0)
    small = [_record(a, "x", logged_at=when, fields=[]), _record(a, "y", logged_at=when, purpose="p")]
    big = [_record(a, f"b{i}", logged_at=when) for i in range(privacy.BULK_ROWS + 1)] + [
        _record(a, "x2", logged_at=when, fields=[]), _record(a, "y2", logged_at=when, purpose="p")]
    assert _log(crm, small) == 2
    assert _log(crm, big) == privacy.BULK_ROWS + 3
    log = privacy.transfer_log(crm).set_index("recipient_id")
    cols = [c for c in privacy.LOG_COLUMNS if c not in ("id", "recipient_id", "recipient_name", "message_id")]
    assert log.loc["x", cols].tolist() == log.loc["x2", cols].tolist()
    assert log.loc["y", cols].tolist() == log.loc["y2", cols].tolist()
    assert log.loc["x", "fields"] == []


def test_message_key_address_recipient_is_unique(crm: CRM) -> None:
    a, b = _addresses(crm, 2)
    rows = [_record(a, "r1", message_key="k"), _record(b, "r1", message_key="k")]
    assert _log(crm, rows) == 2
    with pytest.raises(privacy.DuplicateTransfer):
        _log(crm, [_record(a, "r2", message_key="k"), _record(a, "r1", message_key="k")])
    assert _count(crm) == 2  # the whole transaction rolled back
    many = [_record(a, f"n{i}", message_key="k") for i in range(30)] + rows
    assert _log(crm, many, on_conflict="ignore") == 30  # a resumed send logs only what is new
    assert _log(crm, rows, on_conflict="ignore") == 0
    # Rows without a message key (file exports) never collide.
    assert _log(crm, [_record(a, "r1"), _record(a, "r1")]) == 2
    # A repeat inside one call counts too.
    with pytest.raises(privacy.DuplicateTransfer):
        _log(crm, [_record(a, "x", message_key="k2"), _record(a, "x", message_key="k2")])
    assert _log(crm, [_record(a, "x", message_key="k2"), _record(a, "x", message_key="k2")], on_conflict="ignore") == 1
    # The check is on the exact values: the same recipient under another key, or None, is new.
    assert _log(crm, [_record(a, "x", message_key="k3"), _record(a, None, message_key="k3")]) == 2
    assert _log(crm, [_record(a, None, message_key="k3")], on_conflict="ignore") == 0


@pytest.mark.parametrize("bad", [
    {"outcome": "maybe"}, {"channel": "fax"}, {"trigger": "cron"}, {"fields": "company"},
    {"fields": ["Company Name"]}, {"address_id": "1"}, {"recipient_id": 5}, {"logged_at": "yesterday"},
])
def test_malformed_rows_are_refused(crm: CRM, bad: dict[str, object]) -> None:
    (a,) = _addresses(crm, 1)
    row = {**_record(a).__dict__, **bad}
    with pytest.raises(crmkit.ValidationError):
        crm.store.write(lambda tx: privacy.log_transfers(tx, [_record(a), row]))
    assert _count(crm) == 0


def test_the_log_is_append_only(crm: CRM) -> None:
    words = ("update", "delete", "edit", "remove", "set_log", "change")
    assert [n for n in privacy.__all__ if any(w in n.lower() for w in words)] == []
    assert [n for n in dir(privacy) if "purge" in n] == ["purge_transfer_log"]


def test_reports_per_address_and_per_recipient(crm: CRM) -> None:
    a, b = _addresses(crm, 2)
    _log(crm, [_record(a, "r1"), _record(a, "r2"), _record(b, "r1")])
    access = privacy.access_report(crm, a)
    assert sorted(access["recipient_id"]) == ["r1", "r2"] and set(access["address_id"]) == {a}
    to_r1 = privacy.recipient_report(crm, "r1")
    assert sorted(to_r1["address_id"]) == [a, b]
    assert privacy.access_report(crm, 999).empty


def test_export_csv_and_excel_round_trip(crm: CRM, tmp_path: Path) -> None:
    a, b = _addresses(crm, 2)
    when = datetime(2025, 3, 1, 12, 0, 5)
    _log(crm, [
        _record(a, "r1", logged_at=when, purpose="Angebot; Nachfrage", message_key="k1"),
        _record(b, "r2", logged_at=when, recipient_name="=HYPERLINK(\"https://evil.example\")", fields=[]),
    ])
    expected = privacy.transfer_log(crm)

    assert privacy.export_transfer_log(crm, tmp_path / "log.csv") == 2
    back = pd.read_csv(tmp_path / "log.csv", keep_default_na=False)
    assert list(back.columns) == list(privacy.LOG_COLUMNS)
    assert back["id"].tolist() == expected["id"].tolist()
    csv_rows = back.set_index("recipient_id")
    assert csv_rows.loc["r2", "recipient_name"] == "'=HYPERLINK(\"https://evil.example\")"  # neutralised
    assert csv_rows.loc["r1", "fields"] == ";".join(FIELDS) and csv_rows.loc["r2", "fields"] == ""
    assert csv_rows.loc["r1", "purpose"] == "Angebot; Nachfrage"
    assert back["logged_at"].tolist() == ["2025-03-01 12:00:05"] * 2
    assert back["address_id"].tolist() == expected["address_id"].tolist()

    assert privacy.export_transfer_log(crm, tmp_path / "log.xlsx") == 2
    sheet = openpyxl.load_workbook(tmp_path / "log.xlsx").active
    assert sheet is not None
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == list(privacy.LOG_COLUMNS)
    records = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    xlsx_rows = {r["recipient_id"]: r for r in records}
    assert [r[0] for r in rows[1:]] == expected["id"].tolist()
    assert xlsx_rows["r1"]["logged_at"] == when
    assert xlsx_rows["r1"]["fields"] == ";".join(FIELDS)
    assert xlsx_rows["r1"]["message_key"] == "k1"
    assert xlsx_rows["r2"]["recipient_name"] == "=HYPERLINK(\"https://evil.example\")"  # exact text
    name_col = list(privacy.LOG_COLUMNS).index("recipient_name") + 1
    assert all(sheet.cell(row=r, column=name_col).data_type == "s" for r in (2, 3))  # text, never a formula

    assert privacy.export_transfer_log(crm, tmp_path / "only_a.csv", address_id=a) == 1
    exports = crm.audit_log(scope="privacy")
    assert (exports["key"] == "transfer_log.export").sum() == 3
    with pytest.raises(crmkit.ValidationError):
        privacy.export_transfer_log(crm, tmp_path / "log.pdf")


def test_purge_respects_retention_and_needs_privacy_admin(crm: CRM) -> None:
    (a,) = _addresses(crm, 1)
    now = datetime.now()
    _log(crm, [_record(a, "old", logged_at=now - timedelta(days=800)),
               _record(a, "recent", logged_at=now - timedelta(days=10))])
    with pytest.raises(crmkit.PermissionDenied):
        privacy.purge_transfer_log(as_user(crm, "tina"))
    assert _count(crm) == 2
    pia = as_user(crm, "pia")
    assert privacy.purge_transfer_log(pia) == 1
    assert privacy.transfer_log(crm)["recipient_id"].tolist() == ["recent"]
    privacy.set_retention_days(pia, 5)
    assert privacy.purge_transfer_log(pia) == 1
    assert privacy.purge_transfer_log(pia) == 0
    audit = crm.audit_log(scope="privacy")
    purges = audit[audit.key == "transfer_log.purge"]["new_value"].tolist()
    assert ['"deleted": 0' in p for p in purges] == [True, False, False]  # newest first, each with its count


def test_compact_keeps_rows_and_constraints(crm: CRM) -> None:
    ids = _addresses(crm, 3)
    _log(crm, [_record(a, f"r{i}", message_key="k") for i in range(5) for a in reversed(ids)])
    before = privacy.transfer_log(crm).sort_values("id").reset_index(drop=True)
    with pytest.raises(crmkit.PermissionDenied):
        privacy.compact_transfer_log(as_user(crm, "tina"))
    assert privacy.compact_transfer_log(as_user(crm, "pia")) == 15
    after = privacy.transfer_log(crm).sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    physical = crm.store.df("SELECT address_id FROM transfer_log")["address_id"].tolist()
    assert physical == sorted(physical)
    with pytest.raises(privacy.DuplicateTransfer):
        _log(crm, [_record(ids[0], "r0", message_key="k")])
    if crm.store.dialect == "postgresql":  # its indexes stay (CLUSTER), the unique backstop among them
        indexes = crm.store.df("SELECT indexname AS index_name FROM pg_indexes WHERE tablename = 'transfer_log'")
        assert {"transfer_log_address_time", "transfer_log_unique", "transfer_log_dedupe"} <= set(
            indexes["index_name"])
    else:
        indexes = crm.store.df("SELECT index_name FROM duckdb_indexes()")
        assert {"transfer_log_address", "transfer_log_dedupe"} <= set(indexes["index_name"])


def test_transfer_counts_per_day_and_channel(crm: CRM) -> None:
    (a,) = _addresses(crm, 1)
    day = datetime(2025, 4, 1, 10)
    _log(crm, [_record(a, "r1", logged_at=day), _record(a, "r2", logged_at=day),
               _record(a, "r3", logged_at=day + timedelta(days=1), channel="file_export")])
    counts = privacy.transfer_counts(crm)
    assert counts.values.tolist() == [[pd.Timestamp("2025-04-01"), "teams_manual", 2],
                                      [pd.Timestamp("2025-04-02"), "file_export", 1]]
