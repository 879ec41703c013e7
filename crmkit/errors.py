"""The one error tree of crmkit.

Every error crmkit raises on purpose is a ``CrmkitError``; each message says what to do next. The tree
holds every one of them, also those defined beside their feature (module in parentheses);
tests/core/test_error_tree.py fails on a class missing here or drawn under the wrong parent. The sandbox's
answers to its clients (sandbox.graph.GraphErrorResponse, sandbox.identity.IdentityErrorResponse) are the
server's, not crmkit's errors: they stay outside the tree, and no sandbox class takes a name used here.

    CrmkitError
    ├── ConfigError                 bad configuration or environment
    │   ├── UnknownMode             (mode) CRMKIT_MODE is neither single-user nor team
    │   └── PortInUse               (sandbox.server) a port `crmkit sandbox` was told to listen on is taken
    ├── StoreError                  the record store (DuckDB file or PostgreSQL database)
    │   ├── DatabaseLocked          another process kept the file locked too long
    │   ├── NotACrmkitDatabase      corrupt, foreign or newer-than-us file or database
    │   ├── DatabasePathError       the path cannot hold a database
    │   ├── DatabaseUnavailable     the PostgreSQL server cannot be reached (down, wrong host or port)
    │   ├── DatabaseLoginRefused    the PostgreSQL server refused the login (role, password, database)
    │   ├── MigrationNeedsOwner     a migration is pending and this login may not change the schema
    │   └── StoreNotEmpty           the target of `crmkit migrate-store` holds data
    ├── NotFound                    a record, user, setting … does not exist
    │   └── UnknownUser
    ├── PermissionDenied            the session's user lacks a right
    │   └── TeamSignInRequired      (mode) team mode: a DuckDB file, no CRM user's login, another name: sign in
    ├── ValidationError             bad input (argument, SQL filter, form value)
    │   ├── UnsafeQuery             a SQL filter reaching beyond the address columns, or several statements
    │   ├── InvalidRecipient        a Teams recipient that is malformed, unknown, disabled (names them)
    │   ├── ControlCharacters       text with control (or, in a subject, bidi) characters; names the field
    │   ├── DuplicateTransfer       (privacy.log) a transfer-log row for this message, address and recipient exists
    │   ├── AccountAlreadyLinked    (directory_links) the directory account is another CRM user's
    │   ├── InactiveUser            (directory_links) a switched-off CRM user cannot be linked
    │   ├── AdminAlreadyLinked      (directory_links) `crmkit init --admin`: an administrator is linked already
    │   └── DisplayFormatError      (teams.display_format) an invalid display format; carries ``field``
    │       ├── UnknownDisplayField a field the display-field catalog does not know
    │       ├── DuplicateDisplayField
    │       └── BadFormatPattern    a date, number or phone pattern that cannot format a value
    ├── AuthError                   Microsoft sign-in (carries AADSTS codes)
    │   ├── ConsentRequired         carries ``consent_url``
    │   ├── PersonalAccountRefused
    │   ├── MfaRequired
    │   ├── InvalidCredentials
    │   ├── SignInCancelled
    │   ├── SignInRequired          (auth) no usable Microsoft 365 account; sign in by device code
    │   ├── SigningKeysUnavailable  (auth) the authority's discovery document or JWKS could not be read
    │   ├── AccountNotLinked        (directory_links) a verified sign-in no CRM user is linked to: an admin links it
    │   ├── SignInUserInactive      (directory_links) a verified sign-in of a switched-off CRM user
    │   └── IdTokenRefused          (auth) an id_token crmkit verified itself failed (not a JWT, no tid/oid)
    │       ├── IdTokenExpired      past its expiry: sign in again
    │       ├── IdTokenNotYetValid  issued in the future: this computer's clock is off
    │       ├── IdTokenWrongAudience issued to another app: check the client id
    │       ├── IdTokenWrongIssuer  another tenant or sign-in service: check the tenant id
    │       ├── IdTokenBadSignature not RS256 by a published key (alg none/HS*, unknown kid, altered)
    │       └── IdTokenNonceMismatch nonce missing or not this sign-in's
    ├── GraphError                  Microsoft Graph (carries status, code, request_id)
    │   ├── GraphThrottled          429 beyond the retry budget
    │   ├── GraphUnauthorized       (graph) 401, or Teams' 403 for an expired token, after one refresh
    │   └── GraphNotFound           (graph) 404, or a key Graph cannot read as a user
    └── TeamsError                  the Teams integration itself
        ├── IntegrationDisabled
        ├── ContactTypeCodeTaken
        ├── TransferBlocked
        └── MessageTooLarge
"""

from __future__ import annotations

from typing import Self, TypeVar

__all__ = [
    "AuthError",
    "ConfigError",
    "ConsentRequired",
    "ContactTypeCodeTaken",
    "ControlCharacters",
    "CrmkitError",
    "DatabaseLocked",
    "DatabaseLoginRefused",
    "DatabasePathError",
    "DatabaseUnavailable",
    "GraphError",
    "GraphThrottled",
    "IntegrationDisabled",
    "InvalidCredentials",
    "InvalidRecipient",
    "MessageTooLarge",
    "MfaRequired",
    "MigrationNeedsOwner",
    "NotACrmkitDatabase",
    "NotFound",
    "PermissionDenied",
    "PersonalAccountRefused",
    "SignInCancelled",
    "StoreError",
    "StoreNotEmpty",
    "TeamsError",
    "TransferBlocked",
    "UnknownUser",
    "UnsafeQuery",
    "ValidationError",
    "catalog_error",
]


