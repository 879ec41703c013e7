"""Demo data: deterministic, realistic, bulk-loaded, and only for system administrators."""

from __future__ import annotations

import re

import pandas as pd
import pytest

import crmkit
from crmkit import demo_data
from crmkit.demo_data import DEMO_USERS, frames, generate

pytestmark = pytest.mark.core

N = 1500


@pytest.fixture(scope="module")
def filled() -> crmkit.CRM:
    """One in-memory CRM with N demo addresses, shared by the read-only checks."""
    crm = crmkit.open(":memory:")
    generate(crm, N, seed=1)
    return crm


def _table(crm: crmkit.CRM, name: str) -> pd.DataFrame:
    return crm.store.df(f"SELECT * FROM {name} ORDER BY id")


def test_same_seed_gives_identical_frames() -> None:
    a1, c1 = frames(600, seed=1)
    a2, c2 = frames(600, seed=1)
    pd.testing.assert_frame_equal(a1, a2)
    pd.testing.assert_frame_equal(c1, c2)
    a3, _ = frames(600, seed=2)
    assert not a1[["last_name", "city"]].equals(a3[["last_name", "city"]])


def test_generated_rows_are_the_frames_and_repeat_per_seed() -> None:
    one, two = crmkit.open(":memory:"), crmkit.open(":memory:")
    s1 = generate(one, 600, seed=1)
    s2 = generate(two, 600, seed=1)
    assert s1["addresses"] == s2["addresses"] == 600
    for table in ("addresses", "contacts"):
        pd.testing.assert_frame_equal(_table(one, table), _table(two, table), check_dtype=False)
    expected_a, expected_c = frames(600, seed=1)
    got = _table(one, "addresses")
    pd.testing.assert_frame_equal(got.astype(str), expected_a[got.columns].astype(str))
    assert len(_table(one, "contacts")) == len(expected_c) == s1["contacts"]


def test_countries_postal_codes_and_phones_fit(filled: crmkit.CRM) -> None:
    a = _table(filled, "addresses")
    assert set(a["country"]) == {"DE", "AT", "CH"}
    share = a["country"].value_counts(normalize=True)
    assert share["DE"] > 0.5 and share["AT"] > 0.05 and share["CH"] > 0.05
    digits = {"DE": r"\d{5}", "AT": r"\d{4}", "CH": r"\d{4}"}
    for country, pattern in digits.items():
        codes = a.loc[a["country"] == country, "postal_code"]
        assert codes.str.fullmatch(pattern).all(), codes[~codes.str.fullmatch(pattern)].head()
    # A postal code belongs to one city (per country): city and code were drawn together.
    cities_per_code = a.groupby(["country", "postal_code"])["city"].nunique()
    assert (cities_per_code == 1).all()
    dial = {"DE": "+49 ", "AT": "+43 ", "CH": "+41 "}
    phones = a.dropna(subset=["phone"])
    assert len(phones) > 0.8 * len(a)
    assert all(p.startswith(dial[c]) for p, c in zip(phones["phone"], phones["country"], strict=True))
    emails = a["email"].dropna()
    assert len(emails) > 0.8 * len(a)
    assert emails.str.fullmatch(r"[a-z0-9.\-]+@[a-z0-9.\-]+\.[a-z]{2,}").all(), emails.head()
    assert a["street"].str.fullmatch(r".+ \d+[abc]?").all()


def test_companies_persons_and_sub_addresses(filled: crmkit.CRM) -> None:
    a = _table(filled, "addresses").set_index("id", drop=False)
    companies = a[a["kind"] == "company"]
    persons = a[a["kind"] == "person"]
    assert len(companies) > 0.1 * N and len(persons) > 0.5 * N
    assert companies["parent_id"].isna().all() and companies["company"].notna().all()
    assert companies["last_name"].isna().all() and (companies["salutation"] == "Firma").all()
    assert persons["last_name"].notna().all() and persons["first_name"].notna().all()
    assert set(persons["salutation"]) <= {"Herr", "Frau", "Divers"}
    assert {"Herr", "Frau"} <= set(persons["salutation"])
    assert persons["title"].notna().any()

    subs = a[a["parent_id"].notna()]
    assert len(subs) > 0.2 * N
    parents = a.loc[subs["parent_id"].astype(int)]
    assert (parents["kind"] == "company").all()
    assert parents["parent_id"].isna().all()
    # Contact persons work at their company's address, in a department.
    for col in ("company", "street", "postal_code", "city", "country", "owner"):
        assert (subs[col].to_numpy() == parents[col].to_numpy()).all(), col
    assert subs["department"].notna().all()
    assert (subs["id"].to_numpy() > subs["parent_id"].to_numpy()).all()
    # Private persons stand alone.
    private = persons[persons["parent_id"].isna()]
    assert private["company"].isna().all() and len(private) > 0
    assert (a["modified_at"] >= a["created_at"]).all()


def test_users_with_their_roles(filled: crmkit.CRM) -> None:
    users = filled.users().set_index("name")
    assert users.loc["admin", "roles"] == "admin"
    for name, _display, role in DEMO_USERS:
        assert users.loc[name, "roles"] == role
        assert users.loc[name, "active"]
    a = _table(filled, "addresses")
    known = set(users.index)
    assert set(a["owner"]) <= known and set(a["created_by"]) <= known and set(a["modified_by"]) <= known
    # The demo users can sign in with their rights.
    assert crmkit.CRM(filled.store, "tom").user.can("teams.admin")
    assert crmkit.CRM(filled.store, "petra").user.can("privacy.read_log")


