"""System-wide and per-user settings as data: name, default, help and the right that guards it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SETTINGS", "USER_SETTINGS", "Setting"]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    right: str = "system.admin"
    choices: tuple[Any, ...] | None = None


SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("teams.enabled", False, "Microsoft Teams integration switched on (Microsoft Teams-Integration "
            "aktivieren).", right="teams.admin"),
    Setting("teams.subject_prefix", "cobra CRM - ", "Prefix of every Teams message subject.",
            right="teams.admin"),
    Setting("teams.tenant_id", None, "Entra ID tenant id (or domain); empty means the built-in sandbox.",
            right="teams.admin"),
    Setting("teams.client_id", None, "Application (client) id of crmkit's app registration.",
            right="teams.admin"),
    Setting("teams.authority_host", None, "Identity host, e.g. login.microsoftonline.com; empty means "
            "the sandbox.", right="teams.admin"),
    Setting("teams.graph_url", None, "Microsoft Graph base URL; empty means the sandbox.",
            right="teams.admin"),
    # crmkit.record_links: »Im CRM öffnen« links to <this>?record=<id>; the default is what `crmkit demo` serves
    # (crmkit.voila_launch.dashboard_url), behind crmkit hub .../hub/user-redirect/voila/render/dashboards/...
    Setting("crm.addresses_url", "http://127.0.0.1:8866/voila/render/addresses.ipynb",
            "Web address of the addresses dashboard that »Im CRM öffnen« in Teams messages links to (the link "
            "adds ?record=<id>); empty means no link.", right="teams.admin"),
    # crmkit.teams.replies: a reply in Teams to a message crmkit posted is filed on the record as a TS contact
    # (`crmkit worker` polls the chats; crm.teams.file_replies() on demand). Opt-in: it reads people's chats.
    Setting("teams.file_replies", False, "File replies from Teams on the record: a reply to a message crmkit "
            "posted becomes a contact of type TS on the address (Antworten aus Teams am Datensatz ablegen).",
            right="teams.admin"),
    Setting("privacy.retention_days", 730, "Days a transfer-log row is kept before purge.",
            right="privacy.admin"),
    Setting("ui.default_language", "de", "Language of new users (de or en).", choices=("de", "en")),
]}

USER_SETTINGS: dict[str, Setting] = {s.name: s for s in [
    Setting("language", None, "UI language of this user (de or en); empty follows ui.default_language.",
            choices=(None, "de", "en")),
    Setting("page_size", 25, "Rows per page in record tables."),
]}
