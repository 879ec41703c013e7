"""The Teams display format: fields, labels, formats, escaping, the Adaptive Card's structure, persistence."""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

import pytest

import crmkit
from crmkit.crm import CRM
from crmkit.teams import display_format as dfm
from crmkit.teams.display_format import (
    BadFormatPattern,
    DisplayFormat,
    DisplayFormatError,
    DuplicateDisplayField,
    FieldFormat,
    UnknownDisplayField,
)

pytestmark = pytest.mark.core

RECORD: dict[str, Any] = {
    "id": 7, "kind": "person", "company": "Müller & Söhne GmbH", "salutation": "Frau", "title": None,
    "first_name": "Anna", "last_name": "Müller", "street": "Hauptstraße 5", "postal_code": "50667",
    "city": "Köln", "country": "Deutschland", "phone": "0221 123456", "email": "anna@mueller.example",
    "created_at": datetime(2024, 3, 5, 14, 30),
}
EVIL = '<script>alert("x")</script>'


# -- an encoded subset of the Adaptive Card schema: exactly what this module may emit -------------------

ELEMENTS: dict[str, dict[str, Any]] = {
    "AdaptiveCard": {
        "required": {"type": str, "version": str, "body": list},
        "optional": {"$schema": str, "actions": list},
    },
    "TextBlock": {
        "required": {"type": str, "text": str},
        "optional": {"weight": ("Default", "Lighter", "Bolder"), "size": ("Default", "Small", "Medium", "Large",
                                                                          "ExtraLarge"), "wrap": bool},
    },
    "FactSet": {"required": {"type": str, "facts": list}, "optional": {}},
    "Fact": {"required": {"title": str, "value": str}, "optional": {}},
    # learn.microsoft.com, Adaptive Cards schema explorer, Action.OpenUrl: type and url required (1.0), title
    "Action.OpenUrl": {"required": {"type": str, "url": str}, "optional": {"title": str}},
}


def _check_keys(obj: dict[str, Any], kind: str, where: str) -> None:
    spec = ELEMENTS[kind]
    assert isinstance(obj, dict), f"{where}: {kind} must be an object"
    for key, typ in spec["required"].items():
        assert key in obj, f"{where}: {kind} lacks {key}"
        assert isinstance(obj[key], typ), f"{where}: {kind}.{key} must be {typ.__name__}"
    unknown = set(obj) - set(spec["required"]) - set(spec["optional"])
    assert not unknown, f"{where}: {kind} has unknown keys {unknown}"
    for key, allowed in spec["optional"].items():
        if key not in obj:
            continue
        if isinstance(allowed, tuple):
            assert obj[key] in allowed, f"{where}: {kind}.{key}={obj[key]!r} not in {allowed}"
        else:
            assert isinstance(obj[key], allowed), f"{where}: {kind}.{key} must be {allowed.__name__}"


def validate_card(card: dict[str, Any]) -> None:
    """Assert ``card`` is a valid Adaptive Card 1.4 of the TextBlock/FactSet subset Teams chats render."""
    _check_keys(card, "AdaptiveCard", "card")
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert card.get("$schema") == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["body"], "card: body is empty"
    for i, element in enumerate(card["body"]):
        kind = element.get("type")
        assert kind in ("TextBlock", "FactSet"), f"body[{i}]: unexpected element type {kind!r}"
        _check_keys(element, kind, f"body[{i}]")
        if kind == "FactSet":
            assert element["facts"], f"body[{i}]: a FactSet needs at least one fact"
            for j, fact in enumerate(element["facts"]):
                _check_keys(fact, "Fact", f"body[{i}].facts[{j}]")
    for i, action in enumerate(card.get("actions", [])):  # only »Im CRM öffnen«, to a web address
        assert action.get("type") == "Action.OpenUrl", f"actions[{i}]: unexpected action {action.get('type')!r}"
        _check_keys(action, "Action.OpenUrl", f"actions[{i}]")
        assert action["url"].startswith(("http://", "https://")), f"actions[{i}]: url {action['url']!r}"


