"""The system settings' directory-accounts tab (issue 16 item 1): admins link CRM users to directory accounts and
unlink them (with a confirmation), each change in crmkit.directory_links and its audit; others are refused by the
core and nothing is written; refusals in German and English. Driven like a user: ``.value`` and ``.click()``, on
a DuckDB file, against the sandbox's directory (``sandbox``), and through PostgreSQL logins (``postgres``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import _migrated_template
from support.postgres import PgCluster, fresh_database_url
from support.sandbox import SandboxAdmin, colleagues, sign_in

import crmkit
from crmkit.crm import CRM
from crmkit.directory_links import bootstrap_admin
from crmkit.i18n import t
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_TENANT_ID
from crmkit.store import Store
from crmkit.store.pg_roles import drop_database_roles, sync_database_roles, user_role
from crmkit.store.postgres import close_pools
from crmkit.widgets.directory_links import DirectoryLinksView
from crmkit.widgets.settings_app import SettingsApp

OID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture(autouse=True)
def _home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The tenant comes from crmkit's Microsoft configuration (the sandbox's by default); its folder stays private.
    monkeypatch.setenv("CRMKIT_HOME", str(tmp_path / "home"))


@pytest.fixture
def crm(crm: CRM) -> CRM:
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    crm.add_user("ben", "Ben Wagner", roles=["sales"])
    crm.add_user("vera", "Vera Viewer", roles=["viewer"])
    return crm


def link_rows(crm: CRM) -> list[tuple[object, ...]]:
    return [tuple(r) for r in crm.store.read(lambda tx: tx.rows(
        "SELECT user_name, tenant_id, object_id, upn, display_name, linked_by FROM directory_links ORDER BY 1"))]


def audit_rows(crm: CRM) -> list[tuple[object, ...]]:
    return [(u, k, json.loads(o), json.loads(n)) for u, k, o, n in crm.store.read(lambda tx: tx.rows(
        "SELECT user_name, key, old_value, new_value FROM audit WHERE scope = 'directory_links' ORDER BY id"))]


@pytest.mark.widgets
def test_the_admin_links_a_user_by_upn_and_the_link_is_audited(crm: CRM) -> None:
    view = DirectoryLinksView(crm, "de")
    assert "Verzeichniskonten" in view.title.value
    row = view.table.value.split('data-user="anna"')[1].split("</tr>")[0]
    assert "Anna Schmidt" in row and "nicht verknüpft" in row
    assert ">anna<" not in view.table.value  # people are shown by name, not by login
    view.user.value = "anna"
    view.account.value = " anna.schmidt@contoso.example "  # spaces around what was pasted do not count
    view.link_button.click()
    assert view.error.exc is None, view.error.value
    assert link_rows(crm) == [("anna", SANDBOX_TENANT_ID, None, "anna.schmidt@contoso.example", None, "admin")]
    assert audit_rows(crm) == [("admin", "anna", None, {"tenant_id": SANDBOX_TENANT_ID, "object_id": None,
                                                        "upn": "anna.schmidt@contoso.example",
                                                        "display_name": None})]
    assert "Anna Schmidt" in view.status.value and "ersten Anmeldung" in view.status.value
    row = view.table.value.split('data-user="anna"')[1].split("</tr>")[0]
    assert "anna.schmidt@contoso.example" in row and "Administrator" in row and "ersten Anmeldung" in row
    assert "nicht verknüpft" not in row


@pytest.mark.widgets
def test_the_table_shows_a_complete_link_with_short_ids(crm: CRM) -> None:
    crm.directory_links.link("ben", SANDBOX_TENANT_ID, OID, "ben.wagner@contoso.example", "Ben W.")
    view = DirectoryLinksView(crm, "en")
    row = view.table.value.split('data-user="ben"')[1].split("</tr>")[0]
    assert "Ben Wagner" in row and "ben.wagner@contoso.example" in row and "Ben W." in row
    assert f'title="{OID}"' in row and ">0f8fad5b…<" in row  # shortened, the whole id in the tooltip
    assert "Administrator" in row and "first sign-in" not in row
    assert "Directory account (UPN)" in view.table.value and "Verknüpft" not in view.table.value


@pytest.mark.widgets
def test_the_first_admin_of_crmkit_init_is_shown_as_the_setup(crm: CRM) -> None:
    bootstrap_admin(crm.store, "chef@contoso.example", SANDBOX_TENANT_ID)
    row = DirectoryLinksView(crm, "de").table.value.split('data-user="chef"')[1].split("</tr>")[0]
    assert "chef@contoso.example" in row and "Einrichtung (crmkit init --admin)" in row
    assert "folgt bei der ersten Anmeldung" in row


@pytest.mark.widgets
def test_unlink_asks_first_and_then_unlinks(crm: CRM) -> None:
    crm.directory_links.link("anna", SANDBOX_TENANT_ID, OID, "anna.schmidt@contoso.example", "Anna Schmidt")
    view = DirectoryLinksView(crm, "de")
    view.user.value = "anna"
    view.unlink_button.click()
    assert view.confirm.layout.display is None
    assert "anna.schmidt@contoso.example" in view.confirm_text.value and "Anna Schmidt" in view.confirm_text.value
    assert len(link_rows(crm)) == 1  # asking writes nothing
    view.cancel_unlink.click()
    assert view.confirm.layout.display == "none" and len(link_rows(crm)) == 1
    view.unlink_button.click()
    view.confirm_unlink.click()
    assert link_rows(crm) == []
    assert audit_rows(crm)[-1] == ("admin", "anna", {"tenant_id": SANDBOX_TENANT_ID, "object_id": OID,
                                                      "upn": "anna.schmidt@contoso.example",
                                                      "display_name": "Anna Schmidt"}, None)
    assert view.confirm.layout.display == "none"
    assert "Anna Schmidt" in view.status.value and "aufgehoben" in view.status.value
    assert "nicht verknüpft" in view.table.value.split('data-user="anna"')[1].split("</tr>")[0]
    view.unlink_button.click()  # nothing to unlink: said, not asked
    assert view.confirm.layout.display == "none" and "mit keinem" in view.status.value


@pytest.mark.widgets
def test_a_non_admin_sees_why_and_is_refused_with_nothing_written(crm: CRM) -> None:
    crm.directory_links.link("anna", SANDBOX_TENANT_ID, OID, "anna.schmidt@contoso.example", "Anna Schmidt")
    before = audit_rows(crm)
    vera = crmkit.CRM(crm.store, "vera")
    view = DirectoryLinksView(vera, "de")
    assert "anna.schmidt@contoso.example" not in view.table.value  # the links are the admins'
    assert "system.admin" in view.table.value and "Administratoren" in view.table.value
    for control in (view.account, view.search, view.search_button, view.link_button, view.unlink_button):
        assert control.disabled and "system.admin" in control.tooltip
    # A disabled button's handler still runs when called: the core refuses, the view shows it.
    view.user.value = "vera"
    view.account.value = "vera@contoso.example"
    view.link_button.click()
    assert "Dafür fehlt Ihnen das Recht" in view.error.value and "system.admin" in view.error.value
    view.user.value = "anna"
    view.unlink_button.click()
    assert "Verknüpfung von Anna Schmidt aufheben?" in view.confirm_text.value  # the account is not hers to read
    view.confirm_unlink.click()
    assert "Dafür fehlt Ihnen das Recht" in view.error.value
    assert [r[0] for r in link_rows(crm)] == ["anna"] and audit_rows(crm) == before


@pytest.mark.widgets
@pytest.mark.parametrize("lang", ["de", "en"])
def test_refusals_speak_the_users_language(crm: CRM, lang: str) -> None:
    crm.directory_links.link("anna", SANDBOX_TENANT_ID, OID, "anna.schmidt@contoso.example", "Anna Schmidt")
    before = (link_rows(crm), audit_rows(crm))
    other = "en" if lang == "de" else "de"
    view = DirectoryLinksView(crm, lang)
    view.user.value = "ben"
    view.account.value = "ben wagner"
    view.link_button.click()
    bad_upn = t("error.msg.directory_bad_upn", lang, upn="ben wagner")
    assert bad_upn in view.error.value.replace("&#x27;", "'") and t("error.validation", lang) in view.error.value
    assert t("error.validation", other) not in view.error.value
    view.account.value = "ANNA.Schmidt@contoso.example"  # anna's account: one account is one user
    view.link_button.click()
    taken = t("error.msg.directory_account_linked", lang, account="ANNA.Schmidt@contoso.example", other="anna",
              user="ben")
    assert taken in view.error.value.replace("&#x27;", "'")
    assert t("error.msg.directory_account_linked", other, account="ANNA.Schmidt@contoso.example", other="anna",
             user="ben") not in view.error.value.replace("&#x27;", "'")
    assert view.status.value == ""
    assert (link_rows(crm), audit_rows(crm)) == before  # nothing written
    view.account.value = "ben.wagner@contoso.example"  # a good one clears the refusal
    view.link_button.click()
    assert view.error.exc is None and view.error.layout.display == "none"


@pytest.mark.widgets
def test_a_switched_off_user_is_shown_so_and_cannot_be_linked(crm: CRM) -> None:
    crm.store.write(lambda tx: tx.execute("UPDATE users SET active = FALSE WHERE name = 'ben'"))
    view = DirectoryLinksView(crm, "de")
    assert "Ben Wagner · deaktiviert" in view.table.value
    view.user.value = "ben"
    view.account.value = "ben.wagner@contoso.example"
    view.link_button.click()
    assert t("error.msg.directory_inactive_user", "de", user="ben") in view.error.value.replace("&#x27;", "'")
    assert link_rows(crm) == [] and audit_rows(crm) == []


@pytest.mark.widgets
def test_searching_without_a_microsoft_account_says_to_type_the_upn(crm: CRM) -> None:
    view = DirectoryLinksView(crm, "en")
    view.search.value = "Lea"
    view.search_button.click()
    assert view.error.exc is None
    assert "type the UPN" in view.hint.value and view.hint.layout.display is None
    assert view.found.layout.display == "none"
    crm.teams.close()


@pytest.mark.widgets
def test_the_settings_page_has_the_tab_built_when_shown(crm: CRM) -> None:
    app = SettingsApp(crm)
    assert app.tabs.titles[-1] == "Verzeichniskonten"
    assert "directory_links" not in app.views
    app.tabs.selected_index = app.TAB_KEYS.index("directory_links")
    assert isinstance(app.directory_links, DirectoryLinksView)
    assert app.panes["directory_links"].children == (app.directory_links,)
    app.language_switch.value = "en"
    assert app.tabs.titles[-1] == "Directory accounts"
    assert "Directory account (UPN)" in app.directory_links.table.value  # type: ignore[union-attr]
    app.close()


# -- against the sandbox tenant ---------------------------------------------------------------------------

@pytest.fixture
def tenant_crm(crm_tenant: SandboxAdmin, tmp_path: Path) -> Iterator[CRM]:
    crm = crmkit.open(tmp_path / "crm.duckdb")
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    yield crm
    crm.teams.close()
    crm.store.close()


@pytest.mark.sandbox
def test_the_admin_picks_the_account_from_the_directory(tenant_crm: CRM, crm_tenant: SandboxAdmin) -> None:
    sign_in(tenant_crm, SANDBOX_DEFAULT_UPN)  # the directory is read as the admin's Microsoft 365 account
    [upn] = colleagues(crm_tenant, 1)
    person = next(u for u in crm_tenant.get("users")["value"] if u["userPrincipalName"] == upn)
    view = DirectoryLinksView(tenant_crm, "de")
    view.user.value = "anna"
    view.search.value = person["displayName"][:4]
    view.search_button.click()
    assert view.error.exc is None, view.error.value
    assert view.found.layout.display is None
    view.found.value = person["id"]
    assert view.account.value == upn  # picking fills the account in
    view.link_button.click()
    assert view.error.exc is None, view.error.value
    assert link_rows(tenant_crm) == [("anna", SANDBOX_TENANT_ID, person["id"], upn, person["displayName"], "admin")]
    assert audit_rows(tenant_crm)[-1][2] is None and audit_rows(tenant_crm)[-1][3]["object_id"] == person["id"]
    assert "ersten Anmeldung" not in view.status.value and upn in view.status.value
    view.account.value = "someone.else@contoso.example"  # typed over the pick: a pending link by that UPN
    view.link_button.click()
    assert link_rows(tenant_crm)[0][2:4] == (None, "someone.else@contoso.example")


# -- on PostgreSQL, each person through their own database login (crmkit.store.pg_roles) -------------------

@pytest.fixture
def pg_logins(pg_cluster: PgCluster) -> Iterator[tuple[str, Store]]:
    """A migrated database with sam (sales) and vera (viewer), their logins made; the URL and the owner's store."""
    with fresh_database_url(pg_cluster, _migrated_template(pg_cluster)) as url:
        owner = crmkit.open(url)
        owner.add_user("sam", "Sam Sales", roles=["sales"])
        owner.add_user("vera", "Vera Viewer", roles=["viewer"])
        sync_database_roles(owner.store)
        try:
            yield url, owner.store
        finally:
            for name in ("admin", "sam", "vera"):
                close_pools(_login(url, name))
            drop_database_roles(owner.store)
            owner.store.close()


