"""Rights and the built-in roles that bundle them.

Rights are checked in the core (``CRM.require``), never only in a view.

Labels live in the catalog only (crmkit/i18n/catalog.json): ``right.<key>`` and ``role.<key>``; views
call :func:`right_label` / :func:`role_label`. The roles table's label columns are what migration 1
seeded (history); built-in roles are shown with the catalog's label, a role the catalog does not know
with its stored one.

Databases hold the roles as migrations seeded them (crmkit/migrations.py, fixed lists): a new right
or a change to a built-in role here also needs a new migration that makes it in existing databases
(tests/core/test_migrations_history.py fails until a fresh database matches this file), and its
``right.``/``role.`` labels in the catalog (tests/core/test_labels.py).
"""

from __future__ import annotations

from .i18n import catalog, t

__all__ = ["BUILTIN_ROLES", "RIGHTS", "right_label", "role_label"]

RIGHTS: tuple[str, ...] = (
    "teams.admin",
    "teams.send",
    "campaign.admin",
    "privacy.admin",
    "privacy.read_log",
    "system.admin",
    "records.write",  # add and change addresses, log contacts by hand (a Teams send files its own TS contact)
)

# role: the rights it holds
BUILTIN_ROLES: dict[str, tuple[str, ...]] = {
    "admin": RIGHTS,
    "teams_admin": ("teams.admin", "teams.send", "records.write"),
    "privacy_officer": ("privacy.admin", "privacy.read_log"),
    "campaign_manager": ("campaign.admin", "teams.send", "records.write"),
    "sales": ("teams.send", "records.write"),
    "viewer": (),  # »Nur lesen«: reads only
}


def right_label(right: str, lang: str | None = None) -> str:
    """The label of ``right`` in ``lang`` (``teams.send`` → Datensätze per Teams versenden)."""
    return t(f"right.{right}", lang)


def role_label(role: str, lang: str | None = None, stored: str | None = None) -> str:
    """The label of ``role`` in ``lang``: the catalog's for a role it knows, else ``stored`` (the roles
    table's label of a role the catalog does not know), else the role's name."""
    if f"role.{role}" in catalog():
        return t(f"role.{role}", lang)
    return stored or role
