"""Control characters and bidi controls: refused where text enters the CRM, inert where stored text is shown.

The rule is :mod:`crmkit.text_rules`; these tests go through the public entry points (addresses,
contacts, users, settings, campaigns, the subject and text of a send) and through the renderings of
a stored record (card JSON, card preview, HTML table).
"""

from __future__ import annotations

import json
import re

import pytest
from support.dbstate import FakeM365, db_snapshot, offline_teams, snapshot_diff

import crmkit
from crmkit import errors
from crmkit.campaigns import Campaigns
from crmkit.campaigns._template import render_message, render_subject
from crmkit.teams import activation
from crmkit.teams import display_format as dfm
from crmkit.teams.compose import prefixed_subject
from crmkit.teams.send import TeamsService

pytestmark = pytest.mark.core

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Every C0/C1 control but tab and line feed, and the bidi embeddings, overrides and isolates.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI + "]")
PREFIX = "cobra CRM - "


@pytest.fixture
def crm() -> crmkit.CRM:
    crm = crmkit.open(":memory:")
    crm.add_address(company="Müller GmbH", city="Berlin")
    return crm


def _refused(crm: crmkit.CRM, operation, field: str) -> errors.ControlCharacters:  # type: ignore[no-untyped-def]
    before = db_snapshot(crm.store)
    with pytest.raises(errors.ControlCharacters) as info:
        operation()
    assert info.value.field == field
    assert field in str(info.value) and "U+" in str(info.value)
    after = db_snapshot(crm.store)
    assert after == before, snapshot_diff(before, after)
    return info.value


def test_first_name_with_nul_and_bell_is_refused_naming_the_field(crm: crmkit.CRM) -> None:
    error = _refused(crm, lambda: crm.add_address(first_name="\x00\x07ctrl", last_name="Keller"), "first_name")
    assert "U+0000" in str(error) and "U+0007" in str(error)
    assert "Vorname" in error.text("de") and "First name" in error.text("en")
    _refused(crm, lambda: crm.update_address(1, first_name="\x00\x07ctrl"), "first_name")


@pytest.mark.parametrize("bad", ["\x1b[31mrot", "a\x7fb", "C1\x85next", "zwei\nZeilen", "Tab\there", "cr\rx"])
@pytest.mark.parametrize("field", ["company", "street", "city", "email", "phone", "last_name"])
def test_every_address_field_is_one_line_without_controls(crm: crmkit.CRM, field: str, bad: str) -> None:
    _refused(crm, lambda: crm.update_address(1, **{field: bad}), field)


def test_contacts_users_settings_and_types(crm: crmkit.CRM) -> None:
    crm.add_contact(1, "TEL", "Rückruf", notes="Zeile 1\r\nZeile 2\n\tEingerückt")  # notes hold lines
    _refused(crm, lambda: crm.add_contact(1, "TEL", "Betreff\x00"), "subject")
    _refused(crm, lambda: crm.add_contact(1, "TEL", "zwei\nZeilen"), "subject")
    _refused(crm, lambda: crm.add_contact(1, "TEL", "ok", notes="Glocke\x07"), "notes")
    _refused(crm, lambda: crm.add_user("eve", "Eve\x1b[2J"), "display_name")
    _refused(crm, lambda: crm.add_user("ev\x00e", "Eve"), "name")
    _refused(crm, lambda: crm.add_user("eve", "Eve", email="eve@x.example\x00"), "email")
    _refused(crm, lambda: crm.set_setting("teams.subject_prefix", "cobra\x08 CRM - "), "teams.subject_prefix")
    _refused(crm, lambda: crm.set_setting("teams.subject_prefix", "cobra CRM \u202e- "), "teams.subject_prefix")
    _refused(crm, lambda: crm.add_contact_type("XY", "Label\x00"), "label")


def test_campaign_names_and_action_texts(crm: crmkit.CRM) -> None:
    # The campaign account reads the offline directory, should saving an action look its recipients up.
    camp = Campaigns(crm, teams=TeamsService(crm, m365=FakeM365(), sender="campaign"))  # type: ignore[arg-type]
    _refused(crm, lambda: camp.add_campaign("Frühjahr\x00"), "name")
    cid = camp.add_campaign("Frühjahr", "Erste Zeile\nzweite Zeile")  # a description holds lines
    aid = camp.add_activity(cid, "Mailing")
    _refused(crm, lambda: camp.add_activity(cid, "Mail\x07ing"), "name")
    _refused(crm, lambda: camp.add_reaction(aid, "Inter\x1besse"), "name")
    rid = camp.add_reaction(aid, "Interesse")
    base = {"recipients": ["bernd.weber@contoso.example"]}
    _refused(crm, lambda: camp.add_teams_action(rid, "Vertrieb\x00", **base), "description")
    _refused(crm, lambda: camp.add_teams_action(rid, "T", subject="Lead \u202e{company}", **base), "subject")
    _refused(crm, lambda: camp.add_teams_action(rid, "T", subject="Lead\x07", **base), "subject")
    _refused(crm, lambda: camp.add_teams_action(rid, "T", message="Hallo\x00", **base), "message")
    _refused(crm, lambda: camp.add_teams_action(rid, "T", purpose="Zw\x0beck", **base), "purpose")
    camp.add_participants(aid, [1])
    _refused(crm, lambda: camp.record_reaction(rid, [1], notes="Notiz\x00", deliver=False), "notes")


