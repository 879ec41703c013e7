"""Silent reuse after the Python process restarts: sign in in one process, get a token in the next."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import crmkit
from crmkit.sandbox import SANDBOX_DEFAULT_UPN

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]

SIGN_IN = """
import json, sys, crmkit
from crmkit.auth import Microsoft365
m365 = Microsoft365(crmkit.open())
sign_in = m365.accounts.start_sign_in()
print(json.dumps({"uri": sign_in.verification_uri, "code": sign_in.user_code}), flush=True)
account = sign_in.wait(60)
print(json.dumps({"username": account.username}), flush=True)
"""

SILENT = """
import json, crmkit
from crmkit.auth import Microsoft365
m365 = Microsoft365(crmkit.open())
with m365.graph() as graph:
    me = graph.me()
print(json.dumps({"upn": me["userPrincipalName"], "accounts": [a.username for a in m365.accounts.list()]}))
"""


def test_token_is_reused_silently_in_a_new_process(crm_tenant, form_browser, tmp_path: Path) -> None:
    db = tmp_path / "crm.duckdb"
    crmkit.open(db).store.close()
    env = {**os.environ, "CRMKIT_DB": str(db), "CRMKIT_USER": "admin"}
    child = subprocess.Popen([sys.executable, "-c", SIGN_IN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=ROOT)
    try:
        assert child.stdout is not None
        first = json.loads(child.stdout.readline())
        form_browser.device_login(first["uri"], first["code"], SANDBOX_DEFAULT_UPN)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"username": SANDBOX_DEFAULT_UPN}

    device_calls, grants = crm_tenant.device_calls(), crm_tenant.token_grants()
    second = subprocess.run([sys.executable, "-c", SILENT], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=60)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"upn": SANDBOX_DEFAULT_UPN, "accounts": [SANDBOX_DEFAULT_UPN]}
    assert crm_tenant.device_calls() == device_calls  # no new device-code sign-in
    assert crm_tenant.token_grants() == grants  # the access token itself came from the cache

    home = Path(os.environ["CRMKIT_HOME"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    caches = list((home / "token-caches").glob("*.json"))
    assert len(caches) == 1
    assert stat.S_IMODE(caches[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(caches[0].parent.stat().st_mode) == 0o700
