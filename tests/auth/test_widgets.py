"""The two settings views without a browser: buttons clicked, the sandbox signs in, the core holds state."""

from __future__ import annotations

import pytest

import crmkit
from crmkit.auth import Microsoft365
from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD
from crmkit.widgets.accounts import AccountsView
from crmkit.widgets.campaign_account import AdminConsentPanel, CampaignAccountForm

pytestmark = pytest.mark.sandbox  # widgets against a sandbox: the heavier part is the tier


def test_accounts_view_add_flag_remove(m365: Microsoft365, form_browser) -> None:
    view = AccountsView(m365=m365, lang="de")
    assert "Noch kein Account" in view.table.value and view.edit.layout.display == "none"
    assert "Geschäfts- oder Schul-Accounts" in view.hint.value and "0600" not in view.hint.value
    view.new_smtp.value = True
    sign_in = view.start_add()  # the "Neuen Account hinzufügen..." button
    assert sign_in is not None and view.add.disabled
    assert sign_in.user_code in view.panel.prompt.value and sign_in.verification_uri in view.panel.prompt.value
    assert view.panel.layout.display is None
    form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_DEFAULT_UPN)
    sign_in.wait(30)
    assert SANDBOX_DEFAULT_UPN in view.table.value and "Angemeldet als" in view.panel.status.value
    assert not view.add.disabled and view.choice.value == m365.accounts.list()[0].home_account_id
    assert (view.use_teams.value, view.use_smtp.value) == (True, True)
    view.use_smtp.value = False  # toggling saves through the core
    assert m365.accounts.list()[0].use_smtp is False
    view.remove.click()
    assert m365.accounts.list() == [] and "Noch kein Account" in view.table.value


def test_accounts_view_cancel(m365: Microsoft365) -> None:
    view = AccountsView(m365=m365, lang="en")
    sign_in = view.start_add()
    view.panel.cancel.click()
    with pytest.raises(crmkit.errors.SignInCancelled):
        sign_in.wait(10)
    assert view.panel.status.value == "Sign-in cancelled." and not view.add.disabled


def test_campaign_form_password_and_test(m365: Microsoft365, crm_file) -> None:
    carl = Microsoft365(crmkit.open(crm_file.store.path, user="carl"))
    try:
        form = CampaignAccountForm(m365=carl, lang="de")
        assert "Kein Kampagnen Account" in form.current.value
        form.mode.value = "password"
        assert form.password_box.layout.display is None and "MFA" in form.warning.value
        form.email.value = SANDBOX_DEFAULT_UPN
        form.password.value = "wrong-Pass-1"
        form.save.click()
        assert form.password.value == "" and "verschlüsselt gespeichert" in form.result.value
        form.test.click()
        assert "E-Mail oder Passwort ist falsch" in form.result.value
        form.password.value = SANDBOX_PASSWORD
        form.save.click()
        form.test.click()
        assert "Test erfolgreich" in form.result.value and "Anna" in form.result.value
        assert "Letzter Test" in form.current.value
        assert SANDBOX_PASSWORD not in str(form.get_state()) and SANDBOX_PASSWORD not in form.password.value
        form.remove.click()
        assert carl.campaign.info() is None
    finally:
        carl.close()


def test_campaign_form_sign_in_once(m365: Microsoft365, form_browser) -> None:
    form = CampaignAccountForm(m365=m365, lang="en")
    sign_in = form.start_sign_in()
    form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_ADMIN_UPN)
    sign_in.wait(30)
    assert SANDBOX_ADMIN_UPN in form.current.value and "Sign in once" in form.current.value
    assert form.run_test().ok and "Test succeeded" in form.result.value


def test_campaign_form_is_read_only_without_rights(m365: Microsoft365, crm_file) -> None:
    sara = Microsoft365(crmkit.open(crm_file.store.path, user="sara"))
    try:
        form = CampaignAccountForm(m365=sara, lang="en")
        assert form.save.disabled and form.test.disabled and form.sign_in.disabled
        assert "Only campaign or Teams administrators" in form.rights_note.value
        form.run_test()  # even if a click got through, the core refuses
        assert "permission" in form.error.value.lower() or "right" in form.error.value.lower()
    finally:
        sara.close()


def test_admin_consent_panel(m365: Microsoft365) -> None:
    panel = AdminConsentPanel(m365=m365, lang="en")
    assert "unknown" in panel.states.value and panel.organization.link.value == ""
    panel.organization.checkbox.value = True  # ticking the box hands out the link (a request in the store)
    assert "/v2.0/adminconsent?client_id=" in panel.organization.link.value
    assert 'target="_blank"' in panel.organization.link.value
    panel.account.value = "anna@contoso.example"
    panel.add_account.click()
    panel.rows["anna@contoso.example"].checkbox.value = True
    assert "prompt=consent" in panel.rows["anna@contoso.example"].link.value
    # No redirect URI served outside Voila: the native-client URI, and the paste field as the fallback.
    assert "nativeclient" in panel.organization.link.value and panel.paste_box.layout.display != "none"
    panel.paste.value = "https://login.crmkit.localhost/common/oauth2/nativeclient?admin_consent=True&tenant=t"
    panel.record.click()
    assert "granted" in panel.states.value and panel.paste.value == ""
    panel.paste.value = "not a consent address"
    panel.record.click()
    assert "admin_consent" in panel.error.value
    panel.close()
