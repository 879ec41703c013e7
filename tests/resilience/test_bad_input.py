"""A bad-input corpus over every public entry point: a typed CrmkitError with a clear message, nothing written.

Python API cases and widget cases run in process against an in-memory CRM (Teams planned against an
offline directory, so no tenant is needed: every refusal here happens before anything would leave);
CLI cases run ``python -m crmkit.cli`` as a real process. Each case snapshots every table before and after.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from support.dbstate import BERND_ID, db_snapshot, offline_campaigns, offline_teams, snapshot_diff

import crmkit
from crmkit import errors, privacy, record_links
from crmkit.campaigns import Campaigns
from crmkit.crm import CRM
from crmkit.teams import activation
from crmkit.teams import display_format as dfm
from crmkit.teams.display_format import DisplayFormat, FieldFormat

BERND = "bernd.weber@contoso.example"
ME_UPN = "anna.schmidt@contoso.example"
DISABLED = "disabled.user@contoso.example"


@dataclass
class World:
    crm: CRM
    camp: Campaigns
    activity: int
    reaction: int
    action: int
    tmp: Path


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One CRM for the whole corpus: every case must leave it unchanged, and each case checks that it did."""
    tmp = tmp_path_factory.mktemp("bad-input")
    crm = crmkit.open(":memory:")
    activation.enable(crm)
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    crm.add_address(company="Müller & Söhne GmbH", city="Berlin", country="DE", email="info@mueller.example")
    crm.add_address(last_name="Keller", first_name="Eva", city="Zürich", country="CH")
    privacy.set_policy(crm, "file_export", "log_purpose")
    offline_teams(crm)
    camp = offline_campaigns(crm)
    cid = camp.add_campaign("Frühjahr")
    aid = camp.add_activity(cid, "Mailing")
    camp.add_participants(aid, [1])
    rid = camp.add_reaction(aid, "Interesse")
    act = camp.add_teams_action(rid, "Vertrieb informieren", recipients=[BERND], timing="delay", delay=60)
    return World(crm, camp, aid, rid, act, tmp)


