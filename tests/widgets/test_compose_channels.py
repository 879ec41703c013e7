"""Issue 17.1 in the compose dialog: the sender's joined channels listed beside people in the picker, and a
channel picked there (with a person @mentioned) receiving the record, driven like a user would (no browser)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sandbox import SandboxAdmin, sign_in

import crmkit
from crmkit.crm import CRM
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.teams import activation
from crmkit.widgets.compose import ComposeDialog

pytestmark = pytest.mark.sandbox


def wait_until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not reached within {timeout} s")


@pytest.fixture
def store_crm(crm_tenant: SandboxAdmin, tmp_path: Path) -> Iterator[CRM]:
    crm = crmkit.open(tmp_path / "crm.duckdb")
    activation.enable(crm)
    crm.add_address(company="Müller & Söhne GmbH", city="Berlin", country="DE")
    yield crm
    crm.teams.close()


def _shown(dialog: ComposeDialog) -> list[Any]:
    return [b for b in dialog._suggestion_buttons if b.layout.display is None]


def test_the_picker_lists_channels_beside_people_and_a_picked_channel_gets_the_record(
    store_crm: CRM, crm_tenant: SandboxAdmin,
) -> None:
    sign_in(store_crm, SANDBOX_DEFAULT_UPN)
    dialog = ComposeDialog(store_crm, [1], debounce=0)
    assert "Kanals" in dialog.search.placeholder  # German by default: people or channels
    dialog.search.value = "Vertrieb"
    shown = wait_until(lambda: _shown(dialog))
    assert [b.description for b in shown] == ["# Vertrieb / General", "# Vertrieb / Leads"]
    assert all(b.icon == "users" and b.tooltip.startswith("Kanal: ") for b in shown)
    dialog.search.value = "Jonas"
    jonas = wait_until(lambda: next((b for b in _shown(dialog) if b.description.startswith("Jonas Becker")), None))
    jonas.click()
    assert dialog.mention_people.layout.display == "none"  # only with a channel chosen too
    dialog.search.value = "Leads"
    wait_until(lambda: next((b for b in _shown(dialog) if b.description == "# Vertrieb / Leads"), None)).click()
    assert [p["displayName"] for p in dialog.model.recipients] == ["Jonas Becker", "Vertrieb / Leads"]
    assert dialog.mention_people.layout.display is None
    dialog.mention_people.value = True
    dialog.subject.value = "Kanal"
    dialog.send_button.click()
    dialog.model.wait(60)
    assert dialog.model.state == "done", dialog.model.error
    assert dialog.results.value.count('data-status="sent"') == 1
    assert "Vertrieb / Leads" in dialog.results.value
    team = next(t for t in crm_tenant.get("teams")["value"] if t["displayName"] == "Vertrieb")
    leads = next(c for c in team["channels"] if c["displayName"] == "Leads")
    with crm_tenant.graph() as g:
        posts = g.get(f"teams/{team['id']}/channels/{leads['id']}/messages").json()["value"]
    assert [p["subject"] for p in posts] == ["cobra CRM - Kanal"]
    assert posts[0]["mentions"][0]["mentioned"]["user"]["displayName"] == "Jonas Becker"
    assert crm_tenant.get("messages")["count"] == 0  # Jonas was mentioned, not messaged on his own


def test_the_picker_speaks_english_for_an_english_user(store_crm: CRM, crm_tenant: SandboxAdmin) -> None:
    store_crm.set_user_setting("language", "en")
    sign_in(store_crm, SANDBOX_DEFAULT_UPN)
    dialog = ComposeDialog(store_crm, [1], debounce=0)
    assert dialog.search.placeholder == "Type a person's or a channel's name …"
    dialog.search.value = "Leads"
    [button] = wait_until(lambda: _shown(dialog))
    assert (button.description, button.tooltip) == ("# Vertrieb / Leads", "Channel: Vertrieb / Leads")
    assert dialog.mention_people.description.startswith("@mention the chosen people")
