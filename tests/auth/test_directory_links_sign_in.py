"""A real sign-in at the sandbox, verified by crmkit (crmkit/auth/id_token.py), is its CRM user (issue 16 item 1):
the first administrator bootstrapped by UPN (``crmkit init --admin``) is completed with the account's object id."""

from __future__ import annotations

import pytest

import crmkit
from crmkit.auth.id_token import IdTokenVerifier
from crmkit.config import TeamsConfig
from crmkit.directory_links import AccountNotLinked, bootstrap_admin, user_for
from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN, SANDBOX_TENANT_ID
from tests.support.sandbox import SandboxAdmin

pytestmark = pytest.mark.sandbox


def test_a_verified_sandbox_sign_in_completes_the_bootstrap_link(crm_tenant: SandboxAdmin) -> None:
    config = TeamsConfig.resolve()
    crm = crmkit.open(":memory:")
    assert bootstrap_admin(crm.store, SANDBOX_DEFAULT_UPN, config.tenant_id).linked
    verifier = IdTokenVerifier.from_config(config)
    result = crm_tenant.ropc(crm_tenant.msal_app(), SANDBOX_DEFAULT_UPN)
    who = verifier.verify(result["id_token"])
    user = SANDBOX_DEFAULT_UPN.split("@")[0]
    assert user_for(crm.store, who) == user
    row = crm.store.read(lambda tx: tx.rows(
        "SELECT tenant_id, object_id, upn, display_name FROM directory_links WHERE user_name = ?", [user]))
    assert row == [(SANDBOX_TENANT_ID, result["id_token_claims"]["oid"], SANDBOX_DEFAULT_UPN, who.name)]
    assert who.name  # the sandbox's display name reached the link
    # another real account of the same tenant is linked to nobody
    other = verifier.verify(crm_tenant.ropc(crm_tenant.msal_app(), SANDBOX_ADMIN_UPN)["id_token"])
    with pytest.raises(AccountNotLinked):
        user_for(crm.store, other)
