"""Adding a Microsoft 365 account by device code, end to end against the sandbox tenant."""

from __future__ import annotations

import time

import pytest

from crmkit.auth import Microsoft365, SignInRequired
from crmkit.errors import PersonalAccountRefused, SignInCancelled
from crmkit.sandbox import SANDBOX_DEFAULT_UPN, SANDBOX_MFA_CODE, SANDBOX_MFA_UPN, SANDBOX_PERSONAL_ACCOUNT

pytestmark = pytest.mark.sandbox


def test_device_code_sign_in_adds_the_account_and_graph_works(m365: Microsoft365, form_browser, crm_tenant) -> None:
    sign_in = m365.accounts.start_sign_in(use_teams=True, use_smtp=True)
    assert sign_in.status == "waiting" and not sign_in.done
    assert sign_in.user_code in sign_in.message and sign_in.verification_uri.endswith("/devicelogin")
    assert "device_code" not in repr(sign_in)
    page = form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_DEFAULT_UPN)
    assert "signed in" in page.text
    account = sign_in.wait(30)
    assert sign_in.status == "signed_in"
    assert account.username == SANDBOX_DEFAULT_UPN and account.use_teams and account.use_smtp
    assert account.consent_state == "granted"
    assert [a.username for a in m365.accounts.list()] == [SANDBOX_DEFAULT_UPN]
    with m365.graph() as graph:
        me = graph.me()
    assert me["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    states = m365.consent_states()
    assert states.set_index("scope").loc[f"account:{SANDBOX_DEFAULT_UPN}", "state"] == "granted"


def test_mfa_user_signs_in_by_device_code(m365: Microsoft365, form_browser) -> None:
    sign_in = m365.accounts.start_sign_in()
    page = form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_MFA_UPN)
    page = form_browser.submit(page, {"mfa_code": SANDBOX_MFA_CODE}, button="verify")
    assert sign_in.wait(30).username == SANDBOX_MFA_UPN


def test_personal_account_is_refused_clearly(m365: Microsoft365, form_browser) -> None:
    sign_in = m365.accounts.start_sign_in(timeout=20)
    page = form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_PERSONAL_ACCOUNT)
    assert "AADSTS50020" in form_browser.alert(page)
    # The page refuses; the user gives up and the app is cancelled, or picks "Cancel" on the page.
    page = form_browser.sign_in(page, SANDBOX_PERSONAL_ACCOUNT, "x", button="cancel")
    with pytest.raises(SignInCancelled, match="declined"):
        sign_in.wait(30)
    assert m365.accounts.list() == []


def test_personal_account_error_code_maps_to_refusal() -> None:
    from crmkit.auth import auth_error

    err = auth_error({"error": "invalid_grant", "error_description": "AADSTS50020: User account 'x@outlook.example'"
                      " from identity provider 'live.com' does not exist in tenant", "error_codes": [50020]},
                     consent_url=lambda: "u", who="x@outlook.example")
    assert isinstance(err, PersonalAccountRefused) and "work or school" in str(err)
    tid = {"tid": "9188040d-6c67-4c5b-b112-36a304b66dad"}
    from crmkit.auth._errors import is_personal_account

    assert is_personal_account(tid) and not is_personal_account({"tid": "x"})


def test_cancel_stops_waiting_quickly(m365: Microsoft365) -> None:
    sign_in = m365.accounts.start_sign_in()
    seen = []
    sign_in.add_done_callback(lambda s: seen.append(s.status))
    started = time.monotonic()
    sign_in.cancel()
    with pytest.raises(SignInCancelled, match="cancelled"):
        sign_in.wait(10)
    assert time.monotonic() - started < 3
    assert sign_in.status == "cancelled" and seen == ["cancelled"]


def test_clean_time_out(m365: Microsoft365) -> None:
    sign_in = m365.accounts.start_sign_in(timeout=1.5)
    with pytest.raises(SignInCancelled, match="in time"):
        sign_in.wait(15)
    assert sign_in.status == "timed_out"
    assert m365.accounts.list() == []


def test_first_teams_action_without_account_starts_sign_in(m365: Microsoft365, form_browser) -> None:
    with pytest.raises(SignInRequired):
        m365.accounts.token()
    prompted = []

    def prompt(sign_in) -> None:  # what a widget or print would show, then the person signs in
        prompted.append(sign_in.message)
        form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_DEFAULT_UPN)

    account = m365.accounts.ensure_teams_account(prompt=prompt, timeout=30)
    assert account.username == SANDBOX_DEFAULT_UPN and len(prompted) == 1
    assert m365.accounts.ensure_teams_account(prompt=prompt) == account  # no second sign-in
    assert len(prompted) == 1


def test_usage_flags_and_removal(m365: Microsoft365, form_browser) -> None:
    sign_in = m365.accounts.start_sign_in(use_teams=False)
    form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_DEFAULT_UPN)
    account = sign_in.wait(30)
    assert m365.accounts.teams_account() is None
    account = m365.accounts.set_usage(account, use_teams=True, use_smtp=True)
    assert (account.use_teams, account.use_smtp) == (True, True)
    assert m365.accounts.token()  # silent from the cache
    m365.accounts.remove(account.username)
    assert m365.accounts.list() == []
    app = m365.accounts._app()
    assert app.get_accounts() == []  # tokens gone from this machine too
    log = m365.crm.audit_log()
    assert {"m365.account", "m365.account.usage"} <= set(log["key"])


def test_accounts_belong_to_their_crm_user(m365: Microsoft365, form_browser, crm_file) -> None:
    import crmkit

    sign_in = m365.accounts.start_sign_in()
    form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_DEFAULT_UPN)
    sign_in.wait(30)
    sara = Microsoft365(crmkit.open(crm_file.store.path, user="sara"))
    try:
        assert sara.accounts.list() == []
        with pytest.raises(SignInRequired):
            sara.accounts.token()
        assert sara.accounts.cache_file.path != m365.accounts.cache_file.path
    finally:
        sara.close()
