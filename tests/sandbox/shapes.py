"""Expected keys and JSON types of the sandbox's responses, per endpoint.

Written for crmkit from the documented Microsoft Graph / identity platform examples (keys
and value types only; the tests never read the shared example files).  ``None`` in a type
tuple means the key may be JSON null.  A nested dict is a nested shape.  ``ISO_Z`` marks a
timestamp that must be ISO 8601 UTC with a ``Z`` (the documented examples include one with a
malformed date; real Graph does not do that).  ``ListOf(x)`` is an array whose every item has
shape or type ``x``; ``Maybe(shape)`` a nested object that may be JSON null; ``Matches(rx)`` a
string of that form.  Where the documented examples of one endpoint differ (the chat-message list
example's ``from.user`` lacks the ``@odata.type`` and ``tenantId`` that the single-message example
carries), the shape asks for the union.
"""

from __future__ import annotations

import re
from typing import Any

ISO_Z = "iso-8601-z"
_ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$")
NULL = type(None)

STR, INT, BOOL, LIST, DICT = str, int, bool, list, dict
OPT_STR = (str, NULL)


class ListOf:
    """An array whose items each have this shape (dict) or JSON type."""

    def __init__(self, item: Any) -> None:
        self.item = item


class Maybe:
    """A nested object of this shape, or JSON null."""

    def __init__(self, shape: dict[str, Any]) -> None:
        self.shape = shape


class Matches:
    """A string matching this regular expression."""

    def __init__(self, pattern: str) -> None:
        self.rx = re.compile(pattern)


