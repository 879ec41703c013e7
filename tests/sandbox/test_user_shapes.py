"""Users endpoints against Microsoft's documented example responses (issue 13, item 6).

The documented examples: GET /users items and GET /users/{id} carry ``@odata.type``
``#microsoft.graph.user`` and ``id``; GET /me carries the default property set; a ``$select``
(the ``$search`` example) returns only the selected properties.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DAEMON_CLIENT_ID, SANDBOX_DEFAULT_UPN

from .shapes import (
    COLLECTION,
    COLLECTION_WITH_COUNT,
    SEARCH_USER,
    USER_BY_ID,
    USER_ENTITY,
    USER_ITEM,
    USER_TYPE,
    assert_shape,
)

pytestmark = pytest.mark.sandbox

BOB = "jonas.becker@contoso.example"


def test_user_list_items_carry_every_documented_key_and_the_entity_type(sandbox_admin):
    r = sandbox_admin.graph().get("users")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(body, COLLECTION)
    assert len(body["value"]) > 1
    for u in body["value"]:
        assert_shape(u, USER_ITEM)
        assert u["@odata.type"] == USER_TYPE


def test_app_only_user_lists_carry_the_entity_type_too(sandbox_admin):
    app = sandbox_admin.graph(sandbox_admin.token(app_only=True, client_id=SANDBOX_DAEMON_CLIENT_ID))
    r = app.get("users", params={"$top": "3"})
    assert r.status_code == 200, r.text
    for u in r.json()["value"]:
        assert_shape(u, USER_ITEM)
        assert u["@odata.type"] == USER_TYPE


@pytest.mark.parametrize("key", ["upn", "id"])
def test_a_user_by_upn_or_id_carries_every_documented_key_and_the_entity_type(sandbox_admin, key):
    g = sandbox_admin.graph()
    bob = g.get(f"users/{BOB}").json()
    ref = BOB if key == "upn" else bob["id"]
    r = g.get("users/" + quote(ref, safe=""))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(body, USER_BY_ID)
    assert body["@odata.type"] == USER_TYPE
    assert body["userPrincipalName"] == BOB


def test_batched_user_gets_carry_the_entity_type(sandbox_admin):
    r = sandbox_admin.graph().post("$batch", json={"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{BOB}"}, {"id": "2", "method": "GET", "url": "/users?$top=2"}]})
    assert r.status_code == 200, r.text
    got = {item["id"]: item for item in r.json()["responses"]}
    assert_shape(got["1"]["body"], USER_BY_ID)
    assert got["1"]["body"]["@odata.type"] == USER_TYPE
    for u in got["2"]["body"]["value"]:
        assert_shape(u, USER_ITEM)


def test_me_carries_the_documented_default_properties(sandbox_admin):
    r = sandbox_admin.graph().get("me")
    assert r.status_code == 200, r.text
    assert_shape(r.json(), USER_ENTITY)
    assert r.json()["userPrincipalName"] == SANDBOX_DEFAULT_UPN


def test_selected_properties_come_back_alone_as_in_the_search_example(sandbox_admin):
    g = sandbox_admin.graph(upn=SANDBOX_ADMIN_UPN)
    r = g.get("users", params={"$search": '"displayName:a"', "$orderby": "displayName", "$count": "true",
                               "$select": "displayName,givenName,mail,userPrincipalName"},
              headers={"ConsistencyLevel": "eventual"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_shape(body, COLLECTION_WITH_COUNT)
    assert body["value"]
    for u in body["value"]:
        assert_shape(u, SEARCH_USER)
        assert set(u) == set(SEARCH_USER)
    one = g.get(f"users/{BOB}", params={"$select": "displayName,id"})
    assert set(one.json()) == {"@odata.context", "displayName", "id"}
