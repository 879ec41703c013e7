"""One sign-in through crmkit's Microsoft 365 door: with the hub's tokens (a hub's server in team mode) the Teams
account is the one the person signed in to the hub with, Graph works with the hub's token without a device-code
sign-in, a token that expired is replaced by the hub's refreshed one, and nothing of it reaches the database.

The hub's REST API is the local HTTP server of tests/auth/test_hub_tokens.py; the tenant is the real sandbox, whose
admin API mints the tokens the hub would hold (one already expired).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.sandbox import SandboxAdmin

import crmkit
from crmkit.auth import Microsoft365
from crmkit.auth.hub_tokens import HubTokens
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from tests.auth.test_hub_tokens import ANNA_ID_TOKEN, SERVER_TOKEN, FakeHubApi, serving_hub_api
from tests.support.secret_patterns import PATTERNS

pytestmark = pytest.mark.sandbox


@pytest.fixture
def hub_api() -> Iterator[FakeHubApi]:
    with serving_hub_api() as api:
        yield api


def test_graph_runs_on_the_hubs_tokens_and_a_refused_one_is_replaced_by_the_hubs_refreshed_one(
        crm_tenant: SandboxAdmin, crm_file: crmkit.CRM, hub_api: FakeHubApi) -> None:
    expired = crm_tenant.token(SANDBOX_DEFAULT_UPN, lifetime_s=-60)
    fresh = crm_tenant.token(SANDBOX_DEFAULT_UPN)
    me = crm_tenant.http().get("https://graph.crmkit.localhost/v1.0/me",
                               headers={"Authorization": f"Bearer {fresh}"}).json()
    hub_api.auth_state = {"access_token": expired, "refresh_token": "r", "id_token": ANNA_ID_TOKEN,
                          "oauth_user": {"id": me["id"], "userPrincipalName": me["userPrincipalName"],
                                         "displayName": me["displayName"]}}
    hub = HubTokens(hub_api.url, SERVER_TOKEN, "anna.schmidt", refresh_wait_s=10, poll_s=0.05)
    m365 = Microsoft365(crm_file, hub_tokens=hub)
    try:
        account = m365.accounts.teams_account()
        assert account is not None and account.username == SANDBOX_DEFAULT_UPN and account.object_id == me["id"]
        assert m365.accounts.list() == []  # listed nowhere: the hub holds the account and its tokens
        # the hub's refresh_user replaces the expired token once its auth_refresh_age is over: here at the 4th ask
        # (account, Graph's first token, its ask after the 401, one poll later)
        hub_api.refreshed, hub_api.refresh_after = fresh, 4
        graph = m365.graph()
        assert graph.me()["userPrincipalName"] == SANDBOX_DEFAULT_UPN  # 401 on the expired one, then the fresh
        assert graph.aio.stats.get("token_fetches") == 2 and len(hub_api.requests) == 4
        assert crm_tenant.token_grants() == 0  # no sign-in of crmkit's own at the tenant
        graph.close()
    finally:
        m365.close()
    dump = b"".join(str(row).encode() for table in ("m365_accounts", "audit")
                    for row in crm_file.store.read(lambda tx, t=table: tx.rows(f"SELECT * FROM {t}")))
    assert expired.encode() not in dump and fresh.encode() not in dump
    assert not PATTERNS["JWT"].search(dump)