def test_the_validator_rejects_broken_cards() -> None:
    good = DisplayFormat.validate(dfm.default_format()).card(RECORD)
    validate_card(good)
    for breakage in (
        lambda c: c.pop("version"),
        lambda c: c.update(type="Card"),
        lambda c: c["body"].append({"type": "Action.OpenUrl", "url": "https://evil.example"}),
        lambda c: c["body"][1]["facts"].append({"title": "x", "value": 1}),
        lambda c: c["body"][1]["facts"][0].update(extra="x"),
        lambda c: c["body"][0].update(weight="Heavy"),
        lambda c: c.update(actions=[{"type": "Action.Submit", "title": "x"}]),
        lambda c: c.update(actions=[{"type": "Action.OpenUrl", "url": "javascript:alert(1)"}]),
        lambda c: c.update(actions=[{"type": "Action.OpenUrl", "title": "x"}]),
    ):
        card = json.loads(json.dumps(good))
        breakage(card)
        with pytest.raises(AssertionError):
            validate_card(card)


def test_a_card_with_its_record_link_is_a_valid_card() -> None:
    link = "https://hub.example.org/hub/user-redirect/voila/render/dashboards/addresses.ipynb?record=7"
    for lang, title in (("de", "Im CRM öffnen"), ("en", "Open in CRM")):
        card = dfm.default_format().validate().card(RECORD, lang, link=link)
        validate_card(card)
        assert card["actions"] == [{"type": "Action.OpenUrl", "title": title, "url": link}]
        # the compose preview shows it as a link, escaped
        assert f'<a href="{link}" target="_blank" rel="noopener">{title}</a>' in dfm.card_to_html(card)
    assert "actions" not in dfm.default_format().card(RECORD, "de")  # no link given: no action


# -- the default format and rendering -----------------------------------------------------------------

def test_default_format_is_the_address_essentials() -> None:
    fmt = dfm.default_format().validate()
    assert fmt.field_names == ("company", "name", "street", "postal_city", "country", "phone", "email")
    rows = fmt.rows(RECORD, "de")
    assert [r.label for r in rows] == ["Firma", "Name", "Straße", "PLZ / Ort", "Land", "Telefon", "E-Mail"]
    assert rows[1].text == "Frau Anna Müller"  # empty title left out of the composite
    assert rows[3].text == "50667 Köln"
    assert [r.label for r in fmt.rows(RECORD, "en")][3] == "Postcode / city"


def test_rendered_field_names_follow_empty_handling() -> None:
    fmt = dfm.default_format()
    sparse = {**RECORD, "company": None, "phone": "  ", "country": None}
    assert fmt.rendered_field_names(sparse) == ["name", "street", "postal_city", "email"]
    fmt = fmt.update("phone", empty="dash").update("country", empty="text", empty_text="unbekannt")
    assert fmt.rendered_field_names(sparse) == ["name", "street", "postal_city", "country", "phone", "email"]
    texts = {r.field: r.text for r in fmt.rows(sparse)}
    assert texts["phone"] == "—" and texts["country"] == "unbekannt"
    assert fmt.rendered_columns(sparse) == ["salutation", "first_name", "last_name", "street", "postal_code", "city",
                                            "email"]
    # What the card and the table show is exactly those fields.
    card = fmt.card(sparse)
    assert len(card["body"][1]["facts"]) == 6
    assert fmt.html_table(sparse).count("<tr>") == 6


def test_script_in_a_field_arrives_escaped_in_card_and_table() -> None:
    record = {**RECORD, "company": EVIL, "city": "<img src=x onerror=alert(1)>"}
    fmt = dfm.default_format()
    table = fmt.html_table(record)
    assert "<script" not in table and "<img" not in table
    assert html.escape(EVIL, quote=True) in table
    card = fmt.card(record)
    validate_card(card)
    text = dfm.card_json(card)
    assert "<" not in text and ">" not in text  # HTML-safe JSON
    assert json.loads(text) == card
    facts = card["body"][1]["facts"]
    assert facts[0]["value"] == r'\<script\>alert("x")\</script\>'
    preview = dfm.card_to_html(card)
    assert "<script" not in preview and "&lt;script&gt;" in preview


