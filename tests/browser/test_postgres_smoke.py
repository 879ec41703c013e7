"""The dashboards on PostgreSQL in a real browser (issue 15: the browser tier on DuckDB, a smoke run on PostgreSQL).

Voila (crmkit.voila_launch, as every browser test) serves the committed dashboards with ``CRMKIT_DB`` set to
the URL of a fresh migrated database on the session's PostgreSQL cluster, filled with demo data and one
address whose company name exists nowhere else. Headless Chromium pages the record table, searches for that
address, and switches Teams on in the system settings; the store then reads the switch back from PostgreSQL.
Each test would fail if the kernels ignored ``CRMKIT_DB`` (they would show another database's rows).
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.postgres import PgCluster, fresh_database_url

import crmkit
from crmkit import demo_data
from crmkit.store import Store
from crmkit.teams import activation
from crmkit.voila_launch import dashboard_url, free_port, server_url, start_voila, stop_voila, wait_until_up

from .test_language_walk import LOADING_WATCH_JS, VISIBLE_TEXT_JS, Language

pytestmark = pytest.mark.browser  # needs PostgreSQL too; browser is the heaviest part, its one tier

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
PAGE_SIZE = 25  # the user setting's default
DEMO_ADDRESSES = 120


@dataclass(frozen=True)
class PgSite:
    port: int
    db: str  # the PostgreSQL URL the kernels were given
    marker: str  # the company name of the one address only this database has
    total: int
    data: list[str]  # the database's own strings (not UI text), longest first
    logins: set[str]


def _strings(crm: crmkit.CRM) -> tuple[list[str], set[str]]:
    cols = ("company", "first_name", "last_name", "street", "city", "salutation", "email", "phone", "postal_code",
            "department", "title")
    values = {str(v) for c in cols for v in crm.store.df(f"SELECT DISTINCT {c} AS v FROM addresses")["v"]
              if v is not None}
    users = crm.store.df("SELECT name, display_name FROM users")
    values |= set(users["display_name"]) | set(crm.store.df("SELECT label FROM contact_types")["label"])
    logins = set(users.loc[users["name"] != users["display_name"], "name"])
    return sorted(values, key=len, reverse=True), logins


@pytest.fixture(scope="module")
def pg_site(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory, output_dir: Path,
            chromium: Path) -> Iterator[PgSite]:
    base = tmp_path_factory.mktemp("postgres-smoke")
    template = pg_cluster.template_for("crm", lambda url: Store(url).close())  # the root conftest's migrated one
    with fresh_database_url(pg_cluster, template) as db:
        crm = crmkit.open(db)
        demo_data.generate(crm, DEMO_ADDRESSES, seed=15)
        marker = f"Pgsmoke{uuid.uuid4().hex[:8]} GmbH"
        crm.add_address(company=marker, city="Zwickau", country="DE")
        total = crm.count_addresses()
        data, logins = _strings(crm)
        crm.store.close()
        port = free_port()
        env = {"CRMKIT_DB": db, "CRMKIT_USER": "admin", "CRMKIT_HOME": str(base / "home")}
        with (output_dir / "voila-postgres-smoke.log").open("wb") as log:
            proc = start_voila(port, env, log=log)
            try:
                wait_until_up(server_url(port), timeout=90, proc=proc)
                yield PgSite(port, db, marker, total, data, logins)
            finally:
                stop_voila(proc)


@pytest.fixture
def console_errors(page: Any) -> list[str]:
    """The page's console errors and uncaught exceptions, as they happen."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return errors


def _other_language(page: Any, site: PgSite, lang: str = "de", seen: list[str] | None = None) -> list[str]:
    """What the page shows in the language other than ``lang`` (the language walk's check); the data is the
    database's own."""
    seen = [*(seen or []), *page.evaluate(VISIBLE_TEXT_JS)]
    assert len(seen) > 10, seen  # the walk saw the page
    return Language.of(lang).offences(seen, site.data, site.logins)


def test_the_record_table_pages_and_finds_the_postgres_address(page: Any, console_errors: list[str],
                                                                pg_site: PgSite, output_dir: Path) -> None:
    from playwright.sync_api import expect

    page.goto(dashboard_url(pg_site.port, "addresses.ipynb"), wait_until="commit")
    label = page.locator(".crmkit-page-label")
    label.wait_for(state="visible", timeout=WIDGETS_UP)
    pages = math.ceil(pg_site.total / PAGE_SIZE)
    assert pages >= 2
    # the PostgreSQL database's count: another database would show another number
    expect(label).to_have_text(f"Seite 1 von {pages} ({pg_site.total} Adressen)", timeout=30_000)
    rows = page.locator(".crmkit-row:visible")
    expect(rows).to_have_count(PAGE_SIZE)
    first_row = rows.first.inner_text()
    assert "Traceback" not in page.content()

    page.locator(".crmkit-next").click()
    expect(label).to_have_text(f"Seite 2 von {pages} ({pg_site.total} Adressen)", timeout=30_000)
    expect(rows.first).not_to_have_text(first_row)
    expect(rows).to_have_count(PAGE_SIZE)

    search = page.locator(".crmkit-search input")
    search.fill(pg_site.marker.split()[0].lower())  # the search words are lower case, accents stripped
    search.press("Enter")
    expect(label).to_have_text(re.compile(r"\(1 Adresse\)$"), timeout=30_000)
    expect(rows).to_have_count(1)
    expect(rows.first.locator("[data-col=company]")).to_have_text(pg_site.marker)
    expect(rows.first.locator("[data-col=city]")).to_have_text("Zwickau")
    page.screenshot(path=str(output_dir / "postgres-smoke-addresses.png"), full_page=True)
    assert _other_language(page, pg_site) == []
    assert console_errors == []