def _login(url: str, user: str) -> str:
    return url.replace("postgres@", f"{user_role(url.rsplit('/', 1)[1], user)}@", 1)


@pytest.mark.postgres
def test_on_postgresql_the_admins_login_links_and_a_viewers_login_is_refused(
        pg_logins: tuple[str, Store]) -> None:
    url, owner = pg_logins
    admin = crmkit.open(_login(url, "admin"))
    view = DirectoryLinksView(admin, "en")
    view.user.value = "sam"
    view.account.value = "sam@contoso.example"
    view.link_button.click()
    assert view.error.exc is None, view.error.value
    rows = owner.read(lambda tx: tx.rows("SELECT user_name, object_id, upn, linked_by FROM directory_links"))
    assert [tuple(r) for r in rows] == [("sam", None, "sam@contoso.example", "admin")]
    assert "Sam Sales" in view.table.value and "filled in at the first sign-in" in view.table.value
    vera = crmkit.open(_login(url, "vera"))
    refused = DirectoryLinksView(vera, "en")
    assert "sam@contoso.example" not in refused.table.value and "system.admin" in refused.table.value
    refused.user.value = "sam"
    refused.unlink_button.click()
    refused.confirm_unlink.click()
    assert "You lack the right" in refused.error.value
    assert len(owner.read(lambda tx: tx.rows("SELECT 1 FROM directory_links"))) == 1
    admin.store.close()
    vera.store.close()