# innerError.date: Graph writes it without fraction or zone ("2021-03-29T04:17:43")
ERROR_DATE = Matches(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")

# GET /me, GET /users/{id}, and each item of GET /users (default property set)
USER = {
    "businessPhones": ListOf(STR), "displayName": STR, "givenName": OPT_STR, "jobTitle": OPT_STR, "mail": OPT_STR,
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
# GET /users (the documented list example) and the $search example (with @odata.count)
USERS = {**COLLECTION, "value": ListOf(USER_ITEM)}
SEARCH_USERS = {**COLLECTION_WITH_COUNT, "value": ListOf(SEARCH_USER)}

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
# GET /chats/{id}/members items and expanded members
MEMBER_TYPE = "#microsoft.graph.aadUserConversationMember"
MEMBER = {
    "@odata.type": STR, "id": STR, "roles": ListOf(STR), "displayName": OPT_STR,
    "visibleHistoryStartDateTime": ISO_Z, "userId": STR, "email": OPT_STR, "tenantId": STR,
}
MEMBERS = {**COLLECTION_WITH_COUNT, "value": ListOf(MEMBER)}
# GET /chats/{id}?$expand=members
CHAT_EXPANDED = {**CHAT, "members": ListOf(MEMBER)}
# items of /me/chats (no @odata.context per item), without and with $expand=members
CHAT_LISTED = {k: v for k, v in CHAT.items() if k != "@odata.context"}
CHAT_ITEM = CHAT_LISTED | {"members": ListOf(MEMBER)}
CHATS = {**COLLECTION, "value": ListOf(CHAT_LISTED)}
IDENTITY_USER = {"id": STR, "displayName": OPT_STR, "userIdentityType": STR}
# from.user of GET .../messages/{id}; the list and POST examples show a subset of it
TEAMWORK_USER_TYPE = "#microsoft.graph.teamworkUserIdentity"
TEAMWORK_USER = {"@odata.type": STR, **IDENTITY_USER, "tenantId": STR}
IDENTITY_SET = {"application": (DICT, NULL), "device": (DICT, NULL), "conversation": (DICT, NULL),
                "user": TEAMWORK_USER}
ATTACHMENT = {"id": STR, "contentType": STR, "contentUrl": OPT_STR, "content": OPT_STR, "name": OPT_STR,
              "thumbnailUrl": OPT_STR, "teamsAppId": OPT_STR}
MENTION = {"id": INT, "mentionText": STR, "mentioned": {**IDENTITY_SET, "tag": (DICT, NULL)}}
# POST /chats/{id}/messages (201), GET .../messages/{id} and the items of GET .../messages
MESSAGE = {
    "id": STR, "replyToId": OPT_STR, "etag": STR, "messageType": STR, "createdDateTime": ISO_Z,
    "lastModifiedDateTime": ISO_Z, "lastEditedDateTime": (STR, NULL), "deletedDateTime": (STR, NULL),
    "subject": OPT_STR, "summary": OPT_STR, "chatId": STR, "importance": STR, "locale": STR,
    "webUrl": OPT_STR, "channelIdentity": (DICT, NULL), "policyViolation": (DICT, NULL),
    "eventDetail": (DICT, NULL),
    "from": IDENTITY_SET,
    "body": {"contentType": STR, "content": STR},
    "attachments": ListOf(ATTACHMENT), "mentions": ListOf(MENTION), "reactions": LIST, "messageHistory": LIST,
}
MESSAGE_ENTITY = {"@odata.context": STR, **MESSAGE}
MESSAGES = {**COLLECTION_WITH_COUNT, "value": ListOf(MESSAGE)}
# A system event message of the list example (messageType unknownFutureValue, from null,
# eventDetail a chatRenamedEventMessageDetail).  The sandbox writes no system messages today.
EVENT_DETAIL_CHAT_RENAMED = {
    "@odata.type": STR, "chatId": STR, "chatDisplayName": OPT_STR,
    "initiator": {"application": (DICT, NULL), "device": (DICT, NULL), "user": IDENTITY_USER},
}
SYSTEM_MESSAGE = {**MESSAGE, "from": Maybe(IDENTITY_SET), "eventDetail": EVENT_DETAIL_CHAT_RENAMED}

# Teams and channels. GET /me/joinedTeams items: id, displayName, description, isArchived and tenantId carry values
TEAM = {"id": STR, "createdDateTime": OPT_STR, "displayName": STR, "description": OPT_STR, "isArchived": BOOL,
        "tenantId": STR, "webUrl": OPT_STR}
TEAMS = {**COLLECTION, "value": ListOf(TEAM)}
CHANNEL_ID = Matches(r"^19:[0-9a-f]{32}@thread\.tacv2$")
CHANNEL = {"id": CHANNEL_ID, "createdDateTime": ISO_Z, "displayName": STR, "description": OPT_STR,
           "isFavoriteByDefault": (BOOL, NULL), "email": OPT_STR, "tenantId": STR, "webUrl": STR,
           "membershipType": STR}
CHANNEL_ENTITY = {"@odata.context": STR, **CHANNEL}
CHANNELS = {**COLLECTION, "value": ListOf(CHANNEL)}
# channel messages and replies: chatId null, channelIdentity and a webUrl
CHANNEL_MESSAGE = {**MESSAGE, "chatId": NULL, "webUrl": STR,
                   "channelIdentity": {"teamId": STR, "channelId": CHANNEL_ID}}
CHANNEL_MESSAGE_ENTITY = {"@odata.context": STR, **CHANNEL_MESSAGE}
CHANNEL_MESSAGES = {**COLLECTION_WITH_COUNT, "value": ListOf(CHANNEL_MESSAGE)}
# content (a JSON string) of the messageReference attachment on a reply in a chat (chatmessage-replywithquote)
MESSAGE_REFERENCE = {"messageId": STR, "messagePreview": STR, "messageSender": {
    "application": (DICT, NULL), "device": (DICT, NULL),
    "user": {"userIdentityType": STR, "tenantId": STR, "id": STR, "displayName": OPT_STR}}}

GRAPH_ERROR = {"error": {"code": STR, "message": STR,
                         "innerError": {"date": ERROR_DATE, "request-id": STR, "client-request-id": STR}}}
BATCH_ITEM = {"id": STR, "status": INT, "headers": DICT}
BATCH = {"responses": ListOf(BATCH_ITEM)}

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
        errors += _value_errors(obj[key], want, path)
    return errors


def _value_errors(value: Any, want: Any, path: str) -> list[str]:
    if isinstance(want, dict):
        return shape_errors(value, want, path)
    if isinstance(want, Maybe):
        return [] if value is None else shape_errors(value, want.shape, path)
    if isinstance(want, ListOf):
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__} is not list"]
        return [e for i, item in enumerate(value) for e in _value_errors(item, want.item, f"{path}[{i}]")]
    if isinstance(want, Matches):
        ok = isinstance(value, str) and want.rx.match(value)
        return [] if ok else [f"{path}: {value!r} does not match {want.rx.pattern}"]
    if want == ISO_Z:
        ok = isinstance(value, str) and _ISO_RE.match(value)
        return [] if ok else [f"{path}: {value!r} is not ISO 8601 with Z"]
    types = want if isinstance(want, tuple) else (want,)
    # bool is an int subclass in Python, but not in JSON
    if any(isinstance(value, t) and not (t is int and isinstance(value, bool)) for t in types):
        return []
    return [f"{path}: {type(value).__name__} is not {'/'.join(t.__name__ for t in types)}"]


def assert_shape(obj: Any, shape: dict[str, Any]) -> None:
    errors = shape_errors(obj, shape)
    assert not errors, "\n".join(errors)
