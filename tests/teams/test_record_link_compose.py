"""»Im CRM öffnen« in what a send would post: the card's Action.OpenUrl, the table's and the digest's links,
in the message's language, counted by Teams' size check. Planned through crm.teams.plan (no Graph call:
sender and recipients given), on both backends."""

from __future__ import annotations

import json
import re

import pytest

import crmkit
from crmkit import record_links
from crmkit.errors import ValidationError
from crmkit.teams.compose import MAX_MESSAGE_BYTES, message_size
from crmkit.teams.options import SendOptions

pytestmark = pytest.mark.core

ME = {"id": "00000000-0000-0000-0000-0000000000aa", "displayName": "Anna Schmidt"}
TO = [{"id": "00000000-0000-0000-0000-0000000000bb", "displayName": "Elias Wolf"}]
BASE = "https://hub.example.org/hub/user-redirect/voila/render/dashboards/addresses.ipynb"


def _plan(crm: crmkit.CRM, ids: list[int], **options: object) -> list[dict]:
    plan = crm.teams.plan(ids, [], "Lead", "Bitte anrufen", options=SendOptions.of(**options), me=ME, recipients=TO)
    return [m.payload for m in plan.messages]


@pytest.fixture
def records(crm: crmkit.CRM) -> list[int]:
    crm.set_setting(record_links.SETTING, BASE)
    return [crm.add_address(company="Müller & Söhne GmbH", first_name="Eva", last_name="Keller", city="Berlin",
                            email="eva.keller@mueller.example"),
            crm.add_address(company="Wolf AG", city="Wien")]


@pytest.mark.parametrize(("lang", "title"), [("de", "Im CRM öffnen"), ("en", "Open in CRM")])
def test_the_card_opens_the_record_in_the_crm(crm: crmkit.CRM, records: list[int], lang: str, title: str) -> None:
    [payload] = _plan(crm, records[:1], record_format="card", language=lang)
    card = json.loads(payload["attachments"][0]["content"])
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": title, "url": f"{BASE}?record={records[0]}"}]
    # the URL names the record by its id alone: nothing of its personal data
    assert not re.search(r"Keller|Eva|Müller|mueller|Berlin", card["actions"][0]["url"])


def test_the_table_carries_the_link(crm: crmkit.CRM, records: list[int]) -> None:
    [payload] = _plan(crm, records[:1], record_format="table", language="en")
    body = payload["body"]["content"]
    assert f'<a href="{BASE}?record={records[0]}">Open in CRM</a>' in body
    assert "Im CRM öffnen" not in body and "attachments" not in payload


def test_a_digest_links_every_record_in_its_row(crm: crmkit.CRM, records: list[int]) -> None:
    [payload] = _plan(crm, records, mode="digest", language="de")
    rows = re.findall(r"<tr>.*?</tr>", payload["body"]["content"])
    assert len(rows) == 3  # the header and one row per record
    for row, address in zip(rows[1:], records, strict=True):
        assert f'<a href="{BASE}?record={address}">Im CRM öffnen</a>' in row


def test_no_link_when_the_setting_is_empty(crm: crmkit.CRM, records: list[int]) -> None:
    crm.set_setting(record_links.SETTING, "")
    [card_message] = _plan(crm, records[:1], record_format="card")
    assert "actions" not in json.loads(card_message["attachments"][0]["content"])
    [table_message] = _plan(crm, records[:1], record_format="table")
    assert "record=" not in table_message["body"]["content"]


def test_the_links_count_in_the_size_split(crm: crmkit.CRM) -> None:
    ids = [crm.add_address(company=f"Firma {i:03d} GmbH", city="Berlin", street="Hauptstraße 1") for i in range(120)]
    crm.set_setting(record_links.SETTING, "https://crm.example.org/" + "d" * 300 + "/addresses.ipynb")
    with_links = _plan(crm, ids, mode="digest")
    crm.set_setting(record_links.SETTING, "")
    without = _plan(crm, ids, mode="digest")
    assert len(with_links) > len(without)  # the longer rows fill messages sooner
    for payload in with_links:
        assert message_size(payload) <= MAX_MESSAGE_BYTES
    linked = [int(i) for p in with_links for i in re.findall(r"\?record=(\d+)", p["body"]["content"])]
    assert linked == ids  # every record once, in order, across the split


def test_a_base_stored_past_the_check_stops_the_send_with_what_to_do(crm: crmkit.CRM, records: list[int]) -> None:
    # crm.set_setting refuses it (below); one stored past every check (an old CRM, a hand-edited row) is refused
    # when a message would carry it
    with pytest.raises(ValidationError):
        crm.set_setting(record_links.SETTING, "javascript:alert(1)")
    crm.store.write(lambda tx: crm.write_setting(tx, record_links.SETTING, "javascript:alert(1)"))
    with pytest.raises(ValidationError) as caught:
        _plan(crm, records[:1], record_format="card")
    assert "Anzeigeformat" in caught.value.text("de") and "Display format" in caught.value.text("en")
