"""The permission matrix: every built-in role × every privileged operation, as data.

Allowed iff the role holds the operation's right (any of them, where the core accepts several); a
denied operation raises PermissionDenied naming the right and leaves every table unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.dbstate import BERND_ID, db_snapshot, offline_campaigns, offline_teams, snapshot_diff

import crmkit
from crmkit import contact_types, errors, privacy
from crmkit.auth import Microsoft365
from crmkit.campaigns import Campaigns
from crmkit.crm import CRM
from crmkit.rights import BUILTIN_ROLES, RIGHTS
from crmkit.sandbox import SANDBOX_TENANT_ID
from crmkit.teams import activation, sessions
from crmkit.teams import display_format as dfm

pytestmark = pytest.mark.core

BERND = "bernd.weber@contoso.example"


@dataclass
class Ctx:
    crm: CRM  # the role's session
    camp: Campaigns
    ids: dict[str, int]
    tmp: Path


def _m365(fn: Callable[[Microsoft365], Any]) -> Callable[[Ctx], Any]:
    def run(c: Ctx) -> Any:
        m365 = Microsoft365(c.crm)
        try:
            return fn(m365)
        finally:
            m365.close()
    return run


CONSENT_URL = f"http://localhost/?admin_consent=True&tenant={SANDBOX_TENANT_ID}&state=x"

# (operation, rights that allow it (any), the call, whether an allowed call may still fail past the rights check)
OPERATIONS: list[tuple[str, tuple[str, ...], Callable[[Ctx], Any], bool]] = [
    ("setting teams.subject_prefix", ("teams.admin",), lambda c: c.crm.set_setting("teams.subject_prefix", "X - "),
     False),
    ("setting teams.tenant_id", ("teams.admin",), lambda c: c.crm.set_setting("teams.tenant_id", None), False),
    ("setting privacy.retention_days", ("privacy.admin",), lambda c: c.crm.set_setting("privacy.retention_days", 99),
     False),
    ("setting ui.default_language", ("system.admin",), lambda c: c.crm.set_setting("ui.default_language", "en"),
     False),
    ("add_user", ("system.admin",), lambda c: c.crm.add_user(f"new_{c.crm.user.name}", "New"), False),
    ("set_roles", ("system.admin",), lambda c: c.crm.set_roles("target", ["sales", "viewer"]), False),
    ("audit_log", ("system.admin",), lambda c: c.crm.audit_log(), False),
    ("add_contact_type", ("system.admin",), lambda c: c.crm.add_contact_type("ZZ", "Zz"), False),
    ("add_address", ("records.write",), lambda c: c.crm.add_address(company=f"Neu {c.crm.user.name}"), False),
    ("update_address", ("records.write",), lambda c: c.crm.update_address(1, city="Köln"), False),
    ("add_contact", ("records.write",), lambda c: c.crm.add_contact(1, "TEL", "Anruf"), False),
    # rights before input: a bad contact from a user without the right is refused, not checked
    ("add_contact, unknown type", ("records.write",), lambda c: c.crm.add_contact(1, "ZZZ", "Anruf"), True),
    ("change_contact_type_code", ("system.admin",), lambda c: c.crm.change_contact_type_code("XQ", "XR"), False),
    ("contact types change code", ("system.admin", "teams.admin"),
     lambda c: contact_types.change_code(c.crm, "BE", "BES"), False),
    ("contact types rename", ("system.admin", "teams.admin"), lambda c: contact_types.rename(c.crm, "TEL", "Tel."),
     False),
    ("activation disable", ("teams.admin",), lambda c: activation.disable(c.crm), False),
    ("activation enable", ("teams.admin",), lambda c: activation.set_enabled(c.crm, True), False),
    ("display format save", ("teams.admin",),
     lambda c: dfm.save_format(c.crm, dfm.default_format().update("company", label_de="Unternehmen")), False),
    ("display format reset", ("teams.admin",), lambda c: dfm.reset_format(c.crm), False),
    ("open_sessions_needing_reopen", ("teams.admin",), lambda c: sessions.open_sessions_needing_reopen(c.crm), False),
    ("consent record", ("teams.admin",), _m365(lambda m: m.record_consent_redirect(CONSENT_URL)), True),
    ("privacy policy", ("privacy.admin",), lambda c: privacy.set_policy(c.crm, "teams_manual", "log_purpose"), False),
    ("privacy personal fields", ("privacy.admin",), lambda c: privacy.set_personal_fields(c.crm, ["email"]), False),
    ("privacy retention", ("privacy.admin",), lambda c: privacy.set_retention_days(c.crm, 400), False),
    ("privacy set flag", ("privacy.admin",), lambda c: privacy.set_flag(c.crm, 1), False),
    ("privacy clear flag", ("privacy.admin",), lambda c: privacy.clear_flag(c.crm, 2), False),
    ("privacy purge", ("privacy.admin",), lambda c: privacy.purge_transfer_log(c.crm), False),
    ("privacy compact", ("privacy.admin",), lambda c: privacy.compact_transfer_log(c.crm), False),
    ("privacy read log", ("privacy.read_log",), lambda c: privacy.transfer_log(c.crm), False),
    ("privacy access report", ("privacy.read_log",), lambda c: privacy.access_report(c.crm, 1), False),
    ("privacy counts", ("privacy.read_log",), lambda c: privacy.transfer_counts(c.crm), False),
    ("privacy export", ("privacy.read_log",), lambda c: privacy.export_transfer_log(c.crm, c.tmp / "log.csv"), False),
    ("campaign add", ("campaign.admin",), lambda c: c.camp.add_campaign("C2"), False),
    ("campaign rename", ("campaign.admin",), lambda c: c.camp.rename_campaign(c.ids["campaign"], "C1"), False),
    ("campaign add activity", ("campaign.admin",), lambda c: c.camp.add_activity(c.ids["campaign"], "A2"), False),
    ("campaign add participants", ("campaign.admin",), lambda c: c.camp.add_participants(c.ids["activity"], [2]),
     False),
    ("campaign add reaction", ("campaign.admin",),
     lambda c: c.camp.add_reaction(c.ids["activity"], f"R-{c.crm.user.name}"), False),
    ("campaign add action", ("campaign.admin",),
     lambda c: c.camp.add_teams_action(c.ids["reaction"], "T2", recipients=[BERND]), False),
    ("campaign update action", ("campaign.admin",), lambda c: c.camp.update_action(c.ids["action"], description="U"),
     False),
    ("campaign retry", ("campaign.admin",), lambda c: c.camp.retry([1]), False),
    ("campaign account set", ("campaign.admin", "teams.admin"),
     _m365(lambda m: m.campaign.set_password("kampagnen@contoso.example", "Secret-Pass-1")), False),
    ("campaign account clear", ("campaign.admin", "teams.admin"), _m365(lambda m: m.campaign.clear()), False),
    ("campaign account test", ("campaign.admin", "teams.admin"), _m365(lambda m: m.campaign.test()), True),
    ("teams.file_replies setting", ("teams.admin",), lambda c: c.crm.set_setting("teams.file_replies", True), False),
    # replies filed on the record (crmkit.teams.replies): the sender's right, checked before the setting is read
    ("teams file replies", ("teams.send",), lambda c: c.crm.teams.file_replies(), True),
    ("teams.send preview", ("teams.send",), lambda c: c.crm.teams.preview([1], [BERND], "Leads"), False),
    ("teams.send send", ("teams.send",), lambda c: c.crm.teams.send([], [BERND], "Leads"), True),
    # Rights come before recipients: without the right, PermissionDenied (not the recipient error) and nothing
    # asked or written; with it, the recipient error.
    ("teams.send preview, malformed recipient", ("teams.send",),
     lambda c: c.crm.teams.preview([1], ["a/b@contoso.example"], "Leads"), True),
    ("campaign add action, malformed recipient", ("campaign.admin",),
     lambda c: c.camp.add_teams_action(c.ids["reaction"], "T3", recipients=["not-an-email"]), True),
    ("campaign update action recipients", ("campaign.admin",),
     lambda c: c.camp.update_action(c.ids["action"], recipients=[BERND_ID]), False),
]


def build(role: str) -> CRM:
    """In memory: one user per built-in role, two addresses, a campaign down to an action; as the role's user."""
    crm = crmkit.open(":memory:")
    for name in BUILTIN_ROLES:
        crm.add_user(f"as_{name}", name, roles=[name])
    crm.add_user("target", "Target", roles=["viewer"])
    crm.add_address(company="Müller GmbH", city="Berlin")
    crm.add_address(last_name="Keller", city="Wien")
    crm.add_contact_type("XQ", "Extra")
    privacy.set_flag(crm, 2)
    activation.enable(crm)
    camp = offline_campaigns(crm)  # saving an action resolves its recipients in the (offline) directory
    cid = camp.add_campaign("C")
    aid = camp.add_activity(cid, "A")
    camp.add_participants(aid, [1])
    rid = camp.add_reaction(aid, "R")
    camp.add_teams_action(rid, "T", recipients=[BERND], timing="delay", delay=60)
    return CRM(crm.store, f"as_{role}")


