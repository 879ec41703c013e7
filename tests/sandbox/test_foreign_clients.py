"""Foreign clients against the sandbox's https listener: azure-identity and msgraph-sdk as shipped.

What had to change from their default configuration (and nothing else):
- the CA: REQUESTS_CA_BUNDLE=<state>/tls/ca.pem for azure-identity (azure-core's requests transport) and
  SSL_CERT_FILE=<ca.pem> for msgraph-sdk (httpx);
- azure-identity: ``authority="127.0.0.1:PORT"`` (the sandbox's https host instead of
  login.microsoftonline.com), ``tenant_id`` the sandbox tenant, and ``disable_instance_discovery=True``
  (otherwise msal asks Microsoft whether it knows the authority);
- msgraph-sdk: the request adapter's ``base_url`` set to ``https://127.0.0.1:PORT/v1.0`` and
  ``allowed_hosts=["127.0.0.1"]`` on its AzureIdentityAuthenticationProvider (by default it attaches the token
  only for Microsoft's national-cloud Graph hosts). The scope is Graph's usual ``https://graph.microsoft.com/.default``;
- UsernamePasswordCredential only: a requests transport that puts the port back on msal's user-realm lookup
  (msal drops it: https://127.0.0.1/common/userrealm/...); DeviceCodeCredential needs nothing of the kind.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import warnings
from typing import Any

import httpx
import pytest
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import DeviceCodeCredential, UsernamePasswordCredential
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.aad_user_conversation_member import AadUserConversationMember
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.chat import Chat
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.chat_message_attachment import ChatMessageAttachment
from msgraph.generated.models.chat_type import ChatType
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as SDK_OPTIONS  # its /users/me-token-to-replace -> /me rule
from msgraph_core import GraphClientFactory
from msgraph_core.authentication import AzureIdentityAuthenticationProvider

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD, SANDBOX_TENANT_ID
from tests.support.sandbox import Browser, SandboxProc

with warnings.catch_warnings():  # kiota's deprecated GetQueryParameters warns when the builder module imports
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph.generated.users.users_request_builder import UsersRequestBuilder

pytestmark = [
    pytest.mark.sandbox,
    # msgraph-sdk's generated request builders and kiota warn about their own deprecated classes on import
    pytest.mark.filterwarnings("ignore::DeprecationWarning:msgraph"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:kiota_abstractions"),
]

GRAPH_DEFAULT = "https://graph.microsoft.com/.default"


@pytest.fixture
def trust_ca(trust_ca: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # conftest's (requests: azure-identity), and SSL_CERT_FILE for msgraph-sdk's httpx
    monkeypatch.setenv("SSL_CERT_FILE", trust_ca)
    return trust_ca


def _host(sp: SandboxProc) -> str:
    return sp.https_url.removeprefix("https://")


def _device_code_credential(sp: SandboxProc, ca: str, upn: str = SANDBOX_DEFAULT_UPN) -> DeviceCodeCredential:
    def prompt(verification_uri: str, user_code: str, expires_on: Any) -> None:
        # the person at the browser: a form-posting browser that trusts the sandbox's CA
        b = Browser(verify=ssl.create_default_context(cafile=ca))
        try:
            b.device_login(verification_uri, user_code, upn)
        finally:
            b.close()

    return DeviceCodeCredential(SANDBOX_CLIENT_ID, tenant_id=SANDBOX_TENANT_ID, authority=_host(sp),
                                disable_instance_discovery=True, prompt_callback=prompt)


def _graph(sp: SandboxProc, credential: Any) -> tuple[GraphServiceClient, httpx.AsyncHTTPTransport]:
    auth = AzureIdentityAuthenticationProvider(credential, scopes=[GRAPH_DEFAULT], allowed_hosts=["127.0.0.1"])
    # The SDK's own middleware pipeline (what GraphRequestAdapter builds by default), on a transport the test
    # can close: msgraph-core's AsyncGraphTransport has no aclose(), so closing the client leaks its sockets.
    transport = httpx.AsyncHTTPTransport()  # trusts SSL_CERT_FILE (the sandbox's CA) from the environment
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(transport=transport),
                                                             options=SDK_OPTIONS)
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = f"{sp.https_url}/v1.0"
    return GraphServiceClient(request_adapter=adapter), transport


@pytest.fixture(scope="module")
def credential(https_sandbox: SandboxProc) -> DeviceCodeCredential:
    return _device_code_credential(https_sandbox, https_sandbox.ca_file)


def test_azure_identity_device_code_gets_a_graph_token(https_sandbox: SandboxProc, trust_ca: str,
                                                      credential: DeviceCodeCredential) -> None:
    token = credential.get_token(GRAPH_DEFAULT)
    assert token.token and token.expires_on > 0
    me = httpx.get(f"{https_sandbox.https_url}/v1.0/me", headers={"Authorization": f"Bearer {token.token}"},
                   verify=ssl.create_default_context(cafile=trust_ca)).json()
    assert me["userPrincipalName"] == SANDBOX_DEFAULT_UPN


def test_msgraph_sdk_me_users_paging_and_404(https_sandbox: SandboxProc, trust_ca: str,
                                             credential: DeviceCodeCredential) -> None:
    client, transport = _graph(https_sandbox, credential)

    async def run() -> None:
        async with transport:
            me = await client.me.get()
            assert me is not None and me.user_principal_name == SANDBOX_DEFAULT_UPN
            # users, 3 a page, following @odata.nextLink the way the SDK does (with_url)
            config = RequestConfiguration(query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
                top=3, select=["id", "userPrincipalName"]))
            page = await client.users.get(request_configuration=config)
            pages, upns = 0, []
            while page is not None:
                pages += 1
                assert page.value is not None and len(page.value) <= 3
                upns += [u.user_principal_name for u in page.value]
                if not page.odata_next_link:
                    break
                assert page.odata_next_link.startswith(f"{https_sandbox.https_url}/v1.0/users")
                page = await client.users.with_url(page.odata_next_link).get()
            assert pages >= 2 and len(upns) == len(set(upns)) and SANDBOX_DEFAULT_UPN in upns
            # $search needs ConsistencyLevel: eventual, on every page (as Graph does)
            search = RequestConfiguration(
                query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
                    search='"displayName:a"', top=2, count=True))
            search.headers.add("ConsistencyLevel", "eventual")
            page = await client.users.get(request_configuration=search)
            assert page is not None and page.odata_count is not None and page.odata_count > 2
            count, found = page.odata_count, []
            while page is not None:
                assert page.value is not None and len(page.value) <= 2
                found += [u.display_name or "" for u in page.value]
                if not page.odata_next_link:
                    break
                page = await client.users.with_url(page.odata_next_link).get(request_configuration=search)
            # every match once, over several pages; displayName:a matches words starting with "a"
            assert len(found) == len(set(found)) == count, found
            with pytest.raises(ODataError) as err:
                await client.users.by_user_id("nobody@contoso.example").get()
            assert err.value.response_status_code == 404
            assert err.value.error is not None and err.value.error.code

    asyncio.run(run())


def _one_on_one(me: str, other: str) -> Chat:
    def member(upn: str) -> AadUserConversationMember:
        return AadUserConversationMember(
            odata_type="#microsoft.graph.aadUserConversationMember", roles=["owner"],
            additional_data={"user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{upn}')"})

    return Chat(chat_type=ChatType.OneOnOne, members=[member(me), member(other)])


def test_msgraph_sdk_one_on_one_chat_twice_and_html_message(https_sandbox: SandboxProc, trust_ca: str,
                                                          credential: DeviceCodeCredential) -> None:
    client, transport = _graph(https_sandbox, credential)

    async def run() -> None:
        async with transport:
            users = await client.users.get()
            assert users is not None and users.value
            other = next(u.user_principal_name for u in users.value
                         if u.user_principal_name != SANDBOX_DEFAULT_UPN and u.account_enabled is not False)
            first = await client.chats.post(_one_on_one(SANDBOX_DEFAULT_UPN, other))
            second = await client.chats.post(_one_on_one(SANDBOX_DEFAULT_UPN, other))
            assert first is not None and second is not None and first.id and first.id == second.id
            assert first.chat_type == ChatType.OneOnOne
            html = "<p>Hallo <b>Welt</b></p>"
            sent = await client.chats.by_chat_id(first.id).messages.post(
                ChatMessage(body=ItemBody(content_type=BodyType.Html, content=html)))
            assert sent is not None and sent.id
            back = await client.chats.by_chat_id(first.id).messages.by_chat_message_id(sent.id).get()
            assert back is not None and back.body is not None
            assert back.body.content_type == BodyType.Html and back.body.content == html
            card = {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "TextBlock", "text": "Angebot"}]}
            carded = await client.chats.by_chat_id(first.id).messages.post(ChatMessage(
                body=ItemBody(content_type=BodyType.Html, content='<attachment id="card1"></attachment>'),
                attachments=[ChatMessageAttachment(id="card1", content_type="application/vnd.microsoft.card.adaptive",
                                                   content=json.dumps(card))]))
            assert carded is not None and carded.id
            back = await client.chats.by_chat_id(first.id).messages.by_chat_message_id(carded.id).get()
            assert back is not None and back.attachments and len(back.attachments) == 1
            [att] = back.attachments
            assert att.id == "card1" and att.content_type == "application/vnd.microsoft.card.adaptive"
            assert att.content is not None and json.loads(att.content) == card
            listed = await client.chats.by_chat_id(first.id).messages.get()
            assert listed is not None and {sent.id, carded.id} <= {m.id for m in listed.value or []}

    asyncio.run(run())



@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # azure-identity deprecates username/password itself
def test_azure_identity_username_password_gets_a_graph_token(https_sandbox: SandboxProc, trust_ca: str,
                                                             user_realm_session: requests.Session) -> None:
    # Beyond the URL and CA: azure-core's requests transport on a session carrying the user-realm port fix.
    # Without it get_token fails with "HTTPSConnection(host='127.0.0.1', port=443) ... Connection refused".
    session = user_realm_session
    credential = UsernamePasswordCredential(SANDBOX_CLIENT_ID, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD,
                                            tenant_id=SANDBOX_TENANT_ID, authority=_host(https_sandbox),
                                            disable_instance_discovery=True,
                                            transport=RequestsTransport(session=session, session_owner=False))
    token = credential.get_token(GRAPH_DEFAULT)
    me = httpx.get(f"{https_sandbox.https_url}/v1.0/me", headers={"Authorization": f"Bearer {token.token}"},
                   verify=ssl.create_default_context(cafile=trust_ca)).json()
    assert me["userPrincipalName"] == SANDBOX_DEFAULT_UPN
    session.close()