class CrmkitError(Exception):
    """Root of every error crmkit raises on purpose.

    ``str(error)`` is English. An error a dashboard user meets also names its catalog text
    (:meth:`localized`), so :meth:`text` gives it in the user's language.
    """

    key: str | None = None
    params: dict[str, object] = {}  # replaced per instance by localized(), never mutated

    def localized(self, key: str, **params: object) -> Self:
        """Name the catalog text (``key`` with ``params``) this message has in every language."""
        self.key, self.params = key, params
        return self

    def text(self, lang: str | None = None) -> str:
        """The message in ``lang`` (``de`` or ``en``) when the catalog has it, else as raised."""
        if self.key is None:
            return str(self)
        from .i18n import t

        return t(self.key, lang, **self.params)


E = TypeVar("E", bound=CrmkitError)


def catalog_error(cls: type[E], key: str, /, **params: object) -> E:
    """A ``cls`` error whose message comes from the catalog: English in ``str()``, any language in ``text()``."""
    from .i18n import t

    return cls(t(key, "en", **params)).localized(key, **params)


class ConfigError(CrmkitError):
    """Configuration is missing or inconsistent."""


class StoreError(CrmkitError):
    """The record store cannot do what was asked."""


class DatabaseLocked(StoreError):
    """Another process held the database file longer than the retry budget."""


class NotACrmkitDatabase(StoreError):
    """The file is not a crmkit database (corrupt, foreign, or from a newer crmkit)."""


class DatabasePathError(StoreError):
    """The path cannot hold a database (missing folder, a directory, no permission)."""


class DatabaseUnavailable(StoreError):
    """The PostgreSQL server did not answer: it is down, or the URL names the wrong host or port."""


class DatabaseLoginRefused(StoreError):
    """The PostgreSQL server answered but refused the login: role, password or database name."""


class MigrationNeedsOwner(StoreError):
    """A schema migration is pending, and the login (a person's, from ``crmkit db-roles``) may not run DDL:
    the database's owner migrates (``crmkit init``) and syncs the logins (``crmkit db-roles``)."""


class StoreNotEmpty(StoreError):
    """The target of ``crmkit migrate-store`` holds data (rows beyond what a new database is seeded with)."""


class NotFound(CrmkitError):
    """Something that was asked for does not exist."""


class UnknownUser(NotFound):
    """The CRM user name is not known to this database."""


class PermissionDenied(CrmkitError):
    """The session's user lacks the right an operation needs."""

    def __init__(self, message: str, *, right: str | None = None, user: str | None = None) -> None:
        super().__init__(message)
        self.right = right
        self.user = user


class ValidationError(CrmkitError, ValueError):
    """Input was rejected before anything was written."""


class UnsafeQuery(ValidationError):
    """A SQL filter reached beyond the address columns (subquery, other table, function off the list),
    left its parentheses, tried to write, or held more than one statement."""


class InvalidRecipient(ValidationError):
    """Teams recipients that cannot be sent to: not a user name, e-mail or object id, not in the
    directory, or disabled. ``recipients`` holds them as given; the message names them, cut short."""

    def __init__(self, message: str, *, recipients: list[str] | None = None) -> None:
        super().__init__(message)
        self.recipients = list(recipients or [])


class ControlCharacters(ValidationError):
    """Text holds control characters (or, in a subject, bidi controls); ``field`` names where."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class AuthError(CrmkitError):
    """Microsoft sign-in failed; ``codes`` holds the AADSTS numbers when the service sent them."""

    def __init__(self, message: str, *, error: str | None = None, codes: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.error = error
        self.codes = codes


class ConsentRequired(AuthError):
    """The app lacks consent in the tenant; ``consent_url`` is the admin-consent link."""

    def __init__(self, message: str, *, consent_url: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.consent_url = consent_url


class PersonalAccountRefused(AuthError):
    """A personal Microsoft account was used where a work or school account is needed."""


class MfaRequired(AuthError):
    """The account needs multi-factor authentication, which the password flow cannot do."""


class InvalidCredentials(AuthError):
    """Wrong user name or password."""


class SignInCancelled(AuthError):
    """The device-code sign-in was cancelled, declined or timed out."""


class GraphError(CrmkitError):
    """Microsoft Graph answered with an error."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id


class GraphThrottled(GraphError):
    """Graph kept answering 429 beyond the retry budget."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class TeamsError(CrmkitError):
    """The Teams integration refused an operation."""


class IntegrationDisabled(TeamsError):
    """The Microsoft Teams integration is switched off system-wide."""


class ContactTypeCodeTaken(TeamsError):
    """Another contact type already uses the short code the integration needs."""


class TransferBlocked(TeamsError):
    """The personal-data policy or an address block flag forbids the transfer."""


class MessageTooLarge(TeamsError):
    """The message exceeds Teams' size limit even after splitting."""