def test_subject_with_bidi_overrides_is_refused_so_nothing_after_the_prefix_is_reordered() -> None:
    for mark in BIDI:
        with pytest.raises(errors.ControlCharacters) as info:
            prefixed_subject(f"Rechnung {mark}fdp.exe", PREFIX)
        assert info.value.field == "subject" and f"U+{ord(mark):04X}" in str(info.value)
        assert "Betreff" in info.value.text("de")
    with pytest.raises(errors.ControlCharacters):
        prefixed_subject("Angebot\x00", PREFIX)
    assert prefixed_subject("Angebot Müller", PREFIX) == "cobra CRM - Angebot Müller"
    assert prefixed_subject("عرض سعر", PREFIX) == "cobra CRM - عرض سعر"  # right-to-left text itself is fine


def test_send_and_preview_refuse_controls_in_subject_and_message_writing_nothing(crm: crmkit.CRM) -> None:
    activation.enable(crm)
    offline_teams(crm)
    to = ["bernd.weber@contoso.example"]
    _refused(crm, lambda: crm.teams.preview([1], to, "Lead \u202eTXT.exe"), "subject")
    _refused(crm, lambda: crm.teams.send([1], to, "Lead\x07"), "subject")
    _refused(crm, lambda: crm.teams.send([1], to, "Lead", message="Hallo\x00Welt"), "message")
    plan = crm.teams.preview([1], to, "Lead", message="Zeile 1\nZeile 2\tmit Tab")  # the text holds lines
    assert "Zeile 1<br>Zeile 2\tmit Tab" in plan["body_html"].iloc[0]


def _raw_address(crm: crmkit.CRM, **values: str) -> int:
    """Insert an address with raw SQL, as data stored before the rule (or written around crmkit) would be."""
    new_id = int(crm.store.one("SELECT max(id) + 1 FROM addresses"))
    cols = ["id", "kind", *values, "created_by", "created_at", "modified_by", "modified_at"]
    crm.store.write(lambda tx: tx.execute(
        f"INSERT INTO addresses ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [new_id, "person", *values.values(), "admin", "2025-01-01", "admin", "2025-01-01"]))
    return new_id


STORED = {
    "company": "Evil\u202eAG gpj.exe\u202c",
    "first_name": "\x00\x07ctrl",
    "last_name": "Keller\x1b[31m\u2066x\u2069",
    "street": "Haupt\x85str.\x9b 1",
    "city": "Ber\rlin",
    "email": "info@\u202dx.example",
}


def test_stored_controls_and_bidi_render_inert_in_card_and_table(crm: crmkit.CRM) -> None:
    address_id = _raw_address(crm, **STORED)
    fmt = dfm.default_format().add("first_name").add("last_name").add("city")
    for lang in ("de", "en"):
        view = dfm.preview(crm, address_id, lang, fmt)
        card = json.loads(view.card_json)
        texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"] + [
            f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]]
        for rendering in (*texts, json.dumps(card, ensure_ascii=False), view.card_json, view.card_html,
                          view.html_table, fmt.html_table_row(crm.address(address_id), lang)):
            assert not UNSAFE.search(rendering), (lang, repr(rendering))
        assert "ctrl" in view.html_table and "EvilAG gpj.exe" in view.html_table and "Berlin" in view.html_table
    # What is kept: tab and line feed (a line break in the table).
    kept = _raw_address(crm, company="Zwei\nZeilen\tGmbH")
    assert "Zwei<br>Zeilen\tGmbH" in dfm.preview(crm, kept, "de").html_table


def test_campaign_templates_put_stored_values_in_inert() -> None:
    values = {"company": "Evil\u202eAG\x07", "first_name": "Eva\x00"}
    subject = render_subject("Interesse: {company}", values)
    assert subject == "Interesse: EvilAG"
    assert prefixed_subject(subject, PREFIX) == "cobra CRM - Interesse: EvilAG"
    assert not UNSAFE.search(render_message("Hallo {first_name}, {company}", values))
    assert not UNSAFE.search(render_message("<p>Hallo {first_name}</p>", values))