def test_every_right_is_exercised_and_every_role_is_covered() -> None:
    covered = {r for _n, rights, _f, _m in OPERATIONS for r in rights}
    assert covered == set(RIGHTS)
    assert len(OPERATIONS) * len(BUILTIN_ROLES) >= 200


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
def test_permission_matrix(role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CRMKIT_SANDBOX_URL", "http://127.0.0.1:9")  # nothing listens: no call leaves this machine
    # Dropping the old account's cached sign-in builds an msal app, which reads the identity platform's
    # metadata; that is tested against the sandbox in tests/auth. Rights are checked before it.
    from crmkit.auth.campaign import CampaignAccount

    monkeypatch.setattr(CampaignAccount, "_forget_cached_accounts", lambda self, keep=None: None)
    crm = build(role)
    offline_teams(crm)
    ctx = Ctx(crm, offline_campaigns(crm), {"campaign": 1, "activity": 1, "reaction": 1, "action": 1}, tmp_path)
    held = set(BUILTIN_ROLES[role])
    problems: list[str] = []
    for name, rights, call, may_fail in OPERATIONS:
        allowed = bool(held & set(rights))
        before = None if allowed else db_snapshot(crm.store)
        try:
            call(ctx)
        except errors.PermissionDenied as exc:
            if allowed:
                problems.append(f"{name}: refused although {role} holds {rights}: {exc}")
            elif exc.right not in rights or exc.user != crm.user.name:
                problems.append(f"{name}: PermissionDenied names {exc.right!r}/{exc.user!r}, expected {rights}")
            after = db_snapshot(crm.store)
            if before is not None and after != before:
                problems.append(f"{name}: denied but wrote {snapshot_diff(before, after)}")
            continue
        except errors.CrmkitError as exc:
            if not (allowed and may_fail):
                problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if not allowed:
            problems.append(f"{name}: allowed for {role} without {rights}")
    ctx.camp.close()
    crm.teams.close()
    assert not problems, "\n".join(problems)


# Tables a right guards (privacy.read_log, system.admin, the accounts); a SQL filter is no way around it.
GUARDED_TABLES = ("transfer_log", "users", "user_roles", "m365_accounts", "audit", "campaign_account", "outbox")


@pytest.mark.parametrize("role", sorted(BUILTIN_ROLES))
def test_no_role_reads_another_table_through_a_sql_filter(role: str) -> None:
    crm = build(role)
    before = db_snapshot(crm.store)
    problems: list[str] = []
    for table in GUARDED_TABLES:
        where = f"EXISTS (SELECT 1 FROM {table})"
        for name, call in (("addresses", lambda w=where: crm.addresses(where=w)),
                           ("count_addresses", lambda w=where: crm.count_addresses(where=w)),
                           ("address_page", lambda w=where: crm.address_page(where=w))):
            try:
                result = call()
            except errors.UnsafeQuery as exc:
                if table not in str(exc):
                    problems.append(f"{name} {table}: the refusal does not name the table: {exc}")
                continue
            except errors.CrmkitError as exc:
                problems.append(f"{name} {table}: {type(exc).__name__} instead of UnsafeQuery: {exc}")
                continue
            problems.append(f"{name}: {role} asked {table} through a filter and got an answer: {result!r:.80}")
    after = db_snapshot(crm.store)
    assert after == before, snapshot_diff(before, after)
    assert not problems, "\n".join(problems)