def test_contacts_reference_addresses_types_and_users(filled: crmkit.CRM) -> None:
    c = _table(filled, "contacts")
    a = _table(filled, "addresses").set_index("id")
    assert len(c) > N
    assert c["address_id"].isin(a.index).all()
    assert set(c["type_code"]) == {"TEL", "EM", "BR", "BE", "NO"}
    assert set(c["type_code"]) <= set(filled.contact_types()["code"])
    assert set(c["user_name"]) <= set(filled.users()["name"])
    assert (c["source"] == "demo").all()
    assert c["subject"].notna().all()
    created = a.loc[c["address_id"], "created_at"].to_numpy()
    assert (c["happened_at"].to_numpy() >= created).all()
    assert (c["happened_at"] < pd.Timestamp(demo_data.DEMO_TODAY)).all()


def test_appends_after_max_id_and_keeps_users(crm: crmkit.CRM) -> None:
    first = crm.add_address(company="Handmade GmbH", city="Bonn")
    s1 = generate(crm, 120, seed=1)
    assert (s1["first_id"], s1["last_id"]) == (first + 1, first + 120)
    s2 = generate(crm, 80, seed=1)
    assert (s2["first_id"], s2["last_id"]) == (first + 121, first + 200)
    assert s2["users_added"] == [] and s1["users_added"] == [u[0] for u in DEMO_USERS]
    a = _table(crm, "addresses")
    assert a["id"].tolist() == list(range(1, 202))
    second = a[a["id"] > first + 120]
    sub = second.dropna(subset=["parent_id"])
    assert (sub["parent_id"] > first + 120).all()  # parents are remapped into the new range
    contact_ids = crm.store.df("SELECT id FROM contacts ORDER BY id")["id"].tolist()
    assert contact_ids == list(range(1, s1["contacts"] + s2["contacts"] + 1))
    audit = crm.audit_log(scope="demo_data")
    assert len(audit) == 2 and set(audit["user_name"]) == {"admin"}


def test_replace_starts_over(crm: crmkit.CRM) -> None:
    generate(crm, 100, seed=1)
    summary = generate(crm, 50, seed=2, replace=True)
    assert summary["first_id"] == 101  # ids are never reused: logs may still name the old ones
    assert crm.count_addresses() == 50
    assert len(crm.contacts(limit=100_000)) == summary["contacts"]


def test_chunks_commit_and_report_progress(crm: crmkit.CRM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_data, "CHUNK_ROWS", 300)
    seen: list[tuple[int, int]] = []
    writes = 0
    real_write = crm.store.write

    def counting_write(fn, **kw):  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return real_write(fn, **kw)

    monkeypatch.setattr(crm.store, "write", counting_write)
    summary = generate(crm, 1000, seed=1, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(0, 1000), (300, 1000), (600, 1000), (900, 1000), (1000, 1000)]
    assert writes == 5  # four chunks, then one rebuild of the search word index
    a = _table(crm, "addresses")
    assert a["id"].tolist() == list(range(1, 1001)) and summary["addresses"] == 1000
    # Chunked generation equals the frames of the same chunking.
    expected, _ = frames(1000, seed=1)
    assert a["last_name"].fillna("").tolist() == expected["last_name"].fillna("").tolist()
    # No company group is split across chunks: each sub-address's parent is in its own chunk.
    sub = a.dropna(subset=["parent_id"])
    assert ((sub["parent_id"] - 1) // 300 == (sub["id"] - 1) // 300).all()


def test_a_store_is_accepted_and_zero_adds_only_users() -> None:
    store = crmkit.Store(":memory:")
    summary = generate(store, 0, seed=1)
    assert summary["addresses"] == 0 and summary["first_id"] is None
    assert store.one("SELECT count(*) FROM users") == 1 + len(DEMO_USERS)
    assert store.one("SELECT count(*) FROM addresses") == 0


@pytest.mark.parametrize("bad", [-1, True, "10", 1.5, demo_data.MAX_ADDRESSES + 1])
def test_bad_counts_are_refused(crm: crmkit.CRM, bad: object) -> None:
    with pytest.raises(crmkit.ValidationError, match="addresses must be"):
        generate(crm, bad)  # type: ignore[arg-type]
    assert crm.count_addresses() == 0


def test_needs_system_admin_and_changes_nothing(db_location: str) -> None:
    admin = crmkit.open(db_location)
    admin.add_user("vera", "Vera Engel", roles=["viewer"])
    generate(admin, 50, seed=1)

    def snapshot() -> dict[str, pd.DataFrame]:
        order = {"addresses": "id", "contacts": "id", "users": "name", "user_roles": "user_name, role",
                 "audit": "id", "address_words": "word, address_id"}
        return {t: admin.store.df(f"SELECT * FROM {t} ORDER BY {o}") for t, o in order.items()}

    before = snapshot()
    vera = crmkit.open(db_location, "vera")
    with pytest.raises(crmkit.PermissionDenied, match=re.escape("system.admin")) as info:
        generate(vera, 100)
    assert info.value.right == "system.admin" and info.value.user == "vera"
    after = snapshot()
    for table, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[table], obj=table)


def test_not_a_session(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(crmkit.ValidationError, match="CRM session or a Store"):
        generate(str(tmp_path / "x.duckdb"), 10)