def test_card_markdown_and_json_cannot_be_injected() -> None:
    sneaky = '**urgent** [click](https://evil.example) _x_"}]},{"type":"Action.OpenUrl","url":"https://evil.example'
    record = {**RECORD, "company": sneaky, "street": "- item\n1. first\n# heading"}
    card = dfm.default_format().card(record)
    validate_card(card)
    assert [e["type"] for e in card["body"]] == ["TextBlock", "FactSet"]
    value = card["body"][1]["facts"][0]["value"]
    assert value.startswith(r"\*\*urgent\*\* \[click\](https://evil.example) \_x\_")
    street = card["body"][1]["facts"][2]["value"]
    assert street == "\\- item\n\\1. first\n\\# heading"
    # The preview un-escapes for display, so the user sees what they typed.
    assert "**urgent** [click](https://evil.example)" in html.unescape(dfm.card_to_html(card))


def test_card_for_all_empty_record_is_still_valid() -> None:
    card = dfm.default_format().card({"id": 1, "company": None, "last_name": ""})
    validate_card(card)
    assert card["body"] == [{"type": "TextBlock", "text": "—", "wrap": True}]


@pytest.mark.parametrize("record", [RECORD, {**RECORD, "company": "Ünïcødé ✓ 日本", "email": None},
                                    {**RECORD, "company": "a\\b\"c'd"}])
def test_card_structure_is_valid(record: dict[str, Any]) -> None:
    validate_card(dfm.default_format().card(record, "en"))


def test_html_table_keeps_line_breaks_and_escapes_labels() -> None:
    fmt = dfm.default_format().update("street", label_de="<b>Straße</b>")
    table = fmt.html_table({**RECORD, "street": "Hof 2\nHinterhaus"})
    assert "Hof 2<br>Hinterhaus" in table
    assert "&lt;b&gt;Straße&lt;/b&gt;" in table


# -- field formats ---------------------------------------------------------------------------------------------

def test_date_number_phone_formats() -> None:
    fmt = DisplayFormat((
        FieldFormat.for_field("created_at", kind="date", pattern="%d.%m.%Y %H:%M"),
        FieldFormat.for_field("id", kind="number", pattern=",.2f"),
        FieldFormat.for_field("phone", kind="phone", pattern="e164"),
    )).validate()
    record = {**RECORD, "id": 1234567}
    de = {r.field: r.text for r in fmt.rows(record, "de")}
    en = {r.field: r.text for r in fmt.rows(record, "en")}
    assert de["created_at"] == "05.03.2024 14:30"
    assert de["id"] == "1.234.567,00" and en["id"] == "1,234,567.00"
    assert de["phone"] == "+49221123456"
    assert {r.field: r.text for r in fmt.update("phone", pattern="e164:43").rows(record)}["phone"] == "+43221123456"
    assert {r.field: r.text for r in fmt.update("phone", pattern="raw").rows(
        {**record, "phone": " 0221   123 "})}["phone"] == "0221 123"
    # A date without a pattern follows the language; text that is no date shows as typed.
    plain = DisplayFormat((FieldFormat.for_field("created_at"),))
    assert plain.rows(record, "de")[0].text == "05.03.2024"
    assert plain.rows(record, "en")[0].text == "2024-03-05"
    assert plain.rows({"created_at": "bald"}, "de")[0].text == "bald"


