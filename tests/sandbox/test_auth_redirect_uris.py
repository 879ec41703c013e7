"""Redirect URIs registered per app: authorize and the v2 admin-consent endpoint accept only those.

Entra compares a request's redirect URI with the app registration exactly, except that for a public
client the port of a loopback URI (``http://localhost``, ``http://127.0.0.1``) is ignored. A URI that
does not match is a page with AADSTS50011 in the person's language, never a redirect to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import duckdb
import httpx
import pytest

from crmkit.sandbox import SANDBOX_CLIENT_ID, SANDBOX_DAEMON_CLIENT_ID, SANDBOX_TENANT_ID
from crmkit.sandbox.state import SandboxState
from tests.support.sandbox import SandboxProc

pytestmark = pytest.mark.sandbox

NATIVE = "https://login.crmkit.localhost/common/oauth2/nativeclient"


@pytest.fixture
def admin_api(sp: SandboxProc) -> Iterator[httpx.Client]:
    c = httpx.Client(base_url=sp.url, timeout=30)
    c.post("/_sandbox/reset").raise_for_status()
    yield c
    c.close()


def _authorize(sp: SandboxProc, redirect: str, **params: str) -> httpx.Response:
    q = {"client_id": SANDBOX_CLIENT_ID, "response_type": "code", "redirect_uri": redirect, "scope": "User.Read",
         **params}
    return httpx.get(f"{sp.url}/{SANDBOX_TENANT_ID}/oauth2/v2.0/authorize?{urlencode(q)}")


def _consent(sp: SandboxProc, redirect: str, **params: str) -> httpx.Response:
    q = {"client_id": SANDBOX_CLIENT_ID, "redirect_uri": redirect, "scope": "https://graph.crmkit.localhost/.default",
         **params}
    return httpx.get(f"{sp.url}/{SANDBOX_TENANT_ID}/v2.0/adminconsent?{urlencode(q)}")


def _refused(r: httpx.Response, lang: str = "en") -> None:
    assert r.status_code == 400 and "location" not in r.headers, (r.status_code, r.headers)
    assert r.headers["content-type"].startswith("text/html") and "AADSTS50011" in r.text
    assert r.headers["content-language"] == lang
    assert ("Umleitungs-URI" if lang == "de" else "does not match the redirect URIs") in r.text


def test_the_seeded_public_client_keeps_loopback_and_the_native_client_uri(sp: SandboxProc,
                                                                          admin_api: httpx.Client) -> None:
    got = admin_api.get(f"/_sandbox/apps/{SANDBOX_CLIENT_ID}/redirect_uris")
    assert got.status_code == 200, got.text
    assert set(got.json()["redirect_uris"]) >= {"http://localhost", "http://127.0.0.1", NATIVE}
    for uri in ("http://127.0.0.1:8765/callback", "http://localhost:41234", "http://127.0.0.1:50123/crmkit/consent"):
        assert _authorize(sp, uri).status_code == 200, uri
        assert _consent(sp, uri).status_code == 200, uri
    assert _authorize(sp, NATIVE).status_code == 200
    _refused(_authorize(sp, "https://app.example/cb"))
    _refused(_consent(sp, "https://app.example/cb"))


def test_a_registered_uri_matches_exactly_and_loopback_only_by_port(sp: SandboxProc, admin_api: httpx.Client) -> None:
    uris = ["https://app.example/signin-oidc", "http://127.0.0.1/cb"]
    put = admin_api.put(f"/_sandbox/apps/{SANDBOX_CLIENT_ID}/redirect_uris", json={"redirect_uris": uris})
    assert put.status_code == 200 and put.json()["redirect_uris"] == uris, put.text
    assert _authorize(sp, "https://app.example/signin-oidc").status_code == 200
    assert _consent(sp, "https://app.example/signin-oidc").status_code == 200
    assert _authorize(sp, "http://127.0.0.1:5555/cb").status_code == 200  # any port on loopback
    for bad in ("https://app.example/signin-oidc/x", "https://APP.example:444/signin-oidc",
                "http://127.0.0.1:5555/other", "http://localhost:5555/cb", NATIVE):
        _refused(_authorize(sp, bad))
    _refused(_consent(sp, "http://127.0.0.1:5555/other"))
    # The page speaks the person's language, by ui_locales or the browser's.
    _refused(_authorize(sp, "https://evil.example/cb", ui_locales="de"), "de")
    de = httpx.get(_consent(sp, "https://evil.example/cb").url, headers={"Accept-Language": "de-DE,de;q=0.9"})
    _refused(de, "de")


def test_the_admin_endpoint_refuses_what_entra_would_not_register(admin_api: httpx.Client) -> None:
    url = f"/_sandbox/apps/{SANDBOX_CLIENT_ID}/redirect_uris"
    for body in ({"redirect_uris": "http://127.0.0.1"}, {"redirect_uris": ["http://app.example/cb"]},
                 {"redirect_uris": ["not a uri"]}, {"redirect_uris": ["https://app.example/cb#frag"]}, {}):
        assert admin_api.put(url, json=body).status_code == 400, body
    assert admin_api.put("/_sandbox/apps/nosuch/redirect_uris", json={"redirect_uris": []}).status_code == 404
    # A confidential client has no loopback exception: its URIs match exactly.
    daemon = admin_api.put(f"/_sandbox/apps/{SANDBOX_DAEMON_CLIENT_ID}/redirect_uris",
                           json={"redirect_uris": ["https://daemon.example/cb"]})
    assert daemon.status_code == 200
    # reset restores the seeded registration
    admin_api.post("/_sandbox/reset").raise_for_status()
    assert NATIVE in admin_api.get(url).json()["redirect_uris"]


def test_a_state_folder_of_the_old_schema_keeps_its_data_and_gets_the_seeded_uris(tmp_path: Path) -> None:
    # The apps table as schema 1 had it (no redirect_uris), with one chat in it.
    con = duckdb.connect(str(tmp_path / "sandbox.duckdb"))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("CREATE TABLE apps (client_id VARCHAR PRIMARY KEY, name VARCHAR, kind VARCHAR, "
                "secret_sha256 VARCHAR, delegated_scopes VARCHAR, app_roles VARCHAR, admin_consented BOOLEAN)")
    con.execute("CREATE TABLE users (id VARCHAR PRIMARY KEY, upn VARCHAR, data VARCHAR)")
    con.execute("CREATE TABLE chats (id VARCHAR PRIMARY KEY, chat_type VARCHAR, topic VARCHAR, created DOUBLE, "
                "updated DOUBLE)")
    con.execute("INSERT INTO apps VALUES (?, 'crmkit', 'public', NULL, ?, '[]', FALSE)",
                [SANDBOX_CLIENT_ID, json.dumps(["User.Read"])])
    con.execute("INSERT INTO chats VALUES ('19:kept', 'oneOnOne', NULL, 1, 1)")
    con.execute("INSERT INTO meta VALUES ('schema', '1')")
    con.close()
    state = SandboxState(tmp_path)
    try:
        app = state.app(SANDBOX_CLIENT_ID)
        assert app is not None and NATIVE in app.redirect_uris and "http://127.0.0.1" in app.redirect_uris
        assert app.admin_consented is False  # what the folder said stays
        assert state.chat("19:kept") is not None
    finally:
        state.close()
    again = SandboxState(tmp_path)  # and it opens again as the current schema
    try:
        assert NATIVE in again.app(SANDBOX_CLIENT_ID).redirect_uris  # type: ignore[union-attr]
    finally:
        again.close()


def test_a_state_folder_of_an_unknown_schema_is_seeded_afresh(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "sandbox.duckdb"))
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.execute("CREATE TABLE apps (client_id VARCHAR PRIMARY KEY, something_else VARCHAR)")
    con.execute("INSERT INTO apps VALUES ('stray', 'x')")
    con.execute("INSERT INTO meta VALUES ('schema', '99')")
    con.close()
    state = SandboxState(tmp_path)
    try:
        assert state.app("stray") is None
        app = state.app(SANDBOX_CLIENT_ID)
        assert app is not None and NATIVE in app.redirect_uris and app.admin_consented
        assert state.users()  # the seeded directory
    finally:
        state.close()
