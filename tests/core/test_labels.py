"""Every user-facing label of a right, role or field comes from the catalog (issue 14 item 3).

Labels used to live in four places (catalog, rights.py, DISPLAY_FIELDS, the roles table) and drifted
("Created" in the display format, "Created on" in the record table). Now the catalog holds them:
``right.<key>``, ``role.<key>`` and ``address.<key>`` (address columns and display fields alike).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crmkit
from crmkit import rights
from crmkit.addresses import ADDRESS_FIELDS
from crmkit.errors import PermissionDenied
from crmkit.i18n import catalog, field_label, t
from crmkit.teams import display_format as dfm

pytestmark = pytest.mark.core

LANGS = ("de", "en")
OWNED = {
    **{f"right.{r}": r for r in rights.RIGHTS},
    **{f"role.{r}": r for r in rights.BUILTIN_ROLES},
    **{f"address.{f}": f for f in (*dfm.DISPLAY_FIELDS, *ADDRESS_FIELDS)},
}


@pytest.mark.parametrize("key", sorted(OWNED))
def test_every_right_role_and_field_has_both_languages(key: str) -> None:
    entry = catalog().get(key)
    assert entry is not None, f"{key} missing from the catalog"
    for lang in LANGS:
        assert isinstance(entry.get(lang), str) and entry[lang].strip(), f"{key} has no {lang} label"


def test_rights_py_and_display_fields_hold_keys_only() -> None:
    assert all(isinstance(r, str) for r in rights.RIGHTS)
    for role, held in rights.BUILTIN_ROLES.items():
        assert isinstance(role, str) and set(held) <= set(rights.RIGHTS), role
    names = {f.name for f in dfm.DisplayField.__dataclass_fields__.values()}
    assert not names & {"label_de", "label_en"}


def _literals(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)}


@pytest.mark.parametrize("module", ["rights.py", "teams/display_format.py", "addresses.py"])
def test_no_label_string_outside_the_catalog(module: str) -> None:
    labels = {catalog()[k][lang] for k in OWNED if k in catalog() for lang in LANGS}
    labels -= set(OWNED.values())  # a key spelled like its label ("Name" is not "name", but be safe)
    found = _literals(Path(crmkit.__file__).parent / module) & labels
    assert not found, f"{module} defines labels the catalog owns: {sorted(found)}"


@pytest.mark.parametrize("lang", LANGS)
def test_views_read_the_catalog(lang: str) -> None:
    for right in rights.RIGHTS:
        assert rights.right_label(right, lang) == t(f"right.{right}", lang)
    for role in rights.BUILTIN_ROLES:
        assert rights.role_label(role, lang) == t(f"role.{role}", lang)
    for key, spec in dfm.DISPLAY_FIELDS.items():
        assert spec.label(lang) == dfm.field_label(key, lang) == t(f"address.{key}", lang)
        fmt = dfm.FieldFormat.for_field(key)
        assert fmt.label(lang) == t(f"address.{key}", lang)
    for key in ADDRESS_FIELDS:
        assert field_label(key, lang) == t(f"address.{key}", lang)


def test_the_drift_is_gone() -> None:
    """The display format said "Created"/"Modified", the record table "Created on"/"Modified on"."""
    for key, en in (("created_at", "Created on"), ("modified_at", "Modified on")):
        assert dfm.DISPLAY_FIELDS[key].label("en") == field_label(key, "en") == en
        assert dfm.FieldFormat.for_field(key).label_en == en


def test_roles_listing_reads_the_catalog_and_keeps_a_custom_label(crm: crmkit.CRM) -> None:
    # A role the catalog does not know (none can be created today; a database may hold one) shows its
    # stored label; a built-in role shows the catalog's, whatever its row says.
    crm.store.write(lambda tx: tx.execute("INSERT INTO roles VALUES ('auditor', 'Prüfer', 'Auditor')"))
    crm.store.write(lambda tx: tx.execute("UPDATE roles SET label_en = 'stale' WHERE name = 'sales'"))
    got = {r["name"]: (r["label_de"], r["label_en"]) for r in crm.roles().to_dict("records")}
    assert got["sales"] == (t("role.sales", "de"), t("role.sales", "en"))
    assert got["auditor"] == ("Prüfer", "Auditor")
    assert set(got) == {*rights.BUILTIN_ROLES, "auditor"}


def test_permission_denied_names_the_right_by_its_catalog_label(crm: crmkit.CRM) -> None:
    crm.add_user("vera", "Vera", roles=["viewer"])
    with pytest.raises(PermissionDenied) as err:
        crmkit.CRM(crm.store, "vera").require("privacy.read_log")
    for lang in LANGS:
        assert t("right.privacy.read_log", lang) in err.value.text(lang)
