"""The UI catalog is complete: both languages for every key, and every key the code uses exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crmkit.addresses import ADDRESS_COLUMNS
from crmkit.i18n import LANGUAGES, catalog, format_count, t
from crmkit.sandbox.i18n import catalog as sandbox_catalog
from crmkit.widgets.common import _TITLES

pytestmark = pytest.mark.core

PACKAGE = Path(__file__).resolve().parents[2] / "crmkit"
# t("key" ...) and t('key' ...); keys built at run time are checked below by prefix.
LITERAL_KEY = re.compile(r"""\bt\(\s*(["'])([A-Za-z0-9_.]+)\1""")
# catalog_error(Cls, "key" ...) and .localized("key" ...): messages of errors
ERROR_KEY = re.compile(r"""(?:\bcatalog_error\(\s*\w+,\s*|\.localized\(\s*)(["'])([A-Za-z0-9_.]+)\1""")


def test_every_key_has_every_language() -> None:
    missing = {key: [lang for lang in LANGUAGES if not entry.get(lang, "").strip()]
               for key, entry in catalog().items()}
    assert {k: v for k, v in missing.items() if v} == {}
    assert all(set(entry) == set(LANGUAGES) for entry in catalog().values())


def test_every_literal_key_in_the_source_exists() -> None:
    used = {
        (path.relative_to(PACKAGE).as_posix(), m.group(2))
        for path in PACKAGE.rglob("*.py")
        for m in LITERAL_KEY.finditer(path.read_text(encoding="utf-8"))
    }
    assert len(used) > 10  # the grep itself works
    # The sandbox tenant speaks from a catalog of its own (it knows nothing of the CRM's).
    assert sorted((where, key) for where, key in used
                  if key not in (sandbox_catalog() if where.startswith("sandbox/") else catalog())) == []
    assert any(where.startswith("sandbox/") for where, _key in used)


def test_every_error_message_key_exists_and_its_placeholders_match() -> None:
    used = {
        (path.relative_to(PACKAGE).as_posix(), m.group(2))
        for path in PACKAGE.rglob("*.py")
        for m in ERROR_KEY.finditer(path.read_text(encoding="utf-8"))
    }
    assert len(used) >= 10  # the grep itself works
    assert sorted((where, key) for where, key in used if key not in catalog()) == []
    for _where, key in used:  # the German text needs nothing the English one is not given (and back)
        fields = {lang: set(re.findall(r"{(\w+)}", catalog()[key][lang])) for lang in LANGUAGES}
        assert all(f.endswith(("_de", "_en")) for f in fields["de"] ^ fields["en"]), (key, fields)


def test_core_errors_read_in_the_users_language() -> None:
    import crmkit
    from crmkit.errors import PermissionDenied, ValidationError
    from crmkit.teams.compose import check_size, prefixed_subject
    from crmkit.widgets.common import error_html

    crm = crmkit.open(":memory:")
    crm.add_user("anna", "Anna Schmidt", roles=["sales"])
    with pytest.raises(PermissionDenied) as denied:
        crmkit.CRM(crm.store, "anna").require("teams.admin")
    assert "lacks the right teams.admin" in str(denied.value)  # str() stays English, for logs and notebooks
    assert "fehlt das Recht teams.admin (Microsoft Teams-Verwalter)" in error_html(denied.value, "de")
    assert "lacks the right" in error_html(denied.value, "en")
    with pytest.raises(ValidationError) as empty:
        prefixed_subject("  ", "cobra CRM - ")
    assert "braucht einen Betreff" in empty.value.text("de") and "needs a subject" in empty.value.text("en")
    with pytest.raises(crmkit.errors.MessageTooLarge) as large:
        check_size({"body": {"content": "x" * 40_000}})
    assert "39,1 KB" in large.value.text("de") and "39.1 KB" in str(large.value)


def test_keys_built_at_run_time_exist() -> None:
    built = [f"address.{c}" for c in ADDRESS_COLUMNS] + [f"language.{lang}" for lang in LANGUAGES]
    built += [key for _kind, key in _TITLES] + ["error.unexpected", "error.open"]
    assert [k for k in built if k not in catalog()] == []


def test_reference_wording() -> None:
    assert [t(k, "de") for k in ("address.company", "address.salutation", "address.first_name",
                                 "address.last_name", "address.street", "address.postal_code",
                                 "address.city", "address.country", "address.phone", "address.email")] == [
        "Firma", "Anrede", "Vorname", "Name", "Straße", "PLZ", "Ort", "Land", "Telefon", "E-Mail"]
    assert t("teams.record_contact", "de") == "Kontakt erfassen"
    assert t("teams.send", "de") == "Absenden"
    assert t("teams.test", "de") == "Testen…"
    assert t("settings.system", "de") == "Systemweite Einstellungen"


def test_fallbacks_and_placeholders() -> None:
    assert t("table.next", "fr") == "Next"  # unknown language → English
    assert t("no.such.key", "de") == "no.such.key"
    assert t("table.page", "de", page=1, pages=4, total="1.000") == "Seite 1 von 4 (1.000 Adressen)"
    assert (format_count(1234567, "de"), format_count(1234567, "en"), format_count(7, "de")) == (
        "1.234.567", "1,234,567", "7")


# Words that are the same in German and English on purpose (product names, loan words, each
# language's own name in the switch). Anything else with one text for both languages is untranslated.
SAME_IN_BOTH = {"Account", "Administrator", "Chat", "Deutsch", "English", "Format", "Microsoft Teams", "Name",
                "Normal", "OK", "SMTP", "Status", "Teams", "Text"}


def test_german_and_english_differ_but_for_known_words() -> None:
    same = {key: entry["de"] for key, entry in catalog().items() if entry["de"].strip() == entry["en"].strip()}
    assert {key: text for key, text in same.items() if text.strip() not in SAME_IN_BOTH} == {}


def test_placeholders_match_between_languages() -> None:
    """A placeholder one language has and the other lacks is a text that breaks (KeyError) or loses a value;
    only the ``_de``/``_en`` pairs (a label given in each language) may differ."""
    def fields(text: str) -> set[str]:
        return {f.removesuffix("_de").removesuffix("_en") for f in re.findall(r"{(\w+)}", text)}
    assert {key: (fields(e["de"]), fields(e["en"])) for key, e in catalog().items()
            if fields(e["de"]) != fields(e["en"])} == {}


def test_dates_in_each_language_and_typed_back() -> None:
    from datetime import date, datetime

    from crmkit.errors import ValidationError
    from crmkit.i18n import format_date, format_datetime
    from crmkit.i18n.dates import parse_date, parse_datetime

    moment = datetime(2026, 3, 4, 9, 5, 7)
    assert (format_date(moment, "de"), format_date(moment, "en")) == ("04.03.2026", "2026-03-04")
    assert format_datetime(moment, "de", seconds=True) == "04.03.2026 09:05:07"
    assert format_datetime(moment, "en") == "2026-03-04 09:05" and format_datetime(None, "de") == ""
    assert parse_date("04.03.2026", "de") == parse_date("2026-03-04", "de") == date(2026, 3, 4)
    assert parse_datetime("2026-03-04 09:05", "en") == datetime(2026, 3, 4, 9, 5) and parse_date(" ", "en") is None
    with pytest.raises(ValidationError) as bad:
        parse_date("3/4/2026", "en")  # mm/dd/yyyy is nobody's format here
    assert "write it as 2026-12-31" in str(bad.value) and "schreiben Sie es wie 31.12.2026" in bad.value.text("de")


def test_a_stored_english_run_error_reads_in_the_users_language() -> None:
    from crmkit.campaigns._runner import run_error_text

    blocked = "address 3 blocked (flag:no_campaign); address 4 blocked (not_found)"
    assert run_error_text(blocked, "de") == (
        "Adresse 3 gesperrt (Keine Kampagnen-Nachrichten); Adresse 4 gesperrt (Adresse nicht gefunden)")
    assert run_error_text(blocked, "en") == (
        "address 3 blocked (No campaign messages); address 4 blocked (address not found)")
    retry = "Network: connection refused (attempt 2; next try in 60 s)"
    assert run_error_text(retry, "de") == "Netzwerkfehler: connection refused (Versuch 2; nächster Versuch in 60 s)"
    assert run_error_text("something a server said", "de") == "something a server said"  # not ours: as stored
    assert run_error_text(None, "de") == ""


def test_the_loading_text_language_is_read_from_the_file(tmp_path: Path) -> None:
    import crmkit
    from crmkit.i18n import stored_language

    db = tmp_path / "crm.duckdb"
    crm = crmkit.open(db)
    crm.add_user("ben", "Ben Wagner", roles=["sales"])
    crm.set_user_setting("language", "en")
    crm.store.close()
    assert stored_language(str(db), "admin") == "en"
    assert stored_language(str(db), "admin", url_user="ben") == "de"  # ben has none: the system default
    assert stored_language(str(tmp_path / "missing.duckdb"), "admin") == "de"  # any trouble: the default


def test_a_stored_english_text_whose_template_names_a_value_twice_is_relocalized() -> None:
    """relocalize() matches a template that uses a placeholder twice (migrate-store's mismatch names its
    target twice): the second use must equal the first, and the German text comes back."""
    from crmkit.i18n import relocalize

    key = "error.msg.store_copy_mismatch"
    english = t(key, "en", source="a.duckdb", target="postgresql://crm@db/crm", problems="users: 3 rows sent")
    german = relocalize(english, "de", [key])
    assert german == t(key, "de", source="a.duckdb", target="postgresql://crm@db/crm", problems="users: 3 rows sent")
    assert german != english
