"""The hub's hook into a person's spawn: where crmkit's side of a sign-in meets the single-user server.

``pre_spawn`` runs in the hub (as root) after the person's OS user and home exist (``CrmkitSpawner``) and
before their server starts. Today it sets ``CRMKIT_MODE=team`` for the server (JupyterHub already tells it
``JUPYTERHUB_USER``); the rest of the team-mode pieces of issue 16 hang here: map the verified identity in
``auth_state`` (its id_token: tid/oid) to the CRM user through ``directory_links`` and refuse an unlinked or
disabled one, rotate that CRM user's database login into a 0600 passfile in the person's home
(``crmkit.store.pg_roles``), and set ``CRMKIT_DB`` (no password) for the server.
"""

from __future__ import annotations

from typing import Any

__all__ = ["pre_spawn"]


def pre_spawn(spawner: Any) -> None:
    """``c.Spawner.pre_spawn_hook``; keep it idempotent (JupyterHub may call it again for a retried spawn).
    ``spawner.os_user`` and ``pwd.getpwnam(spawner.os_user).pw_dir`` are the person's OS user and home.

    Every person's server runs in team mode (crmkit.mode): crmkit there refuses a DuckDB file, a login that is
    no CRM user's, and any name but the login's user."""
    spawner.environment = {**spawner.environment, "CRMKIT_MODE": "team"}
