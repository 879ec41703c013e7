"""Rights and the built-in roles that bundle them.

Rights are checked in the core (``CRM.require``), never only in a view.

Databases hold the roles as migrations seeded them (crmkit/migrations.py, fixed lists): a new right
or a change to a built-in role here also needs a new migration that makes it in existing databases
(tests/core/test_migrations_history.py fails until a fresh database matches this file).
"""

from __future__ import annotations

__all__ = ["BUILTIN_ROLES", "RIGHTS"]

RIGHTS: dict[str, tuple[str, str]] = {
    # right: (German label as in the reference, English label)
    "teams.admin": ("Microsoft Teams-Verwalter", "Microsoft Teams administrator"),
    "teams.send": ("Datensätze per Teams versenden", "Send records via Teams"),
    "campaign.admin": ("Kampagnen einrichten", "Set up campaigns"),
    "privacy.admin": ("Personenbezogene Daten verwalten", "Manage personal-data policy"),
    "privacy.read_log": ("Weitergabeprotokoll lesen", "Read the transfer log"),
    "system.admin": ("Systemverwalter", "System administrator"),
}

# role: (German label, English label, rights)
BUILTIN_ROLES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "admin": ("Administrator", "Administrator", tuple(RIGHTS)),
    "teams_admin": ("Teams-Verwalter", "Teams administrator", ("teams.admin", "teams.send")),
    "privacy_officer": (
        "Datenschutzbeauftragte(r)", "Privacy officer", ("privacy.admin", "privacy.read_log"),
    ),
    "campaign_manager": ("Kampagnenverwalter", "Campaign manager", ("campaign.admin", "teams.send")),
    "sales": ("Vertrieb", "Sales", ("teams.send",)),
    "viewer": ("Nur lesen", "Read only", ()),
}
