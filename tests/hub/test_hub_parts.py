"""crmkit hub's parts without a hub: names, the state folder, the generated config, argument checks."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from crmkit.hub.config import HubConfig, Tenant, prepare_state, write_config, write_secret
from crmkit.hub.run import HubSettings, run_hub
from crmkit.hub.spawner import hub_username, os_user_name

pytestmark = pytest.mark.core


@pytest.mark.parametrize(("userdata", "name"), [
    ({"userPrincipalName": "Lea.Hoffmann@contoso.example"}, "lea.hoffmann"),
    ({"preferred_username": "jörg o'neil@contoso.example"}, "j-rg-o-neil"),
    ({"userPrincipalName": "kim.berg_partner.example#EXT#@contoso.example"}, "kim.berg_partner.example-ext"),
    ({"userPrincipalName": "a.very.long.name.of.somebody.x@contoso.example"}, "a.very.long.name.of.somebody.x"),
])
def test_the_hub_name_is_the_accounts_local_part_made_os_safe(userdata: dict[str, str], name: str) -> None:
    assert hub_username(userdata) == name


def test_an_account_without_a_name_is_refused() -> None:
    with pytest.raises(ValueError, match="names no account"):
        hub_username({"displayName": "No One"})


def test_os_user_names_are_prefixed_at_most_32_characters_and_distinct() -> None:
    assert os_user_name("lea.hoffmann") == "crmkit-lea.hoffmann"
    a, b = os_user_name(hub_username({"userPrincipalName": "a" * 40 + "x@c.example"})), os_user_name("a" * 40 + "y")
    assert len(a) <= 32 and len(b) <= 32 and a != b and a.startswith("crmkit-")


def test_the_state_folder_is_private_and_the_config_names_its_secrets_without_holding_them(tmp_path: Path) -> None:
    state = prepare_state(tmp_path / "hub")
    secret_file = state / "client_secret"
    secret_file.write_text("s3cr3t-client-value-0123456789abcdef\n")
    tenant = Tenant("Microsoft", "https://idp/authorize", "https://idp/token", "https://graph/v1.0/me", "cid",
                    secret_file)
    path = write_config(HubConfig(state, tenant, port=8000, hub_port=8081, proxy_api_port=8001,
                                  home_base=tmp_path / "homes", python=Path("/usr/bin/python3")))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in state.iterdir() if f.name != "client_secret"} == {
        "jupyterhub_cookie_secret": 0o600, "crypt_key": 0o600, "jupyterhub.sqlite": 0o600,
        "jupyterhub_config.py": 0o600}
    text = path.read_text()
    for name in ("jupyterhub_cookie_secret", "crypt_key", "client_secret"):
        assert (state / name).read_text().strip() not in text
    assert str(secret_file) in text and "A.allow_all = True" in text and "CrmkitSpawner" in text
    compile(text, str(path), "exec")
    # a restart keeps the secrets (cookies and the encrypted auth state stay readable)
    before = (state / "crypt_key").read_text()
    prepare_state(state)
    assert (state / "crypt_key").read_text() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="crmkit hub refuses to start unless root")
def test_a_client_secret_file_others_can_read_is_refused_before_anything_starts(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]
                                                                                ) -> None:
    secret = tmp_path / "secret"
    secret.write_text("value\n")
    secret.chmod(0o644)
    out = io.StringIO()
    code = run_hub(HubSettings(state=tmp_path / "hub", tenant_id="t", client_id="c", client_secret_file=secret),
                   out)
    assert code == 2 and "readable by others" in capsys.readouterr().err and "hub " not in out.getvalue()
    half = run_hub(HubSettings(state=tmp_path / "hub", tenant_id="t"), out)
    assert half == 2 and "--client-secret-file" in capsys.readouterr().err


def test_the_config_names_the_crm_owners_url_file_and_the_id_token_checks_never_the_url(tmp_path: Path) -> None:
    state = prepare_state(tmp_path / "hub")
    write_secret(state / "crm_db_url", "postgresql://crm_owner@127.0.0.1:5432/crm")
    tenant = Tenant("Microsoft", "https://idp/authorize", "https://idp/token", "https://graph/v1.0/me", "hub-app",
                    state / "client_secret", authority="https://idp/tenant-1")
    text = write_config(HubConfig(state, tenant, port=8000, hub_port=8081, proxy_api_port=8001,
                                  home_base=tmp_path / "homes", python=Path("/usr/bin/python3"),
                                  crm_db_file=state / "crm_db_url")).read_text()
    assert "postgresql://" not in text and "crm_owner" not in text
    assert f"c.CrmkitSpawner.crm_db_file = {str(state / 'crm_db_url')!r}" in text
    assert "c.CrmkitSpawner.id_authority = 'https://idp/tenant-1'" in text
    assert "c.CrmkitSpawner.id_client_id = 'hub-app'" in text
    assert "c.Authenticator.refresh_pre_spawn = True" in text  # a disabled account's refresh fails: no server
    assert stat.S_IMODE((state / "crm_db_url").stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="crmkit hub refuses to start unless root")
def test_a_crm_url_with_a_password_or_a_duckdb_file_is_refused_before_anything_starts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    code = run_hub(HubSettings(state=tmp_path / "hub", db="postgresql://owner:s3cr3t-pw@127.0.0.1/crm"), out)
    err = capsys.readouterr().err
    assert code == 2 and "must not carry a password" in err and "s3cr3t-pw" not in err + out.getvalue()
    assert not (tmp_path / "hub" / "crm_db_url").exists()
    code = run_hub(HubSettings(state=tmp_path / "hub", db=str(tmp_path / "crm.duckdb")), out)
    assert code == 2 and "postgresql:// URL" in capsys.readouterr().err and "hub " not in out.getvalue()
