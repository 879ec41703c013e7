"""Issue 17.1 in a real browser: a sales user sends a record to a team's channel from the addresses dashboard's
compose dialog (the channel picked among the suggestions beside people, a colleague @mentioned in it), and it
arrives once in the sandbox channel, with its transfer-log row naming the channel and its member count."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import crmkit
from crmkit import privacy
from crmkit.teams import activation
from crmkit.voila_launch import dashboard_url

from .conftest import SendSetup, voila_with_anna_signed_in

pytestmark = pytest.mark.browser  # against a sandbox; browser is its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
COMPANY = "Müller & Söhne GmbH"


def _seed(crm: crmkit.CRM) -> None:
    activation.enable(crm)
    crm.add_address(company=COMPANY, city="Berlin", country="DE")


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory, output_dir: Path, chromium: Path) -> Iterator[SendSetup]:
    with voila_with_anna_signed_in(tmp_path_factory.mktemp("channel-flow"), output_dir / "voila-channel-flow.log",
                                   _seed) as setup:
        yield setup


def test_a_record_goes_to_a_channel_from_the_compose_dialog(page: Any, flow: SendSetup, output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(flow.voila_port, "addresses.ipynb") + "?user=anna", wait_until="commit")
    row = page.locator(".crmkit-row:visible").first
    row.wait_for(state="visible", timeout=WIDGETS_UP)
    page.locator(".crmkit-rows .crmkit-row-select input").first.check()
    action = page.locator(".crmkit-teams-action")
    expect(action).to_be_enabled(timeout=30_000)
    action.click()
    compose = page.locator(".crmkit-compose")
    compose.wait_for(state="visible", timeout=30_000)
    search = compose.locator(".crmkit-compose-search input")
    search.press_sequentially("Leads", delay=60)
    suggestion = compose.locator(".crmkit-compose-suggestion:visible", has_text="# Vertrieb / Leads")
    suggestion.click(timeout=30_000)
    expect(compose.locator(".crmkit-compose-chip", has_text="Vertrieb / Leads")).to_be_visible()
    search.fill("")
    search.press_sequentially("Jonas", delay=60)
    compose.locator(".crmkit-compose-suggestion:visible", has_text="Jonas Becker").first.click(timeout=30_000)
    mention = compose.locator(".crmkit-compose-mention input")  # shown once people and a channel are chosen
    mention.check(timeout=30_000)
    compose.locator(".crmkit-compose-subject input").fill("Lead für den Kanal")
    compose.locator(".crmkit-compose-send").click()
    expect(compose.locator(".crmkit-compose-results tr[data-status=sent]")).to_have_count(1, timeout=30_000)
    expect(compose.locator(".crmkit-compose-results")).to_contain_text("Vertrieb / Leads")
    page.screenshot(path=str(output_dir / "channel-flow-sent.png"), full_page=True)

    team = next(t for t in flow.sandbox.get("teams")["value"] if t["displayName"] == "Vertrieb")
    leads = next(c for c in team["channels"] if c["displayName"] == "Leads")
    with flow.sandbox.graph() as g:
        posts = g.get(f"teams/{team['id']}/channels/{leads['id']}/messages").json()["value"]
    assert [p["subject"] for p in posts] == ["cobra CRM - Lead für den Kanal"]
    [mentioned] = posts[0]["mentions"]  # Jonas @mentioned in the post, not sent a message of his own
    assert mentioned["mentioned"]["user"]["displayName"] == "Jonas Becker"
    assert f'<at id="{mentioned["id"]}">Jonas Becker</at>' in posts[0]["body"]["content"]
    crm = crmkit.open(flow.db, "admin")
    try:
        log = privacy.transfer_log(crm)
        assert log["recipient_name"].tolist() == ["Vertrieb / Leads"]
        assert log["detail"].tolist() == [f"channel members: {len(leads['members'])}, guests: 1"]
        assert log["outcome"].tolist() == ["sent"] and log["user_name"].tolist() == ["anna"]
    finally:
        crm.store.close()