def test_a_settings_change_is_stored_in_postgres(page: Any, console_errors: list[str], pg_site: PgSite,
                                                 output_dir: Path) -> None:
    from playwright.sync_api import expect

    crm = crmkit.open(pg_site.db)
    try:
        assert not activation.is_enabled(crm)
    finally:
        crm.store.close()
    page.goto(dashboard_url(pg_site.port, "settings.ipynb"), wait_until="commit")
    enable = page.locator(".crmkit-teams-enable input[type=checkbox]")
    enable.wait_for(state="visible", timeout=WIDGETS_UP)
    expect(page.locator(".crmkit-settings .crmkit-title")).to_have_text("Systemweite Einstellungen")
    assert "Traceback" not in page.content()
    expect(enable).not_to_be_checked()
    enable.check()
    crm = crmkit.open(pg_site.db)
    try:
        assert crm.store.dialect == "postgresql"
        deadline = time.monotonic() + 30  # the kernel writes when the checkbox's change reaches it
        while not activation.is_enabled(crm) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert activation.is_enabled(crm)  # stored in PostgreSQL, read back by another session
        assert crm.store.one("SELECT count(*) FROM contact_types WHERE code = 'TS'") == 1
    finally:
        crm.store.close()
    expect(enable).to_be_checked()  # not unchecked again by a refusal
    expect(page.locator(".crmkit-error:visible")).to_have_count(0)
    page.screenshot(path=str(output_dir / "postgres-smoke-settings.png"), full_page=True)
    assert _other_language(page, pg_site) == []
    assert console_errors == []


def test_an_english_user_setting_in_postgres_gives_an_english_page(page: Any, console_errors: list[str],
                                                                    pg_site: PgSite, output_dir: Path) -> None:
    """The language is read from PostgreSQL twice: by the server for Voila's loading text (before a kernel
    runs) and by the kernel for the dashboard."""
    from playwright.sync_api import expect

    crm = crmkit.open(pg_site.db)
    crm.set_user_setting("language", "en")
    crm.store.close()
    try:
        page.add_init_script(LOADING_WATCH_JS)
        page.goto(dashboard_url(pg_site.port, "addresses.ipynb"), wait_until="commit")
        label = page.locator(".crmkit-page-label")
        label.wait_for(state="visible", timeout=WIDGETS_UP)
        pages = math.ceil(pg_site.total / PAGE_SIZE)
        expect(label).to_have_text(f"Page 1 of {pages} ({pg_site.total} addresses)", timeout=30_000)
        loading = list(page.evaluate("window.__crmkitLoading || []"))
        assert loading and all(text.startswith("Loading the dashboard") for text in loading), loading
        assert {c["name"]: c["value"] for c in page.context.cookies()}.get("crmkit_lang") == "en"
        page.screenshot(path=str(output_dir / "postgres-smoke-addresses-en.png"), full_page=True)
        assert _other_language(page, pg_site, "en", loading) == []
        assert console_errors == []
    finally:
        crm = crmkit.open(pg_site.db)
        crm.set_user_setting("language", "de")  # leave the module's database as found
        crm.store.close()


def test_the_campaigns_dashboard_reads_and_writes_postgres(page: Any, console_errors: list[str], pg_site: PgSite,
                                                           output_dir: Path) -> None:
    """A campaign only this database has is offered; a campaign and an activity made on the page, with the
    PostgreSQL address as participant, are in PostgreSQL afterwards."""
    from playwright.sync_api import expect

    from crmkit.campaigns import Campaigns

    crm = crmkit.open(pg_site.db)
    camp = Campaigns(crm)
    stored = f"Pgsmoke gespeichert {uuid.uuid4().hex[:6]}"
    camp.add_campaign(stored)
    marker_id = int(crm.store.one("SELECT id FROM addresses WHERE company = ?", [pg_site.marker]))
    camp.close()
    crm.store.close()

    page.goto(dashboard_url(pg_site.port, "campaigns.ipynb"), wait_until="commit")
    page.locator(".crmkit-campaign-editor").wait_for(state="visible", timeout=WIDGETS_UP)
    expect(page.locator(".crmkit-campaign-select select option", has_text=stored)).to_have_count(1, timeout=30_000)

    def create(kind: str, name: str) -> None:
        page.locator(f".crmkit-{kind}-name input").fill(name)
        page.locator(f".crmkit-{kind}-new").click()
        expect(page.locator(f".crmkit-{kind}-select select option:checked")).to_have_text(name, timeout=30_000)

    made = f"Pgsmoke neu {uuid.uuid4().hex[:6]}"
    create("campaign", made)
    create("activity", "Mailing Dezember")
    page.locator(".crmkit-participant-ids input").fill(str(marker_id))
    page.locator(".crmkit-participants-add").click()
    expect(page.locator(".crmkit-participants")).to_have_text("1 Teilnehmer", timeout=30_000)
    page.screenshot(path=str(output_dir / "postgres-smoke-campaigns.png"), full_page=True)

    crm = crmkit.open(pg_site.db)
    camp = Campaigns(crm)
    try:
        campaigns = camp.campaigns()
        (campaign_id,) = campaigns.loc[campaigns["name"] == made, "id"]
        activities = camp.activities(int(campaign_id))
        assert list(activities["name"]) == ["Mailing Dezember"]
        assert list(camp.participants(int(activities["id"].iloc[0]))["id"]) == [marker_id]
    finally:
        camp.close()
        crm.store.close()
    assert _other_language(page, pg_site) == []
    assert console_errors == []
