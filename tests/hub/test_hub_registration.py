"""crmkit hub's app registration in the sandbox (no hub): kept across starts while its permissions are today's,
replaced when an older crmkit registered it with less (the hub's tokens carry only what the app was consented,
and the people's servers send with them)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from support.sandbox import SandboxAdmin, SandboxProc

from crmkit.config import GRAPH_SCOPES
from crmkit.hub.config import prepare_state
from crmkit.hub.run import HUB_APP_NAME, _register_in_sandbox
from crmkit.sandbox import SANDBOX_DEFAULT_UPN

pytestmark = pytest.mark.sandbox

CALLBACK = "http://127.0.0.1:8000/hub/oauth_callback"


def _scopes_of(admin: SandboxAdmin, client_id: str) -> set[str]:
    """The delegated permissions the sandbox consented for the app (a token it mints for it without asking for
    any carries exactly those)."""
    r = admin.admin.post("/_sandbox/token", json={"upn": SANDBOX_DEFAULT_UPN, "client_id": client_id})
    r.raise_for_status()
    payload = r.json()["access_token"].split(".")[1]
    return set(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["scp"].split())


def test_the_registration_is_kept_with_todays_permissions_and_replaced_when_it_has_fewer(
        sandbox_admin: SandboxAdmin, sandbox_proc: SandboxProc, tmp_path: Path) -> None:
    state = prepare_state(tmp_path / "hub")
    first = _register_in_sandbox(state, sandbox_proc.url, CALLBACK)
    assert _scopes_of(sandbox_admin, first) == set(GRAPH_SCOPES)
    assert _register_in_sandbox(state, sandbox_proc.url, CALLBACK.replace("8000", "8001")) == first  # restart
    assert stat.S_IMODE((state / "client_secret").stat().st_mode) == 0o600

    # an older crmkit's registration: User.Read alone, its file naming the client id only
    old = sandbox_admin.admin.post("/_sandbox/apps", json={"name": HUB_APP_NAME, "delegated_scopes": ["User.Read"],
                                                           "redirect_uris": [CALLBACK]}).json()
    (state / "sandbox_app.json").write_text(json.dumps({"client_id": old["client_id"]}))
    (state / "client_secret").write_text(old["client_secret"] + "\n")
    replaced = _register_in_sandbox(state, sandbox_proc.url, CALLBACK)
    assert replaced not in (old["client_id"], first)
    assert _scopes_of(sandbox_admin, replaced) == set(GRAPH_SCOPES)
    assert (state / "client_secret").read_text().strip() != old["client_secret"]
