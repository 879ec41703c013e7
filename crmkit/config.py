"""Where crmkit finds Microsoft: tenant, client id, identity host, Graph URL, and its secrets folder.

Resolution order for each value: the system setting (``teams.tenant_id``, ``teams.client_id``,
``teams.authority_host``, ``teams.graph_url``), then the environment (``CRMKIT_TENANT_ID``,
``CRMKIT_CLIENT_ID``). With no tenant configured crmkit runs against the built-in sandbox tenant
at ``CRMKIT_SANDBOX_URL`` (default ``http://127.0.0.1:8765``, where ``make demo`` starts it).

``CRMKIT_HOME`` (default ``~/.crmkit``) is the per-machine folder for secrets that must never be
in the database: token caches and the key that encrypts the campaign account's password. It is
created with mode 0700.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import ConfigError

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "DEFAULT_AUTHORITY_HOST",
    "DEFAULT_GRAPH_URL",
    "DEFAULT_SANDBOX_URL",
    "GRAPH_SCOPES",
    "TeamsConfig",
    "crmkit_home",
]

DEFAULT_AUTHORITY_HOST = "login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
# Delegated permissions crmkit asks for (offline_access is added by MSAL itself).
# Chat.Read lets the outbox read a chat back to confirm a message whose answer was lost. Channels (issue 17.1):
# the joined teams and their channels for the picker, a channel's members for the transfer log, the post, and
# ChannelMessage.Read.All to read a channel back after a lost answer (as Chat.Read does for chats). A large set
# as one file (issue 17.4): Files.ReadWrite uploads the workbook to the sender's OneDrive and shares it.
GRAPH_SCOPES = ("User.Read", "User.ReadBasic.All", "Chat.Create", "ChatMessage.Send", "Chat.Read",
                "Team.ReadBasic.All", "Channel.ReadBasic.All", "ChannelMember.Read.All", "ChannelMessage.Send",
                "ChannelMessage.Read.All", "Files.ReadWrite")
# "common"/"consumers" would let personal Microsoft accounts in; crmkit wants work or school only.
_FORBIDDEN_TENANTS = {"common", "consumers"}


def crmkit_home(env: Mapping[str, str] | None = None) -> Path:
    """``CRMKIT_HOME`` (default ``~/.crmkit``), created 0700; a wider mode is tightened."""
    env = os.environ if env is None else env
    home = Path(env.get("CRMKIT_HOME") or "~/.crmkit").expanduser()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077:
        if home.stat().st_uid != os.getuid():
            raise ConfigError(f"{home} (CRMKIT_HOME) is readable by others and not owned by you; choose another.")
        home.chmod(0o700)
    return home


@dataclass(frozen=True)
class TeamsConfig:
    """The Microsoft endpoints and app registration crmkit uses.

    Attributes:
        tenant_id: Entra tenant id or verified domain (``organizations`` allows any work account).
        client_id: application (client) id of the public-client app registration.
        authority_host: identity host without scheme, e.g. ``login.microsoftonline.com``.
        graph_url: Graph base URL including the version, e.g. ``https://graph.microsoft.com/v1.0``.
        sandbox_url: the sandbox's loopback URL when running against the sandbox, else None.
        home: the secrets folder (``CRMKIT_HOME``).
    """

    tenant_id: str
    client_id: str
    authority_host: str = DEFAULT_AUTHORITY_HOST
    graph_url: str = DEFAULT_GRAPH_URL
    sandbox_url: str | None = None
    home: Path = field(default_factory=crmkit_home)
    scopes: tuple[str, ...] = GRAPH_SCOPES

    def __post_init__(self) -> None:
        if not self.tenant_id or not self.client_id:
            raise ConfigError("A Microsoft tenant id and client id are both needed (see docs/app-registration.md).")
        if self.tenant_id.lower() in _FORBIDDEN_TENANTS:
            raise ConfigError(
                f"Tenant {self.tenant_id!r} would admit personal Microsoft accounts; use your tenant id, "
                "your domain, or 'organizations'."
            )
        if not self.authority_host or "/" in self.authority_host:
            raise ConfigError(f"teams.authority_host is a host name such as {DEFAULT_AUTHORITY_HOST}, "
                              f"not {self.authority_host!r}.")
        if urlsplit(self.graph_url).scheme != "https":
            raise ConfigError(f"teams.graph_url must be an https URL, not {self.graph_url!r}.")

    @property
    def sandbox(self) -> bool:
        return self.sandbox_url is not None

    @property
    def authority(self) -> str:
        """MSAL authority URL: ``https://{host}/{tenant}``."""
        return f"https://{self.authority_host}/{self.tenant_id}"

    @property
    def graph_resource(self) -> str:
        """``https://graph.microsoft.com`` (scheme and host of the Graph URL)."""
        parts = urlsplit(self.graph_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def graph_scopes(self) -> list[str]:
        """Resource-qualified delegated scopes, e.g. ``https://graph.microsoft.com/User.Read``."""
        return [f"{self.graph_resource}/{s}" for s in self.scopes]

    @property
    def browser_login_origin(self) -> str:
        """Origin a person's browser opens for identity pages (the sandbox's loopback URL there)."""
        return self.sandbox_url.rstrip("/") if self.sandbox_url else f"https://{self.authority_host}"

    def describe(self) -> str:
        where = f"sandbox tenant at {self.sandbox_url}" if self.sandbox else f"tenant {self.tenant_id}"
        return f"{where}; app {self.client_id}; identity {self.authority_host}; Graph {self.graph_url}"

    @classmethod
    def resolve(cls, crm: Session | None = None, *, env: Mapping[str, str] | None = None,
                home: Path | None = None) -> TeamsConfig:
        """The configuration from system settings, then the environment, else the sandbox.

        Raises:
            ConfigError: a tenant is set without a client id, or a value is malformed.
        """
        env = os.environ if env is None else env

        def setting(name: str) -> Any:
            if crm is None:
                return None
            value = crm.setting(name)
            return value.strip() if isinstance(value, str) and value.strip() else None

        tenant = setting("teams.tenant_id") or (env.get("CRMKIT_TENANT_ID") or "").strip() or None
        client = setting("teams.client_id") or (env.get("CRMKIT_CLIENT_ID") or "").strip() or None
        home = home or crmkit_home(env)
        if tenant is None:
            from . import sandbox as sb

            sandbox_url = (env.get("CRMKIT_SANDBOX_URL") or DEFAULT_SANDBOX_URL).strip().rstrip("/")
            return cls(
                tenant_id=sb.SANDBOX_TENANT_ID, client_id=client or sb.SANDBOX_CLIENT_ID,
                authority_host=sb.LOGIN_HOST, graph_url=sb.GRAPH_BASE, sandbox_url=sandbox_url, home=home,
            )
        if client is None:
            raise ConfigError(
                f"Tenant {tenant} is configured but no client id: set the system setting teams.client_id "
                "or CRMKIT_CLIENT_ID to the app registration's Application (client) ID."
            )
        host = setting("teams.authority_host") or DEFAULT_AUTHORITY_HOST
        graph = (setting("teams.graph_url") or DEFAULT_GRAPH_URL).rstrip("/")
        return cls(tenant_id=tenant, client_id=client, authority_host=host, graph_url=graph, home=home)
