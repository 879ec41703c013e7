"""Reads on both backends: the DataFrames' integer dtypes, and the statements a record-table page costs (issue 15).

On PostgreSQL every statement is a round trip, which a loaded machine stretches (20 dashboard sessions beside
4 workers on 2 cores: bench/dashboard_sessions_pg.py); a page made 6-8 of them. The pages' contents are
compared with ``crm.addresses`` (its own query, LIMIT/OFFSET); tests/core/test_core_postgres.py compares them
with DuckDB's.
"""

from __future__ import annotations

from typing import Any

import pytest

import crmkit
from crmkit import demo_data

pytestmark = pytest.mark.core


def test_integer_columns_come_back_with_duckdbs_dtypes(db_location: str) -> None:
    """SMALLINT int16, INTEGER int32, BIGINT int64, a NULL among them the nullable dtype: as DuckDB's df()."""
    store = crmkit.open(db_location).store
    store.write(lambda tx: tx.execute("CREATE TABLE dtype_probe (s SMALLINT, i INTEGER, b BIGINT, n INTEGER)"))
    store.write(lambda tx: tx.execute("INSERT INTO dtype_probe VALUES (1, 2, 3, NULL), (4, 5, 6, 7)"))
    frame = store.read(lambda tx: tx.df("SELECT s, i, b, n, count(*) OVER () AS c FROM dtype_probe ORDER BY s"))
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "s": "int16", "i": "int32", "b": "int64", "n": "Int32", "c": "int64"}
    assert frame["i"].tolist() == [2, 5] and frame["n"].isna().tolist() == [True, False]
    empty = store.read(lambda tx: tx.df("SELECT s, i, b FROM dtype_probe WHERE false"))
    assert {c: str(t) for c, t in empty.dtypes.items()} == {"s": "int16", "i": "int32", "b": "int64"}


def test_a_record_table_page_is_at_most_two_statements_and_the_right_rows(db_location: str) -> None:
    """First, next and last pages, a city filter and a search: each page (rows and total) costs at most two
    statements (PostgreSQL: the filter's settings, then one query), and holds what ``addresses`` gives for that
    LIMIT/OFFSET, also after another session removed rows under a page read from the end."""
    crm = crmkit.open(db_location)
    demo_data.generate(crm, 600, seed=5)
    statements: list[str] = []
    crm.store.tracer = lambda sql, params: statements.append(sql)
    size = 7

    def check(page: int, **filters: Any) -> None:
        statements.clear()
        frame, total = crm.address_page(page, size, columns=["id", "city", "last_name"], **filters)
        made = len(statements)
        crm.store.tracer = None
        try:
            want = crm.addresses(columns=["id", "city", "last_name"], limit=size, offset=page * size, **filters)
            assert total == crm.count_addresses(**filters)
        finally:
            crm.store.tracer = lambda sql, params: statements.append(sql)
        assert frame["id"].tolist() == want["id"].tolist(), (page, filters)
        assert frame.astype(str).equals(want.astype(str)), (page, filters)
        assert made <= 2, (page, filters, statements)

    total = crm.count_addresses()
    last = (total - 1) // size
    for page in (0, 1, last - 1, last):
        check(page)
    city = str(crm.store.one("SELECT city FROM addresses GROUP BY city ORDER BY count(*) DESC, city LIMIT 1"))
    assert crm.count_addresses(city=city) > 3 * size
    for page in (0, 1, (crm.count_addresses(city=city) - 1) // size):
        check(page, city=city)
    for search in ("gmbh", city.lower()):  # a search word, and a city's name (the word index has cities)
        hits = crm.count_addresses(search=search)
        assert hits > size
        for page in (0, (hits - 1) // size):
            check(page, search=search)
    # another session deletes addresses: the last page seen before is now past the middle of a smaller table
    other = crmkit.open(db_location)
    other.store.write(lambda tx: tx.execute("DELETE FROM addresses WHERE id IN (SELECT id FROM addresses "
                                            "ORDER BY id DESC LIMIT 40)"))
    statements.clear()
    frame, n = crm.address_page(last - 2, size, columns=["id"])
    want = crm.addresses(columns=["id"], limit=size, offset=(last - 2) * size)
    assert n == total - 40 and frame["id"].tolist() == want["id"].tolist()


def test_a_deleted_address_leaves_the_search_and_its_words(db_location: str) -> None:
    """Addresses deleted by SQL (one, then all by TRUNCATE on PostgreSQL): a search no longer finds them, pages
    and totals follow; on PostgreSQL the word index drops their words itself (migration 13), which lets its
    search skip the join to the addresses."""
    crm = crmkit.open(db_location)
    keep = crm.add_address(company="Quirinus Sägewerk", city="Hamburg")
    gone = crm.add_address(company="Quirinus Mühle", city="Hamburg")
    frame, total = crm.address_page(0, 10, search="quirinus", columns=["id"])
    assert total == 2 and frame["id"].tolist() == [keep, gone]
    crm.store.write(lambda tx: tx.execute("DELETE FROM addresses WHERE id = ?", [gone]))
    frame, total = crm.address_page(0, 10, search="quirinus", columns=["id"])
    assert total == 1 and frame["id"].tolist() == [keep]
    assert crm.address_page(0, 10, search="mühle", columns=["id"])[1] == 0
    if crm.store.dialect == "postgresql":
        assert crm.store.one("SELECT count(*) FROM address_words WHERE address_id = ?", [gone]) == 0
        crm.store.write(lambda tx: tx.execute("TRUNCATE addresses"))
        assert crm.store.one("SELECT count(*) FROM address_words") == 0
        assert crm.address_page(0, 10, search="quirinus", columns=["id"])[1] == 0
