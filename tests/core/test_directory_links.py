"""CRM users bound to directory accounts (issue 16 item 1): admins link and unlink (audited), one account is one
CRM user, ``crmkit init --admin UPN`` bootstraps the first administrator, and :func:`user_for` turns a verified
sign-in into its CRM user (completing a pending link, keeping UPN and display name up to date)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

import crmkit
from crmkit.auth.id_token import VerifiedIdToken
from crmkit.crm import CRM
from crmkit.directory_links import (
    AccountAlreadyLinked,
    AccountNotLinked,
    AdminAlreadyLinked,
    InactiveUser,
    SignInUserInactive,
    user_for,
    user_name_for_upn,
)
from crmkit.errors import AuthError, PermissionDenied, UnknownUser, ValidationError
from crmkit.sandbox import SANDBOX_TENANT_ID
from crmkit.store import Store

pytestmark = pytest.mark.core

TENANT = "11111111-2222-3333-4444-555555555555"


def signed_in(oid: str, upn: str | None, name: str | None = None, tid: str = TENANT) -> VerifiedIdToken:
    """What IdTokenVerifier returns for a sign-in that passed every check (the verifier is tested elsewhere)."""
    at = datetime.now().replace(microsecond=0)
    return VerifiedIdToken(tid=tid, oid=oid, upn=upn, name=name, issued_at=at, expires_at=at + timedelta(hours=1))


def link_rows(crm: CRM) -> list[tuple[object, ...]]:
    return [tuple(r) for r in crm.store.read(lambda tx: tx.rows(
        "SELECT user_name, tenant_id, object_id, upn, display_name, linked_by FROM directory_links ORDER BY 1"))]


def audit_rows(crm: CRM) -> list[tuple[object, ...]]:
    return [(u, k, json.loads(o), json.loads(n)) for u, k, o, n in crm.store.read(lambda tx: tx.rows(
        "SELECT user_name, key, old_value, new_value FROM audit WHERE scope = 'directory_links' ORDER BY id"))]


def deactivate(crm: CRM, user: str) -> None:
    crm.store.write(lambda tx: tx.execute("UPDATE users SET active = FALSE WHERE name = ?", [user]))


def test_link_and_unlink_are_audited_and_listed(crm: CRM) -> None:
    crm.add_user("lea", "Lea Hoffmann", roles=["sales"])
    crm.directory_links.link("lea", TENANT, "oid-lea", "lea.hoffmann@contoso.example", "Lea Hoffmann")
    assert link_rows(crm) == [("lea", TENANT, "oid-lea", "lea.hoffmann@contoso.example", "Lea Hoffmann", "admin")]
    df = crm.directory_links.links()
    row = df[df["user_name"] == "lea"].iloc[0]
    assert (row["object_id"], row["upn"], bool(row["pending"]), bool(row["active"])) == (
        "oid-lea", "lea.hoffmann@contoso.example", False, True)
    assert df[df["user_name"] == "admin"]["tenant_id"].isna().all()  # listed, not linked
    crm.directory_links.link("lea", TENANT, "oid-lea", "lea.hoffmann@contoso.example", "Lea Hoffmann")  # the same
    assert crm.directory_links.unlink("lea") is True
    assert link_rows(crm) == []
    assert crm.directory_links.unlink("lea") is False  # nothing to unlink: nothing audited
    new = {"tenant_id": TENANT, "object_id": "oid-lea", "upn": "lea.hoffmann@contoso.example",
           "display_name": "Lea Hoffmann"}
    assert audit_rows(crm) == [("admin", "lea", None, new), ("admin", "lea", new, None)]


def test_a_non_admin_is_refused_and_nothing_is_written(crm: CRM) -> None:
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    crm.add_user("ben", "Ben Berger", roles=["teams_admin"])
    crm.directory_links.link("ben", TENANT, "oid-ben", "ben@contoso.example")
    before = (link_rows(crm), crm.store.one("SELECT count(*) FROM audit"))
    for who in ("vera", "ben"):  # a viewer, and an admin of another area
        session = CRM(crm.store, who)
        with pytest.raises(PermissionDenied) as err:
            session.directory_links.link(who, TENANT, f"oid-{who}", f"{who}@contoso.example")
        assert err.value.right == "system.admin" and err.value.text("de") != err.value.text("en")
        with pytest.raises(PermissionDenied):
            session.directory_links.unlink("ben")
        with pytest.raises(PermissionDenied):
            session.directory_links.links()
    assert (link_rows(crm), crm.store.one("SELECT count(*) FROM audit")) == before


def test_one_directory_account_is_one_crm_user(crm: CRM) -> None:
    crm.add_user("lea", "Lea", roles=["sales"])
    crm.add_user("ben", "Ben", roles=["sales"])
    links = crm.directory_links
    links.link("lea", TENANT, "oid-1", "lea@contoso.example")
    with pytest.raises(AccountAlreadyLinked) as err:
        links.link("ben", TENANT, "oid-1", "someone@contoso.example")
    assert "'lea'" in err.value.text("en") and "'lea'" in err.value.text("de")
    assert err.value.text("de") != err.value.text("en") and isinstance(err.value, ValidationError)
    with pytest.raises(AccountAlreadyLinked):  # a pending link by the same UPN is that account too
        links.link("ben", TENANT, None, "LEA@contoso.example")
    links.link("ben", "another-tenant", "oid-1", "lea@fabrikam.example")  # the same oid in another tenant: another
    assert [r[:3] for r in link_rows(crm)] == [("ben", "another-tenant", "oid-1"), ("lea", TENANT, "oid-1")]
    links.link("lea", TENANT, "oid-2", "lea@contoso.example")  # lea moves to another account: oid-1 is free
    links.link("ben", TENANT, "oid-1", "ben@contoso.example")  # ben's link replaced, not a second one
    assert [r[:3] for r in link_rows(crm)] == [("ben", TENANT, "oid-1"), ("lea", TENANT, "oid-2")]


def test_unknown_and_inactive_users_and_bad_ids_are_refused(crm: CRM) -> None:
    crm.add_user("lea", "Lea", roles=["sales"])
    with pytest.raises(UnknownUser) as unknown:
        crm.directory_links.link("nobody", TENANT, "oid-1", "nobody@contoso.example")
    assert "'nobody'" in unknown.value.text("de") and unknown.value.text("de") != unknown.value.text("en")
    deactivate(crm, "lea")
    with pytest.raises(InactiveUser) as inactive:
        crm.directory_links.link("lea", TENANT, "oid-1", "lea@contoso.example")
    assert "'lea'" in inactive.value.text("en") and inactive.value.text("de") != inactive.value.text("en")
    with pytest.raises(ValidationError):
        crm.directory_links.link("admin", TENANT, "", "admin@contoso.example")
    with pytest.raises(ValidationError):
        crm.directory_links.link("admin", TENANT, "oid-1", "not-an-upn")
    with pytest.raises(ValidationError):
        crm.directory_links.link("admin", TENANT, None, None)
    assert link_rows(crm) == [] and audit_rows(crm) == []


def test_user_for_finds_the_linked_user_and_keeps_upn_and_name_up_to_date(crm: CRM) -> None:
    crm.add_user("lea", "Lea", roles=["sales"])
    crm.directory_links.link("lea", TENANT, "oid-lea", "lea.hoffmann@contoso.example", "Lea Hoffmann")
    assert user_for(crm.store, signed_in("oid-lea", "lea.hoffmann@contoso.example", "Lea Hoffmann")) == "lea"
    assert len(audit_rows(crm)) == 1  # nothing changed: nothing written
    # renamed in the directory: still found by the object id, the new UPN and name kept
    assert user_for(crm.store, signed_in("oid-lea", "lea.berg@contoso.example", "Lea Berg")) == "lea"
    assert link_rows(crm)[0][2:5] == ("oid-lea", "lea.berg@contoso.example", "Lea Berg")
    assert audit_rows(crm)[-1] == ("lea", "lea",
                                   {"upn": "lea.hoffmann@contoso.example", "display_name": "Lea Hoffmann"},
                                   {"upn": "lea.berg@contoso.example", "display_name": "Lea Berg"})
    # another account that took the old UPN is not lea: only the object id counts once linked
    with pytest.raises(AccountNotLinked):
        user_for(crm.store, signed_in("oid-other", "lea.hoffmann@contoso.example"))


def test_an_unlinked_account_and_an_inactive_user_are_refused_in_both_languages(crm: CRM) -> None:
    crm.add_user("lea", "Lea", roles=["sales"])
    with pytest.raises(AccountNotLinked) as unlinked:
        user_for(crm.store, signed_in("oid-x", "x@contoso.example"))
    assert isinstance(unlinked.value, AuthError)
    de, en = unlinked.value.text("de"), unlinked.value.text("en")
    assert "x@contoso.example" in de and "Administrator" in de and "verknüpf" in de
    assert "x@contoso.example" in en and "administrator" in en and "link" in en
    crm.directory_links.link("lea", TENANT, "oid-lea", "lea@contoso.example", "Lea")
    deactivate(crm, "lea")
    before = (link_rows(crm), audit_rows(crm))
    with pytest.raises(SignInUserInactive) as inactive:
        user_for(crm.store, signed_in("oid-lea", "lea.new@contoso.example", "Lea New"))
    de, en = inactive.value.text("de"), inactive.value.text("en")
    assert "'lea'" in de and "deaktiviert" in de and "'lea'" in en and "switched off" in en
    assert (link_rows(crm), audit_rows(crm)) == before  # refused before anything was written
    # another tenant's account with the same object id is not lea's
    with pytest.raises(AccountNotLinked):
        user_for(crm.store, signed_in("oid-lea", "lea@contoso.example", tid="another-tenant"))


def test_user_names_follow_the_upns_local_part() -> None:
    assert user_name_for_upn("Lea.Hoffmann@contoso.example") == "lea.hoffmann"
    assert user_name_for_upn("jörg o'neil@contoso.example") == "j-rg-o-neil"
    for bad in ("no-at-sign", "@contoso.example", "lea@", "a@b@c", " lea@contoso.example"):
        with pytest.raises(ValidationError):
            user_name_for_upn(bad)


def crmkit_cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    return subprocess.run([sys.executable, "-m", "crmkit.cli", *args], capture_output=True, text=True, timeout=120,
                          env=clean)


def test_init_admin_bootstraps_the_first_administrator_completed_at_first_sign_in(db_location: str) -> None:
    upn = "Tom.Becker@contoso.example"
    first = crmkit_cli("--db", db_location, "init", "--admin", upn)
    assert first.returncode == 0, first.stderr
    assert f"Created the CRM user tom.becker an administrator, linked to {upn} in tenant {SANDBOX_TENANT_ID}" \
        in first.stdout
    again = crmkit_cli("--db", db_location, "init", "--admin", upn)  # idempotent
    assert again.returncode == 0 and "already set up" in again.stdout, again.stderr
    other = crmkit_cli("--db", db_location, "init", "--admin", "eve@contoso.example")
    assert other.returncode == 2 and "An administrator is linked already ('tom.becker'" in other.stderr
    assert "Traceback" not in other.stderr

    crm = crmkit.open(db_location) if not db_location.startswith("postgresql") else CRM(Store(db_location), "admin")
    try:
        assert link_rows(crm) == [("tom.becker", SANDBOX_TENANT_ID, None, upn, None, "crmkit init")]
        assert crm.users().set_index("name").loc["tom.becker", "roles"] == "admin"
        with pytest.raises(AccountNotLinked):  # a pending link of the sandbox tenant: another tenant's tom is not it
            user_for(crm.store, signed_in("oid-tom", upn, tid=TENANT))
        who = signed_in("oid-tom", "tom.becker@contoso.example", "Tom Becker", tid=SANDBOX_TENANT_ID)
        assert user_for(crm.store, who) == "tom.becker"  # matched by tenant + UPN (any case), oid filled in now
        assert link_rows(crm) == [("tom.becker", SANDBOX_TENANT_ID, "oid-tom", "tom.becker@contoso.example",
                                   "Tom Becker", "crmkit init")]
        assert audit_rows(crm)[-1][3]["object_id"] == "oid-tom"
        # from now on the object id counts: another account with tom's UPN is nobody
        with pytest.raises(AccountNotLinked):
            user_for(crm.store, signed_in("oid-eve", upn, tid=SANDBOX_TENANT_ID))
        assert CRM(crm.store, "tom.becker").user.can("system.admin")
        assert crmkit_cli("--db", db_location, "init", "--admin", upn).returncode == 0  # still the same admin
        assert link_rows(crm)[0][2] == "oid-tom"
    finally:
        crm.store.close()


def test_init_admin_refuses_when_an_admin_is_linked_already(crm: CRM) -> None:
    from crmkit.directory_links import bootstrap_admin

    crm.add_user("lea", "Lea", roles=["admin"])
    crm.directory_links.link("lea", TENANT, "oid-lea", "lea@contoso.example")
    before = (link_rows(crm), crm.store.one("SELECT count(*) FROM users"))
    with pytest.raises(AdminAlreadyLinked) as err:
        bootstrap_admin(crm.store, "tom@contoso.example", TENANT)
    assert "'lea'" in err.value.text("de") and err.value.text("de") != err.value.text("en")
    assert (link_rows(crm), crm.store.one("SELECT count(*) FROM users")) == before
