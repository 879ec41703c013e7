"""No token or password in plain text: not in the DuckDB file, not in logs, not in output; modes checked."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import httpx
import pytest
from support.secret_patterns import WRONG_PASSWORD, duckdb_text

from crmkit.auth import Microsoft365
from crmkit.http import make_http_client
from crmkit.sandbox import SANDBOX_ADMIN_UPN, SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD

pytestmark = pytest.mark.sandbox

SECRET_FIELDS = ("access_token", "refresh_token", "id_token", "device_code")


def test_secret_scan(crm_tenant, sandbox_proc, crm_file, form_browser, caplog: pytest.LogCaptureFixture,
                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name in ("", "httpx", "httpcore", "msal", "crmkit"):
        caplog.set_level(logging.DEBUG, logger=name)
    seen: set[str] = set()

    def harvest(response: httpx.Response) -> None:
        # Collect every secret the identity platform hands out, to look for it afterwards.
        if "/oauth2/v2.0/" in response.request.url.path:
            response.read()
            try:
                body = response.json()
            except ValueError:
                return
            seen.update(str(body[k]) for k in SECRET_FIELDS if body.get(k))

    http = make_http_client(crm_tenant.url)
    http.event_hooks["response"].append(harvest)
    m365 = Microsoft365(crm_file, http=http)
    try:
        # a user adds an account and works with Graph, printing what a notebook would display
        sign_in = m365.accounts.start_sign_in()
        print(sign_in, sign_in.message)
        form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_DEFAULT_UPN)
        account = sign_in.wait(30)
        print(account, m365, m365.accounts.list(), m365.accounts.frame())
        with m365.graph() as graph:
            print(graph, graph.me()["displayName"], graph.search_users("a").count)
            me = graph.me()
            chat = graph.get_or_create_chat(me["id"], SANDBOX_ADMIN_UPN)
            print(graph.send_message(chat["id"], "hello")["id"], graph.stats)
        # the campaign account by password: a wrong one, then the right one; then once-signed-in
        m365.campaign.set_password(SANDBOX_DEFAULT_UPN, WRONG_PASSWORD)
        print(m365.campaign.test())
        info = m365.campaign.set_password(SANDBOX_DEFAULT_UPN, SANDBOX_PASSWORD)
        print(info, m365.campaign, m365.campaign.test(), m365.campaign.box)
        sign_in = m365.campaign.start_sign_in()
        form_browser.device_login(sign_in.verification_uri, sign_in.user_code, SANDBOX_ADMIN_UPN)
        print(sign_in.wait(30), m365.campaign.test())
        print(m365.consent_states(), crm_file.audit_log())
        logging.getLogger("crmkit").debug("state %r %r", m365.accounts.list(), m365.campaign.info())
    finally:
        m365.close()
        http.close()

    assert len(seen) >= 6, "the scan must have real tokens to look for"
    secrets = {*seen, SANDBOX_PASSWORD, WRONG_PASSWORD}
    out, err = capsys.readouterr()
    files = sorted(Path(crm_file.store.path).parent.glob("crm.duckdb*"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # the raw bytes, and every table read through DuckDB (its compressed strings hide from a byte search)
    db = b"".join([*(p.read_bytes() for p in files), *(text for _, text in duckdb_text(files[0], scratch))])
    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    sandbox_log = sandbox_proc.log.read_text()
    places = {"the DuckDB file": db.decode("latin-1"), "the log": logs, "stdout": out, "stderr": err,
              "the sandbox's log": sandbox_log}
    # Report where, with only a short prefix: a failing assert must not print the secret itself.
    leaks = [f"{s[:6]}… in {where}" for s in secrets for where, text in places.items() if s in text]
    assert not leaks, leaks
    # the fallback token cache is the one place a refresh token may be, and only the owner can read it
    home = Path(os.environ["CRMKIT_HOME"])
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "token-caches").stat().st_mode) == 0o700
    caches = sorted((home / "token-caches").glob("*.json"))
    assert len(caches) == 2  # the user's and the campaign account's
    for cache in caches:
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600
    assert any(s in "".join(c.read_text() for c in caches) for s in seen)  # the harvest found real tokens