@pytest.mark.parametrize(("build", "error"), [
    (lambda: DisplayFormat((FieldFormat("shoe_size", "Schuh", "Shoe"),)), UnknownDisplayField),
    (lambda: dfm.default_format().add("company"), DuplicateDisplayField),
    (lambda: DisplayFormat((FieldFormat.for_field("created_at", pattern="DD.MM.YYYY"),)), BadFormatPattern),
    (lambda: DisplayFormat((FieldFormat.for_field("created_at", pattern="%d.%Q"),)), BadFormatPattern),
    (lambda: DisplayFormat((FieldFormat.for_field("created_at", pattern="%d.%"),)), BadFormatPattern),
    (lambda: DisplayFormat((FieldFormat.for_field("id", kind="number", pattern="abc"),)), BadFormatPattern),
    (lambda: DisplayFormat((FieldFormat.for_field("phone", kind="phone", pattern="+49"),)), BadFormatPattern),
    (lambda: DisplayFormat((FieldFormat.for_field("company", pattern="%d"),)), BadFormatPattern),
    (lambda: DisplayFormat((FieldFormat.for_field("company", kind="date"),)), DisplayFormatError),
    (lambda: DisplayFormat((FieldFormat.for_field("company", empty="text"),)), DisplayFormatError),
    (lambda: DisplayFormat((FieldFormat.for_field("company", empty="hide"),)), DisplayFormatError),
    (lambda: DisplayFormat((FieldFormat.for_field("company", label_en=" "),)), DisplayFormatError),
    (lambda: DisplayFormat(()), DisplayFormatError),
])
def test_invalid_formats_raise_typed_errors(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        build().validate()
    assert isinstance(info.value, crmkit.ValidationError)


def test_unknown_field_in_for_field_names_the_field() -> None:
    with pytest.raises(UnknownDisplayField) as info:
        FieldFormat.for_field("iban")
    assert info.value.field == "iban" and "company" in str(info.value)


def test_editing_helpers() -> None:
    fmt = dfm.default_format()
    assert fmt.move("email", -10).field_names[0] == "email"
    assert fmt.move("company", 1).field_names[:2] == ("name", "company")
    assert "phone" not in fmt.remove("phone").field_names
    assert fmt.update("company", label_en="Firm").fields[0].label_en == "Firm"
    assert DisplayFormat.from_dict(json.loads(json.dumps(fmt.to_dict()))) == fmt
    with pytest.raises(DisplayFormatError):
        DisplayFormat.from_dict({"version": 2, "fields": []})


# -- persistence, rights, preview ---------------------------------------------------------------------------

@pytest.fixture
def people(crm: CRM) -> CRM:
    crm.add_user("sam", "Sam Sales", roles=["sales"])
    crm.add_user("tina", "Tina Teams", roles=["teams_admin"])
    return crm


def test_save_needs_teams_admin_and_is_audited(people: CRM) -> None:
    sam = CRM(people.store, "sam")
    changed = dfm.default_format().remove("phone")
    with pytest.raises(crmkit.PermissionDenied):
        dfm.save_format(sam, changed)
    assert people.store.one("SELECT count(*) FROM display_formats") == 0
    assert dfm.load_format(sam) == dfm.default_format()

    tina = CRM(people.store, "tina")
    dfm.save_format(tina, changed)
    dfm.save_format(tina, changed)  # unchanged: no second audit row
    assert dfm.load_format(sam) == changed
    audit = people.audit_log(scope="display_format")
    assert len(audit) == 1 and audit.iloc[0]["user_name"] == "tina"
    assert "phone" not in audit.iloc[0]["new_value"] and "phone" in audit.iloc[0]["old_value"]
    dfm.reset_format(tina)
    assert dfm.load_format(sam) == dfm.default_format()


def test_invalid_format_is_not_saved(people: CRM) -> None:
    with pytest.raises(DuplicateDisplayField):
        dfm.save_format(people, dfm.default_format().add("email"))
    assert people.store.one("SELECT count(*) FROM display_formats") == 0


def test_preview_any_record(people: CRM) -> None:
    aid = people.add_address(company=EVIL, first_name="Anna", last_name="Müller", city="Köln")
    p = dfm.preview(people, aid, "en")
    validate_card(p.card)
    assert p.field_names == ["company", "name", "postal_city"]
    assert [r.label for r in p.rows] == ["Company", "Name", "Postcode / city"]
    assert "<script" not in p.html_table and "<script" not in p.card_html and "<" not in p.card_json
    assert dfm.preview(people, aid, "de").rows[0].label == "Firma"
    unsaved = dfm.default_format().remove("company")
    assert dfm.preview(people, aid, "de", fmt=unsaved).field_names == ["name", "postal_city"]
    with pytest.raises(crmkit.NotFound):
        dfm.preview(people, 999, "de")