@pytest.fixture
def world(shared_world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("CRMKIT_HOME", str(shared_world.tmp / "home"))
    return shared_world


def _send(**kw: Any) -> Callable[[World], Any]:
    args = {"records": [1], "to": [BERND], "subject": "Leads", **kw}
    return lambda w: w.crm.teams.send(args.pop("records"), args.pop("to"), args.pop("subject"), **args)


def _preview(**kw: Any) -> Callable[[World], Any]:
    def run(w: World) -> Any:
        args = {"records": [1], "to": [BERND], "subject": "Leads", **kw}
        return w.crm.teams.preview(args.pop("records"), args.pop("to"), args.pop("subject"), **args)
    return run


def _as_user(user: str, operation: Callable[[World], Any]) -> Callable[[World], Any]:
    """``operation`` in a session of another CRM user on the same store."""
    return lambda w: operation(dataclasses.replace(w, crm=CRM(w.crm.store, user)))


def _fmt(**changes: Any) -> Callable[[World], Any]:
    return lambda w: dfm.save_format(w.crm, dfm.default_format().update("company", **changes))


def _action(**options: Any) -> Callable[[World], Any]:
    base = {"recipients": [BERND]}
    return lambda w: w.camp.add_teams_action(w.reaction, "T", **{**base, **options})


def _campaign_account(user: str, password: str) -> Callable[[World], Any]:
    def run(w: World) -> Any:
        from crmkit.auth import Microsoft365

        m365 = Microsoft365(w.crm)
        try:
            return m365.campaign.set_password(user, password)
        finally:
            m365.close()
    return run


V, NF, TD = errors.ValidationError, errors.NotFound, errors.TeamsError
IR = errors.InvalidRecipient
FE = dfm.DisplayFormatError

# (case id, operation, expected error, a word the message must contain)
API_CASES: list[tuple[str, Callable[[World], Any], type[Exception], str]] = [
    # -- addresses (reads)
    ("addresses-where-empty", lambda w: w.crm.addresses(where=""), V, "empty"),
    ("addresses-where-not-str", lambda w: w.crm.addresses(where=42), V, "empty"),  # type: ignore[arg-type]
    ("addresses-where-unparseable", lambda w: w.crm.addresses(where="city = = 'x'"), V, "parse"),
    ("addresses-where-two-statements", lambda w: w.crm.addresses(where="1=1); DELETE FROM users; --"),
     errors.UnsafeQuery, "one read-only"),
    ("addresses-where-table-function", lambda w: w.crm.addresses(where="id IN (SELECT 1 FROM read_text('/etc/hosts'))"),
     errors.UnsafeQuery, "table functions"),
    ("addresses-where-pragma", lambda w: w.crm.addresses(where="1=1); PRAGMA database_list; --"),
     errors.UnsafeQuery, "one read-only"),
    ("addresses-where-attach", lambda w: w.crm.addresses(where="1=1); ATTACH '/tmp/x.db' AS x; --"),
     errors.UnsafeQuery, "one read-only"),
    ("addresses-params-dict", lambda w: w.crm.addresses(where="city = ?", params={"a": 1}), V, "params"),  # type: ignore[arg-type]
    ("addresses-params-missing", lambda w: w.crm.addresses(where="city = ?"), V, "cannot run"),
    ("addresses-params-wrong-type", lambda w: w.crm.addresses(where="id = ?", params=["eins"]), V, "cannot run"),
    ("addresses-unknown-column", lambda w: w.crm.addresses(columns=["id", "secret"]), V, "Unknown address columns"),
    ("addresses-unknown-filter", lambda w: w.crm.addresses(passwd="x"), V, "Unknown address columns"),
    ("addresses-order-injection", lambda w: w.crm.addresses(order_by="id; DROP TABLE users"), V, "order_by"),
    ("addresses-order-three-words", lambda w: w.crm.addresses(order_by="city desc nulls"), V, "order_by"),
    ("addresses-order-empty", lambda w: w.crm.addresses(order_by=""), V, "order_by"),
    ("addresses-limit-zero", lambda w: w.crm.addresses(limit=0), V, "limit"),
    ("addresses-limit-huge", lambda w: w.crm.addresses(limit=10**9), V, "limit"),
    ("addresses-limit-float", lambda w: w.crm.addresses(limit=2.5), V, "limit"),  # type: ignore[arg-type]
    ("addresses-offset-negative", lambda w: w.crm.addresses(limit=5, offset=-1), V, "offset"),
    ("addresses-search-not-str", lambda w: w.crm.addresses(search=["x"]), V, "search"),  # type: ignore[arg-type]
    ("address-id-text", lambda w: w.crm.address("1; DROP TABLE addresses"), V, "integer"),
    ("address-id-bool", lambda w: w.crm.address(True), V, "integer"),
    ("address-missing", lambda w: w.crm.address(999), NF, "999"),
    ("address-page-negative", lambda w: w.crm.address_page(-1), V, "page"),
    ("address-page-size-zero", lambda w: w.crm.address_page(0, 0), V, "size"),
    ("address-page-size-huge", lambda w: w.crm.address_page(0, 10**6), V, "size"),
    ("address-page-size-str", lambda w: w.crm.address_page(0, "25"), V, "size"),  # type: ignore[arg-type]
    ("address-page-bad-where", lambda w: w.crm.address_page(where="nosuch = 1"), V, "not an address column"),
    # -- SQL filters: an expression over the address columns only (no other table, subquery, other function)
    ("addresses-where-exists-transfer-log", lambda w: w.crm.addresses(
        where="EXISTS (SELECT 1 FROM transfer_log WHERE recipient_name LIKE ?)", params=["B%"]),
     errors.UnsafeQuery, "subqueries are not allowed"),
    ("addresses-where-in-subquery-users", lambda w: w.crm.addresses(where="owner IN (SELECT name FROM users)"),
     errors.UnsafeQuery, "users"),
    ("addresses-where-scalar-subquery-m365", lambda w: w.crm.addresses(
        where="(SELECT count(*) FROM m365_accounts) > 0"), errors.UnsafeQuery, "m365_accounts"),
    ("count-addresses-where-campaign-account", lambda w: w.crm.count_addresses(
        where="EXISTS (SELECT 1 FROM campaign_account WHERE password_ciphertext LIKE ?)", params=["a%"]),
     errors.UnsafeQuery, "campaign_account"),
    ("address-page-where-audit", lambda w: w.crm.address_page(where="EXISTS (FROM audit)"),
     errors.UnsafeQuery, "audit"),
    ("addresses-where-other-table-column", lambda w: w.crm.addresses(where="transfer_log.recipient_name = 'x'"),
     errors.UnsafeQuery, "not an address column"),
    ("addresses-where-query-table", lambda w: w.crm.addresses(where="EXISTS (FROM query_table('users'))"),
     errors.UnsafeQuery, "table function 'query_table'"),
    ("addresses-where-unknown-function", lambda w: w.crm.addresses(where="nosuchfn(city) = 1"),
     errors.UnsafeQuery, "function 'nosuchfn' is not allowed"),
    ("addresses-where-getenv", lambda w: w.crm.addresses(where="getenv('HOME') = city"),
     errors.UnsafeQuery, "function 'getenv' is not allowed"),
    ("addresses-where-aggregate", lambda w: w.crm.addresses(where="count(*) > 0"),
     errors.UnsafeQuery, "function 'count' is not allowed"),
    ("addresses-where-window", lambda w: w.crm.addresses(where="row_number() OVER () > 0"),
     errors.UnsafeQuery, "window functions"),
    ("addresses-where-bad-cast", lambda w: w.crm.addresses(where="CAST(city AS STRUCT(a INT)) IS NULL"),
     errors.UnsafeQuery, "cast to STRUCT"),
    ("addresses-where-paren-escape", lambda w: w.crm.count_addresses(where="city = 'Berlin') OR (1=1", country="CH"),
     errors.UnsafeQuery, "parenthesis"),
    ("addresses-where-paren-union", lambda w: w.crm.addresses(where="1=1) UNION SELECT * FROM users WHERE (1=1"),
     errors.UnsafeQuery, "parenthesis"),
    ("addresses-where-conversion", lambda w: w.crm.addresses(where="CAST(city AS INTEGER) = 1"), V, "cannot run"),
    ("address-page-bad-order", lambda w: w.crm.address_page(order_by="password"), V, "order_by"),
    # -- addresses (writes)
    ("add-address-empty", lambda w: w.crm.add_address(), V, "company or a last name"),
    ("add-address-blank-company", lambda w: w.crm.add_address(company="   "), V, "company or a last name"),
    ("add-address-number", lambda w: w.crm.add_address(company=42), V, "takes text"),
    ("add-address-bytes", lambda w: w.crm.add_address(company=b"Bytes AG"), V, "takes text"),
    ("add-address-too-long", lambda w: w.crm.add_address(company="x" * 501), V, "500"),
    ("add-address-unknown-field", lambda w: w.crm.add_address(company="X", id=7), V, "Unknown address fields"),
    ("add-address-created-by", lambda w: w.crm.add_address(company="X", created_by="eve"), V, "Unknown"),
    ("add-address-kind", lambda w: w.crm.add_address(company="X", kind="robot"), V, "kind"),
    ("add-address-parent-missing", lambda w: w.crm.add_address(company="X", parent_id=999), V, "parent_id"),
    ("add-address-parent-text", lambda w: w.crm.add_address(company="X", parent_id="1"), V, "integer"),
    ("update-address-nothing", lambda w: w.crm.update_address(1), V, "Nothing to change"),
    ("update-address-missing", lambda w: w.crm.update_address(999, city="X"), NF, "999"),
    ("update-address-bad-id", lambda w: w.crm.update_address("1", city="X"), V, "integer"),
    ("update-address-field", lambda w: w.crm.update_address(1, modified_by="eve"), V, "Unknown"),
    ("update-address-list", lambda w: w.crm.update_address(1, city=["a"]), V, "takes text"),
    # -- contacts and contact types
    ("add-contact-unknown-type", lambda w: w.crm.add_contact(1, "ZZ", "x"), V, "contact type"),
    ("add-contact-no-subject", lambda w: w.crm.add_contact(1, "TEL", "  "), V, "subject"),
    ("add-contact-subject-none", lambda w: w.crm.add_contact(1, "TEL", None), V, "subject"),  # type: ignore[arg-type]
    ("add-contact-missing-address", lambda w: w.crm.add_contact(999, "TEL", "x"), NF, "999"),
    ("add-contact-bad-id", lambda w: w.crm.add_contact(1.5, "TEL", "x"), V, "integer"),  # type: ignore[arg-type]
    ("add-contact-type-long-code", lambda w: w.crm.add_contact_type("TOOLONGCODE", "x"), V, "1-8"),
    ("add-contact-type-no-label", lambda w: w.crm.add_contact_type("XY", ""), V, "label"),
    ("add-contact-type-taken", lambda w: w.crm.add_contact_type("TS", "Other"), V, "used by"),
    ("change-contact-type-missing", lambda w: w.crm.change_contact_type_code("QQ", "QR"), NF, "QQ"),
    ("change-contact-type-taken", lambda w: w.crm.change_contact_type_code("TEL", "TS"), V, "taken"),
    # -- settings, users, roles
    ("set-setting-unknown", lambda w: w.crm.set_setting("no.such", 1), V, "Unknown setting"),
    ("set-setting-enabled-str", lambda w: w.crm.set_setting("teams.enabled", "yes"), V, "bool"),
    ("set-setting-enabled-int", lambda w: w.crm.set_setting("teams.enabled", 1), V, "bool"),
    ("set-setting-retention-str", lambda w: w.crm.set_setting("privacy.retention_days", "10"), V, "int"),
    ("set-setting-language-fr", lambda w: w.crm.set_setting("ui.default_language", "fr"), V, "one of"),
    ("set-setting-prefix-int", lambda w: w.crm.set_setting("teams.subject_prefix", 5), V, "str"),
    ("set-setting-unstorable", lambda w: w.crm.set_setting("teams.tenant_id", object()), V, "cannot be stored"),
    ("set-user-setting-unknown", lambda w: w.crm.set_user_setting("theme", "dark"), V, "Unknown setting"),
    ("set-user-setting-language", lambda w: w.crm.set_user_setting("language", "klingon"), V, "one of"),
    ("set-user-setting-page-size", lambda w: w.crm.set_user_setting("page_size", "25"), V, "int"),
    ("add-user-empty", lambda w: w.crm.add_user("", "Nobody"), V, "1-64"),
    ("add-user-too-long", lambda w: w.crm.add_user("u" * 65, "Long"), V, "1-64"),
    ("add-user-not-str", lambda w: w.crm.add_user(7, "Seven"), V, "1-64"),  # type: ignore[arg-type]
    ("add-user-exists", lambda w: w.crm.add_user("vera", "Vera 2"), V, "exists"),
    ("add-user-unknown-role", lambda w: w.crm.add_user("neo", "Neo", roles=["root"]), V, "Unknown roles"),
    ("set-roles-unknown-user", lambda w: w.crm.set_roles("nobody", ["sales"]), errors.UnknownUser, "nobody"),
    ("set-roles-unknown-role", lambda w: w.crm.set_roles("vera", ["superuser"]), V, "Unknown roles"),
    ("open-unknown-user", lambda w: CRM(w.crm.store, "mallory"), errors.UnknownUser, "mallory"),
    # -- teams.send / preview: options, records, recipients, subject, message
    ("send-chat-kind", _send(chat="channel"), V, "chat"),
    ("send-mode", _send(mode="bulk"), V, "mode"),
    ("send-record-format", _send(record_format="pdf"), V, "record_format"),
    ("send-importance", _send(importance="critical"), V, "importance"),
    ("send-unknown-option", _send(colour="red"), V, "colour"),
    ("send-records-empty", _send(records=[]), V, "empty"),
    ("send-records-bool", _send(records=True), V, "records"),
    ("send-records-text-ids", _send(records=["1", "2"]), V, "integer"),
    ("send-records-frame-no-id", _send(records=pd.DataFrame({"company": ["x"]})), V, "'id'"),
    ("send-records-bad-sql", _send(records="1=1; DELETE FROM addresses"), V, "one read-only"),
    ("send-records-sql-subquery", _send(records="EXISTS (SELECT 1 FROM transfer_log)"), errors.UnsafeQuery,
     "transfer_log"),
    ("send-records-sql-two-statements", _send(records="1=1); DELETE FROM addresses; --"), errors.UnsafeQuery,
     "read-only"),
    ("send-records-missing", _send(records=[1, 999]), NF, "999"),
    ("send-records-object", _send(records=object()), V, "records"),
    ("send-subject-empty", _send(subject="  "), V, "subject"),
    ("send-subject-none", _send(subject=None), V, "subject"),
    ("send-subject-too-long", _send(subject="x" * 300), V, "255"),
    ("send-message-not-str", _send(message=["hi"]), V, "string"),
    ("send-to-empty", _send(to=[]), V, "recipient"),
    ("send-to-none", _send(to=None), V, "recipient"),
    ("send-to-unknown", _send(to=["nobody@contoso.example"]), V, "not in the organisation"),
    ("send-to-disabled", _send(to=[DISABLED]), V, "disabled"),
    ("send-to-self-only", _send(to=[ME_UPN]), V, "yourself"),
    ("send-to-dict-without-id", _send(to=[{"name": "Bernd"}]), V, "recipient"),
    ("send-to-mixed-unknown", _send(to=[BERND, "ghost@contoso.example"]), V, "ghost"),
    ("send-purpose-not-text", _send(purpose=42), V, "purpose"),
    ("send-purpose-too-long", _send(purpose="p" * 5000), V, "purpose"),
    ("preview-chat-kind", _preview(chat="broadcast"), V, "chat"),
    ("preview-records-empty", _preview(records=[]), V, "empty"),
    ("preview-records-sql-function", _preview(records="read_csv('/etc/passwd') IS NOT NULL"), errors.UnsafeQuery,
     "function 'read_csv' is not allowed"),
    ("preview-to-unknown", _preview(to=["who@contoso.example"]), V, "directory"),
    ("preview-unknown-option", _preview(colour="red"), V, "colour"),
    ("preview-importance", _preview(importance="loud"), V, "importance"),
    ("send-to-blank-string", _send(to=["  "]), V, "empty"),
    # -- recipients: the form is checked before any look-up; the error names each one, cut and escaped
    ("send-to-markup-address", _send(to=["<script>alert(1)</script>@x.de"]), IR, "not a user name"),
    ("send-to-slash", _send(to=[BERND, "a/b@contoso.example"]), IR, "'a/b@contoso.example' is not a user name"),
    ("send-to-5kb", _send(to=["x" * 5000 + "@contoso.example"]), IR, "xxx…'"),
    ("send-to-nul", _send(to=["bernd\x00@contoso.example"]), IR, "bernd\\x00@contoso.example' is not a user"),
    ("send-to-not-an-email", _send(to=["not-an-email"]), IR, "'not-an-email' is not a user name"),
    ("send-to-number", _send(to=[42]), IR, "'42' is not a user name"),
    ("send-to-query", _send(to=["a?b=c@contoso.example"]), IR, "not a user name"),
    ("send-to-unknown-long", _send(to=["n" * 60 + "@contoso-" + "z" * 40 + ".example"]), IR,
     "zzz…' is not in the organisation"),
    ("preview-to-slash", _preview(to=["a/b@contoso.example"]), IR, "not a user name"),
    ("preview-to-row-bad-id", _preview(to=[{"id": "../me", "displayName": "Ich"}]), IR, "not a user name"),
    # -- other refused sends: too large, no right, a bad idempotency key (preview takes none)
    ("send-too-large", _send(message="Text " * 7000), errors.MessageTooLarge, "KB"),
    ("preview-too-large", _preview(message="Text " * 7000), errors.MessageTooLarge, "KB"),
    ("send-digest-too-large", _send(message="Text " * 7000, mode="digest"), errors.MessageTooLarge, "KB"),
    ("send-viewer-no-right", _as_user("vera", _send()), errors.PermissionDenied, "teams.send"),
    ("preview-viewer-no-right", _as_user("vera", _preview()), errors.PermissionDenied, "teams.send"),
    ("send-idempotency-key-empty", _send(idempotency_key=""), V, "idempotency_key"),
    ("send-idempotency-key-number", _send(idempotency_key=7), V, "idempotency_key"),
    ("send-idempotency-key-long", _send(idempotency_key="k" * 201), V, "idempotency_key"),
    ("send-idempotency-key-nul", _send(idempotency_key="k\x00"), V, "idempotency_key"),
    ("preview-idempotency-key", _preview(idempotency_key="k"), V, "idempotency_key"),
    # -- display format edits
    ("format-not-a-format", lambda w: dfm.save_format(w.crm, {"fields": []}), FE, "DisplayFormat"),
    ("format-empty-label", _fmt(label_de=""), FE, "label_de"),
    ("format-long-label", _fmt(label_en="L" * 500), FE, "label_en"),
    ("format-bad-kind", _fmt(kind="html"), FE, "kind"),
    ("format-kind-not-allowed", _fmt(kind="date"), FE, "date"),
    ("format-bad-empty", _fmt(empty="hide"), FE, "empty"),
    ("format-empty-text-missing", _fmt(empty="text", empty_text=""), FE, "empty_text"),
    ("format-text-pattern", _fmt(pattern="%d"), dfm.BadFormatPattern, "pattern"),
    ("format-unknown-field", lambda w: dfm.save_format(w.crm, dfm.default_format().add("password")),
     dfm.UnknownDisplayField, "password"),
    ("format-duplicate-field", lambda w: dfm.save_format(w.crm, DisplayFormat((
        FieldFormat.for_field("city"), FieldFormat.for_field("city")))), dfm.DuplicateDisplayField, "city"),
    ("format-bad-date-pattern", lambda w: dfm.save_format(w.crm, dfm.default_format().add(
        "created_at", kind="date", pattern="%Q")), dfm.BadFormatPattern, "date pattern"),
    ("format-bad-phone-pattern", lambda w: dfm.save_format(w.crm, dfm.default_format().update(
        "phone", kind="phone", pattern="e999:x")), dfm.BadFormatPattern, "phone"),
    ("format-from-dict-garbage", lambda w: DisplayFormat.from_dict({"version": 2}), FE, "version"),
    ("format-preview-missing-address", lambda w: dfm.preview(w.crm, 999), NF, "999"),
    # -- privacy
    ("privacy-unknown-channel", lambda w: privacy.set_policy(w.crm, "carrier_pigeon", "allow"), V, "channel"),
    ("privacy-unknown-action", lambda w: privacy.set_policy(w.crm, "teams_manual", "maybe"), V, "allow"),
    ("privacy-policy-unknown-channel", lambda w: privacy.policy(w.crm, "fax"), V, "channel"),
    ("privacy-personal-fields", lambda w: privacy.set_personal_fields(w.crm, ["email", "password"]), V, "password"),
    ("privacy-retention-zero", lambda w: privacy.set_retention_days(w.crm, 0), V, "36500"),
    ("privacy-retention-str", lambda w: privacy.set_retention_days(w.crm, "30"), V, "36500"),  # type: ignore[arg-type]
    ("privacy-retention-bool", lambda w: privacy.set_retention_days(w.crm, True), V, "36500"),
    ("privacy-flag-unknown", lambda w: privacy.set_flag(w.crm, 1, "no_fax"), V, "flag"),
    ("privacy-flag-bad-id", lambda w: privacy.set_flag(w.crm, "1"), V, "integer"),
    ("privacy-flag-missing-address", lambda w: privacy.set_flag(w.crm, 999), NF, "999"),
    ("privacy-clear-flag-unknown", lambda w: privacy.clear_flag(w.crm, 1, "nope"), V, "flag"),
    ("privacy-check-purpose-required", lambda w: privacy.check_transfer(w.crm, "file_export", [1], None), V,
     "purpose"),
    ("privacy-log-limit", lambda w: privacy.transfer_log(w.crm, limit=0), V, "limit"),
    ("privacy-log-since", lambda w: privacy.transfer_log(w.crm, since="yesterday"), V, "date"),
    ("privacy-counts-bucket", lambda w: privacy.transfer_counts(w.crm, bucket="hour"), V, "bucket"),
    ("privacy-counts-filter", lambda w: privacy.transfer_counts(w.crm, colour="red"), V, "Unknown filters"),
    ("privacy-export-format", lambda w: privacy.export_transfer_log(w.crm, w.tmp / "log.pdf"), V, "csv or xlsx"),
    ("privacy-export-filter", lambda w: privacy.export_transfer_log(w.crm, w.tmp / "log.csv", colour="x"),
     V, "Unknown filters"),
    # -- campaigns
    ("campaign-name-empty", lambda w: w.camp.add_campaign("  "), V, "required"),
    ("campaign-name-not-str", lambda w: w.camp.add_campaign(5), V, "text"),  # type: ignore[arg-type]
    ("campaign-name-too-long", lambda w: w.camp.add_campaign("c" * 201), V, "200"),
    ("campaign-rename-missing", lambda w: w.camp.rename_campaign(999, "X"), NF, "999"),
    ("campaign-rename-bad-id", lambda w: w.camp.rename_campaign("1", "X"), V, "integer"),
    ("activity-kind", lambda w: w.camp.add_activity(1, "A", kind="telepathy"), V, "kind"),
    ("activity-missing-campaign", lambda w: w.camp.add_activity(999, "A"), NF, "999"),
    ("participants-missing-address", lambda w: w.camp.add_participants(w.activity, [1, 999]), NF, "999"),
    ("participants-bad-id", lambda w: w.camp.add_participants(w.activity, ["x"]), V, "integer"),
    ("participants-missing-activity", lambda w: w.camp.add_participants(999, [1]), NF, "999"),
    ("reaction-duplicate", lambda w: w.camp.add_reaction(w.activity, "Interesse"), V, "already"),
    ("reaction-empty-name", lambda w: w.camp.add_reaction(w.activity, ""), V, "required"),
    ("action-no-recipients", _action(recipients=[]), V, "recipient"),
    ("action-recipient-number", _action(recipients=[42]), V, "recipient"),
    ("action-recipient-empty-str", _action(recipients=["  "]), V, "recipient"),
    ("action-timing", _action(timing="someday"), V, "timing"),
    ("action-delay-negative", _action(timing="delay", delay=-5), V, "positive"),
    ("action-delay-missing", _action(timing="delay"), V, "delay"),
    ("action-at-not-datetime", _action(timing="at", at="tomorrow"), V, "datetime"),
    ("action-chat", _action(chat="channel"), V, "chat"),
    ("action-importance", _action(importance="meh"), V, "importance"),
    ("action-bool-option", _action(record_contact="yes"), V, "True or False"),
    ("action-unknown-field", _action(colour="red"), V, "Unknown action fields"),
    ("action-template-placeholder", _action(message="Hallo {passwort}"), V, "Unknown placeholder"),
    ("action-template-brace", _action(subject="Hallo {company"), V, "brace"),
    ("action-message-huge", _action(message="m" * 20_001), V, "20,000"),
    ("action-missing-reaction", lambda w: w.camp.add_teams_action(999, "T", recipients=[BERND]), NF, "999"),
    ("action-update-missing", lambda w: w.camp.update_action(999, description="x"), NF, "999"),
    ("action-update-bad-timing", lambda w: w.camp.update_action(w.action, timing="later"), V, "timing"),
    # -- campaign action recipients: checked and resolved in the directory when saved
    ("action-recipient-not-an-email", _action(recipients=["not-an-email"]), IR, "Cannot save"),
    ("action-recipient-markup", _action(recipients=["<b>x</b>@x.de"]), IR, "not a user name"),
    ("action-recipient-nul", _action(recipients=["a\x00@contoso.example"]), IR, "a\\x00@"),
    ("action-recipient-5kb", _action(recipients=["r" * 5000]), IR, "rrr…'"),
    ("action-recipient-unknown", _action(recipients=[BERND, "ghost@contoso.example"]), IR, "ghost@contoso.example"),
    ("action-recipient-disabled", _action(recipients=[DISABLED]), IR, "disabled account"),
    ("action-update-recipient-unknown", lambda w: w.camp.update_action(w.action, recipients=["ghost@contoso.example"]),
     IR, "Nothing was saved"),
    ("record-reaction-not-participant", lambda w: w.camp.record_reaction(w.reaction, [2], deliver=False),
     V, "not participants"),
    ("record-reaction-missing", lambda w: w.camp.record_reaction(999, [1], deliver=False), NF, "999"),
    ("record-reaction-empty", lambda w: w.camp.record_reaction(w.reaction, [], deliver=False), V, "at least one"),
    ("record-reaction-notes-long", lambda w: w.camp.record_reaction(w.reaction, [1], notes="n" * 2001,
                                                                   deliver=False), V, "2000"),
    ("campaign-retry-bad-id", lambda w: w.camp.retry(["x"]), V, "integer"),
    # -- the campaign account (accounts)
    ("campaign-account-no-at", _campaign_account("kampagnen", "Secret-1"), V, "name@company"),
    ("campaign-account-empty-password", _campaign_account("k@contoso.example", ""), V, "password"),
    ("campaign-account-padded-password", _campaign_account("k@contoso.example", " Secret-1 "), V, "spaces"),
    ("campaign-account-none-user", _campaign_account(None, "Secret-1"), V, "name@company"),  # type: ignore[arg-type]
]

# -- control characters: C0/C1 controls refused wherever text enters (tab and line breaks only where a field
# holds lines), bidi overrides and isolates refused in subjects; the error names the field
CC = errors.ControlCharacters
API_CASES += [
    ("add-address-nul-bell-first-name", lambda w: w.crm.add_address(first_name="\x00\x07ctrl", last_name="K"), CC,
     "first_name"),
    ("add-address-escape-company", lambda w: w.crm.add_address(company="ACME\x1b[2J"), CC, "U+001B"),
    ("add-address-c1-city", lambda w: w.crm.add_address(company="X", city="Wi\x85en"), CC, "city"),
    ("add-address-newline-street", lambda w: w.crm.add_address(company="X", street="Haupt\nstr. 1"), CC, "street"),
    ("update-address-del-email", lambda w: w.crm.update_address(1, email="info\x7f@x.example"), CC, "email"),
    ("update-address-tab-last-name", lambda w: w.crm.update_address(2, last_name="Kel\tler"), CC, "last_name"),
    ("add-contact-subject-nul", lambda w: w.crm.add_contact(1, "TEL", "Anruf\x00"), CC, "subject"),
    ("add-contact-notes-bell", lambda w: w.crm.add_contact(1, "TEL", "Anruf", notes="Zeile\n\x07"), CC, "notes"),
    ("add-user-display-name-escape", lambda w: w.crm.add_user("neo", "Neo\x1b]0;x\x07"), CC, "display_name"),
    ("set-setting-prefix-nul", lambda w: w.crm.set_setting("teams.subject_prefix", "cobra\x00 - "), CC,
     "teams.subject_prefix"),
    ("set-setting-prefix-bidi", lambda w: w.crm.set_setting("teams.subject_prefix", "cobra \u202e- "), CC,
     "U+202E"),
    ("add-contact-type-label-c1", lambda w: w.crm.add_contact_type("XY", "Be\x9bsuch"), CC, "label"),
    ("send-subject-nul", _send(subject="Leads\x00"), CC, "subject"),
    ("send-subject-newline", _send(subject="Leads\nBcc"), CC, "subject"),
    ("send-subject-rlo", _send(subject="Rechnung \u202efdp.exe"), CC, "U+202E"),
    ("send-subject-isolate", _send(subject="Lead \u2067x\u2069"), CC, "U+2067"),
    ("preview-subject-lro", _preview(subject="Lead \u202dx"), CC, "subject"),
    ("send-message-nul", _send(message="Hallo\x00Welt"), CC, "message"),
    ("send-purpose-escape", _send(purpose="Ange\x1bbot"), CC, "purpose"),
    ("preview-message-c1", _preview(message="Hallo\x9bWelt"), CC, "message"),
    ("format-label-bell", _fmt(label_de="Fir\x07ma"), CC, "label_de"),
    ("campaign-name-nul", lambda w: w.camp.add_campaign("Früh\x00jahr"), CC, "name"),
    ("activity-name-escape", lambda w: w.camp.add_activity(1, "Mail\x1bing"), CC, "name"),
    ("reaction-name-c1", lambda w: w.camp.add_reaction(w.activity, "Inter\x85esse"), CC, "name"),
    ("action-description-nul", lambda w: w.camp.add_teams_action(w.reaction, "Ver\x00trieb", recipients=[BERND]),
     CC, "description"),
    ("action-subject-rlo", _action(subject="Lead \u202e{company}"), CC, "U+202E"),
    ("action-subject-newline", _action(subject="Lead\n{company}"), CC, "subject"),
    ("action-message-bell", _action(message="Hallo\x07 {company}"), CC, "message"),
    ("action-purpose-nul", _action(purpose="Zw\x00eck"), CC, "purpose"),
    ("record-reaction-notes-escape", lambda w: w.camp.record_reaction(w.reaction, [1], notes="Notiz\x1b",
                                                                     deliver=False), CC, "notes"),
    ("campaign-account-user-nul", _campaign_account("kam\x00pagne@contoso.example", "Secret-1"), CC, "username"),
]


# -- »Im CRM öffnen« (crmkit.record_links): the link base, and a visit's query string
API_CASES += [
    ("record-link-base-javascript", lambda w: record_links.set_base(w.crm, "javascript:alert(1)"), V, "https://"),
    ("record-link-base-query", lambda w: record_links.set_base(w.crm, "https://crm.example/a.ipynb?user=tom"), V,
     "without ?"),
    ("record-link-base-no-host", lambda w: record_links.set_base(w.crm, "https:///a.ipynb"), V, "host"),
    ("record-link-base-bidi", lambda w: record_links.set_base(w.crm, "https://crm.example/\u202ea"), V, "https://"),
    ("record-link-base-not-str", lambda w: record_links.set_base(w.crm, 8866), V, "https://"),
    ("record-link-base-viewer", _as_user("vera", lambda w: record_links.set_base(w.crm, "https://crm.example/a")),
     errors.PermissionDenied, "teams.admin"),
    ("record-link-query-text", lambda w: record_links.resolve(w.crm, "record=M%C3%BCller"), V, "record="),
    ("record-link-query-twice", lambda w: record_links.resolve(w.crm, "record=1&record=2"), V, "exactly one"),
    ("record-link-query-huge", lambda w: record_links.resolve(w.crm, "record=" + "9" * 40), V, "record="),
    ("record-link-unknown", lambda w: record_links.resolve(w.crm, "record=424242"), NF, "424242"),
    ("record-link-no-session", lambda w: record_links.resolve(None, "record=1"), errors.PermissionDenied,
     "may not open"),
]

# A large set as one file (issue 17 part 4): the flag and the threshold are checked before anything is resolved.
_THRESHOLD = "file_threshold is a whole number from 1"
API_CASES += [
    ("send-as-file-not-bool", _send(as_file="ja"), V, "as_file is yes or no"),
    ("send-file-threshold-zero", _send(as_file=True, file_threshold=0), V, _THRESHOLD),
    ("send-file-threshold-text", _send(as_file=True, file_threshold="50"), V, _THRESHOLD),
    ("send-file-threshold-float", _send(file_threshold=2.5), V, _THRESHOLD),
    ("send-file-threshold-huge", _send(as_file=True, file_threshold=10**9), V, _THRESHOLD),
    ("preview-file-threshold-bool", _preview(as_file=True, file_threshold=True), V, _THRESHOLD),
]

# A team's channel as a recipient (issue 17.1): its form is checked with the people's, before any look-up.
_TEAM = "2eb998c8-bdc8-5d72-9b2c-4e53afd02b4f"
_CHAN = "19:5f1a28b1a2d55e91b190a658ffb99c0a@thread.tacv2"
API_CASES += [
    ("send-to-channel-team-not-guid", _send(to=[f"channel:vertrieb/{_CHAN}"]), IR, "'channel:vertrieb/19:"),
    ("send-to-channel-id-slash", _send(to=[f"channel:{_TEAM}/19:a/b@thread.tacv2"]), IR, "not a user name"),
    ("send-to-channel-id-query", _send(to=[f"channel:{_TEAM}/19:a?x=1@thread.tacv2"]), IR, "not a user name"),
    ("send-to-channel-nul", _send(to=[f"channel:{_TEAM}/19:a\x00b@thread.tacv2"]), IR, "\\x00"),
    ("send-to-channel-5kb", _send(to=[f"channel:{_TEAM}/19:{'c' * 5000}@thread.tacv2"]), IR, "ccc…'"),
    ("send-to-channel-no-channel", _send(to=[f"channel:{_TEAM}"]), IR, "not a user name"),
    ("send-to-channel-dict-number", _send(to=[{"team": _TEAM, "channel": 5}]), IR, "not a user name"),
    ("send-to-channel-mention-channel", _send(to=[{"team": _TEAM, "channel": _CHAN,
                                                   "mention": [f"channel:{_TEAM}/{_CHAN}"]}]), IR, "not a user name"),
    ("send-to-channel-mention-malformed", _send(to=[{"team": _TEAM, "channel": _CHAN, "mention": ["not-an-email"]}]),
     IR, "'not-an-email' is not a user name"),
    ("preview-to-channel-bad", _preview(to=[f"channel:{_TEAM}/general"]), IR, "not a user name"),
    ("action-recipient-channel-bad", _action(recipients=[f"channel:{_TEAM}/general"]), IR, "Cannot save"),
]

@pytest.mark.core
@pytest.mark.parametrize(("operation", "error", "needle"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_typed_and_writes_nothing(world: World, operation: Callable[[World], Any],
                                                   error: type[Exception], needle: str | None) -> None:
    before = db_snapshot(world.crm.store)
    with pytest.raises(errors.CrmkitError) as info:
        operation(world)
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    message = str(info.value)
    assert len(message) > 15 and "Traceback" not in message
    if needle:
        assert needle.lower() in message.lower(), message
    if isinstance(info.value, errors.InvalidRecipient):
        assert len(message) < 400 and "\x00" not in message, message  # named, cut, control characters escaped
    after = db_snapshot(world.crm.store)
    assert after == before, snapshot_diff(before, after)


# -- widgets: a friendly message in the view's ErrorBox, the typed error behind it, nothing written ----------

def _table_bad_where(w: World) -> Any:
    from crmkit.widgets import RecordTable

    return RecordTable(w.crm, where="nosuch = ?", params=[1]).error


def _table_unsafe_where(w: World) -> Any:
    from crmkit.widgets import RecordTable

    return RecordTable(w.crm, where="1=1); DELETE FROM addresses; --").error


def _table_subquery_where(w: World) -> Any:
    from crmkit.widgets import RecordTable

    return RecordTable(w.crm, where="EXISTS (SELECT 1 FROM transfer_log WHERE recipient_name LIKE ?)",
                       params=["B%"]).error


def _table_search_then_page_past(w: World) -> Any:
    from crmkit.widgets import RecordTable

    table = RecordTable(w.crm)

    def bad_page(*_a: Any, **_k: Any) -> Any:
        raise errors.ValidationError("page must be ≥ 0 and size 1..10000.")

    table.model.crm = _Proxy(w.crm, address_page=bad_page)
    table.search.value = "<script>alert(1)</script>"
    return table.error


class _Proxy:
    """The CRM with one method replaced (the view must show what the core raises)."""

    def __init__(self, crm: CRM, **replace: Any) -> None:
        self._crm = crm
        self._replace = replace

    def __getattr__(self, name: str) -> Any:
        return self._replace.get(name) or getattr(self._crm, name)


def _compose(w: World, **traits: Any) -> Any:
    from crmkit.widgets.compose_model import ComposeModel

    model = ComposeModel(w.crm, [1], debounce=0)
    for k, v in traits.items():
        setattr(model, k, v)
    model.run_preview()
    return model


def _compose_box(w: World, **traits: Any) -> Any:
    from crmkit.widgets.compose import ComposeDialog

    dialog = ComposeDialog(w.crm, [1])
    for k, v in traits.items():
        setattr(dialog.model, k, v)
    dialog.model.run_preview()
    return dialog.error


def _editor(w: World, **values: Any) -> Any:
    from crmkit.widgets.display_format_editor import DisplayFormatEditor

    editor = DisplayFormatEditor(w.crm, address_id=1)
    row = editor.rows[0]
    for k, v in values.items():
        getattr(row, k).value = v
    editor.save_button.click()
    return editor.error


def _privacy_flag(w: World, address: int) -> Any:
    from crmkit.widgets.privacy import PrivacySettings

    view = PrivacySettings(w.crm)
    view.flag_address.value = address
    view.set_flag_button.click()
    return view.error


def _monitor(w: World, address: str) -> Any:
    from crmkit.widgets.privacy import TransferLogMonitor

    view = TransferLogMonitor(w.crm, export_dir=w.tmp)
    view.address.value = address
    view.refresh_button.click()
    return view.error


def _editor_participants(w: World, text: str) -> Any:
    from crmkit.widgets.campaigns import CampaignEditor

    view = CampaignEditor(w.camp)
    view.participant_ids.value = text
    view.participants_add.click()
    return view.error


def _editor_new_campaign(w: World, name: str) -> Any:
    from crmkit.widgets.campaigns import CampaignEditor

    view = CampaignEditor(w.camp)
    view.campaign_name.value = name
    view.campaign_new.click()
    return view.error


def _dialog(w: World, **values: Any) -> Any:
    from crmkit.widgets.campaign_action import TeamsActionDialog

    dialog = TeamsActionDialog(w.camp, w.reaction, description="Neu")
    dialog.picker.recipients = [{"id": BERND_ID, "name": "Bernd Weber"}]
    for k, v in values.items():
        if k == "recipients":
            dialog.picker.recipients = v
        else:
            getattr(dialog, k).value = v
    dialog.ok.click()
    return dialog.error


def _compose_add(w: World, text: str) -> Any:
    from crmkit.widgets.compose import ComposeDialog

    dialog = ComposeDialog(w.crm, [1], debounce=0)
    dialog.search.value = text
    dialog.add_button.click()
    assert dialog.model.recipients == []
    return dialog.error


def _campaign_form(w: World, email: str, password: str) -> Any:
    from crmkit.widgets.campaign_account import CampaignAccountForm

    form = CampaignAccountForm(w.crm)
    form.mode.value = "password"
    form.email.value = email
    form.password.value = password
    form.save.click()
    return form.error


WIDGET_CASES: list[tuple[str, Callable[[World], Any], type[Exception]]] = [
    ("table-bad-sql-filter", _table_bad_where, V),
    ("table-unsafe-sql-filter", _table_unsafe_where, errors.UnsafeQuery),
    ("table-subquery-sql-filter", _table_subquery_where, errors.UnsafeQuery),
    ("table-core-refusal-on-search", _table_search_then_page_past, V),
    ("compose-no-recipient", lambda w: _compose_box(w, subject="Leads"), V),
    ("compose-empty-subject", lambda w: _compose_box(w, recipients=[{"id": BERND_ID, "displayName": "B"}]), V),
    ("compose-bad-chat", lambda w: _compose_box(w, subject="x", chat="channel",
                                               recipients=[{"id": BERND_ID, "displayName": "B"}]), V),
    ("compose-bad-importance", lambda w: _compose_box(w, subject="x", importance="max",
                                                     recipients=[{"id": BERND_ID, "displayName": "B"}]), V),
    ("compose-unknown-recipient", lambda w: _compose_box(w, subject="x",
                                                        recipients=[{"id": "ghost", "displayName": "G"}]), V),
    ("format-editor-empty-label", lambda w: _editor(w, label_de=""), FE),
    ("format-editor-text-pattern", lambda w: _editor(w, pattern="%Y"), dfm.BadFormatPattern),
    ("format-editor-empty-text", lambda w: _editor(w, empty="text", empty_text=" "), FE),
    ("privacy-flag-missing-address", lambda w: _privacy_flag(w, 999), NF),
    ("monitor-address-not-a-number", lambda w: _monitor(w, "eins"), V),
    ("campaign-editor-participants-text", lambda w: _editor_participants(w, "1, zwei"), V),
    ("campaign-editor-empty-name", lambda w: _editor_new_campaign(w, "   "), V),
    ("campaign-dialog-no-recipients", lambda w: _dialog(w, recipients=[]), V),
    ("campaign-dialog-empty-description", lambda w: _dialog(w, description=" "), V),
    ("campaign-dialog-bad-placeholder", lambda w: _dialog(w, message="Hallo {passwort}"), V),
    ("compose-add-markup", lambda w: _compose_add(w, "<script>alert(1)</script>@x.de"), IR),
    ("compose-add-5kb", lambda w: _compose_add(w, "y" * 5000), IR),
    ("compose-add-unknown", lambda w: _compose_add(w, "ghost@contoso.example"), IR),
    ("compose-recipient-row-slash", lambda w: _compose_box(w, subject="x", recipients=[{"id": "a/b@contoso.example"}]),
     IR),
    ("campaign-dialog-malformed-recipient", lambda w: _dialog(w, recipients=[{"id": "not-an-email", "name": "X"}]), IR),
    ("campaign-dialog-unknown-recipient",
     lambda w: _dialog(w, recipients=[{"id": "ghost@contoso.example", "name": "G"}]), IR),
    ("campaign-account-form-no-at", lambda w: _campaign_form(w, "kampagnen", "Secret-1"), V),
    ("campaign-account-form-no-password", lambda w: _campaign_form(w, "k@contoso.example", ""), V),
    # control characters and bidi controls, shown as the core's message naming the field
    ("compose-subject-rlo", lambda w: _compose_box(w, subject="Lead \u202eexe.pdf",
                                                  recipients=[{"id": BERND, "displayName": "B"}]), CC),
    ("compose-message-nul", lambda w: _compose_box(w, subject="Lead", message="Hallo\x00",
                                                  recipients=[{"id": BERND, "displayName": "B"}]), CC),
    ("format-editor-label-bell", lambda w: _editor(w, label_de="Fir\x07ma"), CC),
    ("campaign-editor-name-nul", lambda w: _editor_new_campaign(w, "Früh\x00jahr"), CC),
    ("campaign-dialog-message-escape", lambda w: _dialog(w, message="Hallo\x1b[2J"), CC),
]


@pytest.mark.widgets
@pytest.mark.parametrize(("view", "error"), [c[1:] for c in WIDGET_CASES], ids=[c[0] for c in WIDGET_CASES])
def test_widget_bad_input_shows_a_friendly_typed_error(world: World, view: Callable[[World], Any],
                                                       error: type[Exception]) -> None:
    before = db_snapshot(world.crm.store)
    box = view(world)
    if hasattr(box, "error") and not hasattr(box, "show"):  # a model: its error trait
        exc, html_value = box.error, None
    else:
        exc, html_value = box.exc, box.value
    assert isinstance(exc, error), repr(exc)
    if html_value is not None:
        assert box.layout.display is None, "the error box stays hidden"
        assert 'role="alert"' in html_value and "Traceback" not in html_value
        assert "<script" not in html_value
        import html as html_mod

        shown = exc.text(world.crm.language) if isinstance(exc, errors.CrmkitError) else str(exc)
        assert html_mod.escape(shown) in html_value  # the core's advice, escaped, in the user's language
    after = db_snapshot(world.crm.store)
    assert after == before, snapshot_diff(before, after)


# -- the command line: exit 2, one line on stderr, no traceback, files left alone ----------------------------

# One interpreter runs every case through crmkit.cli.main (a process start costs ~2 s on a loaded 2-core machine);
# an exception escaping main() is reported with its traceback, so "no traceback" is still checked.
DRIVER = r"""
import contextlib, io, json, sys, traceback
from crmkit.cli import main
out = []
for argv in json.loads(sys.stdin.read()):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            code, _ = "uncaught", traceback.print_exc(file=err)
    out.append({"code": code, "stderr": err.getvalue()})
print(json.dumps(out))
"""


def _state(base: Path) -> dict[str, Any]:
    """Each file's bytes; the valid database by its rows (opening it registers a session, which is bookkeeping)."""
    out: dict[str, Any] = {}
    for path in sorted(base.iterdir()):
        if path.name == "good.duckdb":
            store = crmkit.open(path).store
            out[path.name] = db_snapshot(store)
            store.close()
        elif path.is_file() and not path.name.endswith(".wal"):
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli-bad")
    good = base / "good.duckdb"
    crmkit.open(good).add_user("vera", "Vera", roles=["viewer"])
    foreign = base / "foreign.duckdb"
    import duckdb

    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE t AS SELECT 42 AS answer")
    con.close()
    (base / "truncated.duckdb").write_bytes(good.read_bytes()[:5000])
    (base / "junk.duckdb").write_bytes(b"\x00\xffnot a database\n" * 300)
    (base / "empty.duckdb").write_bytes(b"")
    (base / "adir.duckdb").mkdir()
    return {p.name: p for p in base.iterdir()} | {"base": base}


# (id, argv with {name} placeholders for the files above, a word the message must contain or None for argparse)
CLI_CASES: list[tuple[str, list[str], str | None]] = [
    ("unknown-command", ["--db", "{good.duckdb}", "explode"], None),
    ("demo-data-no-count", ["--db", "{good.duckdb}", "demo-data"], None),
    ("demo-data-negative", ["--db", "{good.duckdb}", "demo-data", "--addresses", "-1"], None),
    ("demo-data-word", ["--db", "{good.duckdb}", "demo-data", "--addresses", "lots"], None),
    ("worker-bad-interval", ["--db", "{good.duckdb}", "worker", "--interval", "soon"], None),
    ("worker-negative-interval", ["--db", "{good.duckdb}", "worker", "--interval", "-1", "--once"], "interval"),
    ("worker-missing-db", ["--db", "{base}/nothing.duckdb", "worker", "--once"], "no database"),
    ("init-missing-folder", ["--db", "{base}/no/such/dir/crm.duckdb", "init"], "does not exist"),
    ("init-directory", ["--db", "{adir.duckdb}", "init"], "folder"),
    ("init-junk-file", ["--db", "{junk.duckdb}", "init"], "crmkit init"),
    ("init-truncated-file", ["--db", "{truncated.duckdb}", "init"], "crmkit init"),
    ("init-foreign-duckdb", ["--db", "{foreign.duckdb}", "init"], "crmkit"),
    ("demo-data-junk-file", ["--db", "{junk.duckdb}", "demo-data", "--addresses", "5"], "crmkit init"),
    ("demo-data-unknown-user", ["--db", "{good.duckdb}", "--user", "zed", "demo-data", "--addresses", "5"], "zed"),
    ("demo-data-viewer", ["--db", "{good.duckdb}", "--user", "vera", "demo-data", "--addresses", "5"],
     "system.admin"),
    ("worker-unknown-user", ["--db", "{good.duckdb}", "worker", "--user", "zed", "--once"], "zed"),
]


@pytest.fixture(scope="module")
def cli_results(cli_files: dict[str, Path]) -> dict[str, Any]:
    """Run every CLI case (in one child interpreter), each checked for leaving the files alone."""
    names = {k.replace(".", "_"): str(v) for k, v in cli_files.items()}
    results: dict[str, Any] = {}
    before = _state(cli_files["base"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    argvs = [[a.replace(".duckdb}", "_duckdb}").format(**names) for a in argv] for _id, argv, _n in CLI_CASES]
    done = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(argvs), capture_output=True, text=True,
                          timeout=300, cwd=cli_files["base"], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for (case_id, _argv, _needle), result in zip(CLI_CASES, json.loads(done.stdout.strip().splitlines()[-1]),
                                                 strict=True):
        results[case_id] = result
    results["_unchanged"] = _state(cli_files["base"]) == before
    return results


@pytest.mark.core
@pytest.mark.parametrize(("case_id", "needle"), [(c[0], c[2]) for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2(cli_results: dict[str, Any], case_id: str, needle: str | None) -> None:
    result = cli_results[case_id]
    stderr = result["stderr"]
    assert result["code"] == 2, result
    assert "Traceback" not in stderr
    if needle is None:  # argparse: usage plus one error line
        assert "usage:" in stderr and stderr.strip().splitlines()[-1].startswith("crmkit")
    else:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        errs = [line for line in lines if " INFO " not in line and " WARNING " not in line]  # worker log lines
        assert len(errs) == 1 and errs[0].startswith("crmkit: error: "), stderr
        assert needle.lower() in errs[0].lower(), errs[0]
    assert cli_results["_unchanged"], "a refused command changed or created a file"


@pytest.mark.core
def test_cli_as_a_real_process_keeps_it_to_one_line(cli_files: dict[str, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    done = subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(cli_files["foreign.duckdb"]), "init"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("crmkit: error: ")

@pytest.mark.core
def test_the_corpus_has_at_least_a_hundred_cases() -> None:
    ids = ([f"api-{c[0]}" for c in API_CASES] + [f"widget-{c[0]}" for c in WIDGET_CASES]
           + [f"cli-{c[0]}" for c in CLI_CASES])
    assert len(ids) == len(set(ids)), "case ids are unique"
    assert len(ids) >= 100, len(ids)

