"""Expected keys and JSON types of the sandbox's responses, per endpoint.

Written for crmkit from the documented Microsoft Graph / identity platform examples (keys
and value types only; the tests never read the shared example files).  ``None`` in a type
tuple means the key may be JSON null.  A nested dict is a nested shape.  ``ISO_Z`` marks a
timestamp that must be ISO 8601 UTC with a ``Z`` (the documented examples include one with a
malformed date; real Graph does not do that).
"""

from __future__ import annotations

import re
from typing import Any

ISO_Z = "iso-8601-z"
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$")
NULL = type(None)

STR, INT, BOOL, LIST, DICT = str, int, bool, list, dict
OPT_STR = (str, NULL)

# GET /me, GET /users/{id}, and each item of GET /users (default property set)
USER = {
    "businessPhones": LIST, "displayName": STR, "givenName": OPT_STR, "jobTitle": OPT_STR, "mail": OPT_STR,
    "mobilePhone": OPT_STR, "officeLocation": OPT_STR, "preferredLanguage": OPT_STR, "surname": OPT_STR,
    "userPrincipalName": STR, "id": STR,
}
USER_ENTITY = {"@odata.context": STR, **USER}
# GET /users items and GET /users/{id}: the documented examples also carry the entity type
USER_TYPE = "#microsoft.graph.user"
USER_ITEM = {"@odata.type": STR, **USER}
USER_BY_ID = {"@odata.context": STR, **USER_ITEM}
# $search example: $select'ed properties only
SEARCH_USER = {"displayName": STR, "givenName": OPT_STR, "mail": OPT_STR, "userPrincipalName": STR}
COLLECTION = {"@odata.context": STR, "value": LIST}
COLLECTION_WITH_COUNT = {**COLLECTION, "@odata.count": INT}

# POST /chats (201)
CHAT_CREATED = {
    "@odata.context": STR, "id": STR, "topic": OPT_STR, "createdDateTime": ISO_Z, "lastUpdatedDateTime": ISO_Z,
    "chatType": STR,
}
# GET /chats/{id}
CHAT = {
    **CHAT_CREATED, "webUrl": STR, "tenantId": STR, "onlineMeetingInfo": (DICT, NULL),
    "viewpoint": {"isHidden": BOOL, "lastMessageReadDateTime": ISO_Z}, "isHiddenForAllMembers": BOOL,
}
# items of /me/chats (no @odata.context per item) with $expand=members
CHAT_ITEM = {k: v for k, v in CHAT.items() if k != "@odata.context"} | {"members": LIST}
# GET /chats/{id}/members items and expanded members
MEMBER = {
    "@odata.type": STR, "id": STR, "roles": LIST, "displayName": OPT_STR, "visibleHistoryStartDateTime": STR,
    "userId": STR, "email": OPT_STR, "tenantId": STR,
}
IDENTITY_USER = {"id": STR, "displayName": OPT_STR, "userIdentityType": STR}
# POST /chats/{id}/messages (201) and GET .../messages/{id}
MESSAGE = {
    "id": STR, "replyToId": OPT_STR, "etag": STR, "messageType": STR, "createdDateTime": ISO_Z,
    "lastModifiedDateTime": ISO_Z, "lastEditedDateTime": (STR, NULL), "deletedDateTime": (STR, NULL),
    "subject": OPT_STR, "summary": OPT_STR, "chatId": STR, "importance": STR, "locale": STR,
    "webUrl": OPT_STR, "channelIdentity": (DICT, NULL), "policyViolation": (DICT, NULL),
    "eventDetail": (DICT, NULL),
    "from": {"application": (DICT, NULL), "device": (DICT, NULL), "user": IDENTITY_USER},
    "body": {"contentType": STR, "content": STR},
    "attachments": LIST, "mentions": LIST, "reactions": LIST, "messageHistory": LIST,
}
MESSAGE_ENTITY = {"@odata.context": STR, **MESSAGE}
ATTACHMENT = {"id": STR, "contentType": STR, "contentUrl": OPT_STR, "content": OPT_STR, "name": OPT_STR,
              "thumbnailUrl": OPT_STR}
MENTION = {"id": INT, "mentionText": STR, "mentioned": {"user": IDENTITY_USER}}

GRAPH_ERROR = {"error": {"code": STR, "message": STR,
                         "innerError": {"date": STR, "request-id": STR, "client-request-id": STR}}}
BATCH = {"responses": LIST}
BATCH_ITEM = {"id": STR, "status": INT, "headers": DICT}

# identity platform
DISCOVERY = {
    "authorization_endpoint": STR, "token_endpoint": STR, "device_authorization_endpoint": STR, "issuer": STR,
    "jwks_uri": STR, "token_endpoint_auth_methods_supported": LIST, "response_types_supported": LIST,
    "scopes_supported": LIST, "id_token_signing_alg_values_supported": LIST, "userinfo_endpoint": STR,
    "end_session_endpoint": STR,
}
DEVICE_CODE = {"user_code": STR, "device_code": STR, "verification_uri": STR, "expires_in": INT, "interval": INT,
               "message": STR}
TOKEN = {"token_type": STR, "scope": STR, "expires_in": INT, "ext_expires_in": INT, "access_token": STR,
         "refresh_token": STR, "id_token": STR, "client_info": STR}
APP_TOKEN = {"token_type": STR, "expires_in": INT, "ext_expires_in": INT, "access_token": STR}
OAUTH_ERROR = {"error": STR, "error_description": STR, "error_codes": LIST, "timestamp": STR, "trace_id": STR,
               "correlation_id": STR}
USER_REALM = {"ver": STR, "account_type": STR, "domain_name": STR}
JWKS = {"keys": LIST}
JWK = {"kty": STR, "use": STR, "kid": STR, "n": STR, "e": STR}


def shape_errors(obj: Any, shape: dict[str, Any], where: str = "$") -> list[str]:
    """Every missing key or wrongly typed value of ``obj`` against ``shape``."""
    if not isinstance(obj, dict):
        return [f"{where}: expected an object, got {type(obj).__name__}"]
    errors = []
    for key, want in shape.items():
        path = f"{where}.{key}"
        if key not in obj:
            errors.append(f"{path}: missing")
            continue
        value = obj[key]
        if isinstance(want, dict):
            errors += shape_errors(value, want, path)
        elif want == ISO_Z:
            if not (isinstance(value, str) and _ISO_RE.match(value)):
                errors.append(f"{path}: {value!r} is not ISO 8601 with Z")
        else:
            types = want if isinstance(want, tuple) else (want,)
            # bool is an int subclass in Python, but not in JSON
            ok = any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types)
            if not ok:
                errors.append(f"{path}: {type(value).__name__} is not {'/'.join(t.__name__ for t in types)}")
    return errors


def assert_shape(obj: Any, shape: dict[str, Any]) -> None:
    errors = shape_errors(obj, shape)
    assert not errors, "\n".join(errors)
