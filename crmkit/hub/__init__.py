"""``crmkit hub``: JupyterHub for a team, signing people in at the tenant (the sandbox by default).

- ``config.py``: the 0700 state folder, its 0600 secrets, the generated ``jupyterhub_config.py``.
- ``spawner.py`` (loaded inside the hub): hub names from the directory account, ``CrmkitSpawner`` (each
  person's server as their own OS user ``crmkit-<name>``, created by the hub).
- ``hooks.py``: ``pre_spawn``: the verified sign-in's CRM user (its directory link) and that user's own database
  login, handed to the person's server (``crmkit hub --db``); a sign-in the CRM refuses gets no server.
- ``logout.py`` (loaded inside the hub): ``CrmkitAuthenticator``, whose logout ends every session of the person;
  ``authenticator.py``: its refresh, which gets a fresh id_token with the refresh token before the old one runs
  out (the spawn verifies it), or asks the person to sign in again when the tenant refuses.
- ``run.py``: ``run_hub`` starts tenant, registration, JupyterHub and proxy, and stops them.

Who may sign in: everybody the tenant signs in (``allow_all``), unless ``--allow`` names hub users. The hub
asks a single-tenant authority (the sandbox's, or ``--tenant-id``'s), so only that organisation's directory
accounts get this far; which of them may be a CRM user is the CRM's decision (its directory links, checked by
``hooks.check_sign_in`` before a spawn), not a second list kept in the hub.
"""

from __future__ import annotations

from .run import HubSettings, run_hub

__all__ = ["HubSettings", "run_hub"]
