"""Shared fixtures. Tier markers are registered in pyproject.toml; each tier runs alone with -m.

The sandbox, named by what a fixture returns (helpers in tests/support/sandbox.py, forms in tests/support/forms.py):
``sandbox_proc`` the session's sandbox subprocess (support.sandbox.SandboxProc); on it, reset for each test, the one
handle class support.sandbox.SandboxAdmin as ``sandbox_admin`` (the sandbox alone), ``crm_tenant`` (crmkit pointed
at it: CRMKIT_SANDBOX_URL, a private CRMKIT_HOME, msal's caches empty) and ``fast_crm_tenant`` (Teams' limits
raised too); ``form_browser`` posts the sandbox's HTML forms over HTTP, ``browser``/``page`` are Chromium's.
PostgreSQL (tests/support/postgres.py): ``pg_cluster`` the session's throwaway server (support.postgres.PgCluster;
templates via its template_for), ``pg_database_url`` the URL of a fresh empty database on it, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.network import is_loopback_url
from support.postgres import PgCluster, find_or_install_postgres, fresh_database_url
from support.sandbox import Browser, SandboxAdmin, SandboxProc, fast_tenant, fresh_tenant

import crmkit

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
CHROMIUM = Path("/usr/bin/chromium")
# Measured on these machines (STACK-NOTES B): headless Debian Chromium as root needs no sandbox.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-proxy-server"]
TIER_ORDER = {"notebooks": 1, "browser": 2, "hub": 2, "secrets": 3}
# Registered markers that are not tiers: they choose a backend, not the parts a test needs.
NOT_TIERS = {"duckdb_only"}
# The suites whose tests of the ``crm``/``db_location`` fixtures run on both backends; elsewhere DuckDB only.
BOTH_BACKENDS = {"core", "teams", "privacy", "campaigns", "resilience"}


def untiered(items: list[pytest.Item], tiers: set[str]) -> list[str]:
    """Each test whose markers hold no tier or more than one, as "nodeid: why". A test's one tier is
    the heaviest part it needs (core < widgets < sandbox, postgres < slow < notebooks < browser < secrets):
    `make test` runs them all, and each `-m TIER` run selects every test exactly once."""
    bad = []
    for item in items:
        found = sorted({m.name for m in item.iter_markers()} & tiers)
        if len(found) != 1:
            bad.append(f"{item.nodeid}: {'tiers ' + ', '.join(found) if found else 'no tier marker'}")
    return bad


@pytest.hookimpl(tryfirst=True)  # before -m deselects: an untiered test must fail every run that collects it
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries exactly one tier marker (every marker registered in pyproject.toml is a
    tier); collection fails naming each test that does not.

    Then browser tests after the notebooks: Playwright's sync API keeps an event loop running on the
    main thread for the session, which code that calls asyncio.run must not meet. The secret scan
    of everything the run left behind comes last."""
    with open(ROOT / "pyproject.toml", "rb") as f:  # not getini("markers"): it also lists pytest's own
        registered = tomllib.load(f)["tool"]["pytest"]["ini_options"]["markers"]
    tiers = {line.split(":", 1)[0].strip() for line in registered} - NOT_TIERS
    bad = untiered(items, tiers)
    if bad:
        raise pytest.UsageError(f"{len(bad)} test(s) need exactly one tier marker "
                                f"(pytestmark = pytest.mark.<tier>; tiers: {', '.join(sorted(tiers))}):\n  "
                                + "\n  ".join(bad))

    def rank(item: pytest.Item) -> int:
        return max((TIER_ORDER.get(m.name, 0) for m in item.iter_markers()), default=0)

    items.sort(key=rank)  # stable: the order within a tier stays as collected


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never pick up a developer's CRMKIT_* configuration."""
    for name in list(os.environ):
        if name.startswith("CRMKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def sandbox_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProc]:
    """One sandbox tenant process for the session; tests reset it (``support.sandbox.fresh_tenant``)."""
    from crmkit.auth import _msal

    base = tmp_path_factory.mktemp("sandbox")
    sp = SandboxProc(base / "state", base / "sandbox.log", ["--device-code-interval", "1"])
    yield sp
    _msal._close_shared()
    sp.stop()


# The handles on that process, named by what is set up around them (each a support.sandbox.SandboxAdmin).
@pytest.fixture
def sandbox_admin(sandbox_proc: SandboxProc) -> Iterator[SandboxAdmin]:
    """The session's sandbox, reset; nothing of crmkit's configuration points at it (the sandbox alone)."""
    sb = SandboxAdmin(sandbox_proc.url)
    sb.reset()
    yield sb
    sb.close()


@pytest.fixture
def crm_tenant(sandbox_proc: SandboxProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SandboxAdmin]:
    """The session's sandbox, reset, as crmkit's tenant for this test: CRMKIT_SANDBOX_URL, a private
    CRMKIT_HOME, msal's process-wide caches empty (``support.sandbox.fresh_tenant``)."""
    with fresh_tenant(sandbox_proc, monkeypatch, tmp_path) as sb:
        yield sb


@pytest.fixture
def fast_crm_tenant(sandbox_proc: SandboxProc, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                    ) -> Iterator[SandboxAdmin]:
    """:func:`crm_tenant` with Teams' limits raised on both sides (``support.sandbox.fast_tenant``), for tests
    about exactly-once and bookkeeping rather than pacing."""
    with fast_tenant(sandbox_proc, monkeypatch, tmp_path) as sb:
        yield sb


@pytest.fixture
def form_browser() -> Iterator[Browser]:
    """A form-posting HTTP browser for the sandbox's pages (``support.forms``); Chromium is ``browser``."""
    b = Browser()
    yield b
    b.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test of the suites in BOTH_BACKENDS that uses ``backend`` (through ``crm`` or ``db_location``) runs
    twice, ``[duckdb]`` and ``[postgresql]`` (select with -k); ``@pytest.mark.duckdb_only`` keeps one."""
    if "backend" not in metafunc.fixturenames:
        return
    suite = Path(str(metafunc.definition.path)).relative_to(ROOT / "tests").parts[0]
    if suite in BOTH_BACKENDS and not metafunc.definition.get_closest_marker("duckdb_only"):
        metafunc.parametrize("backend", ["duckdb", "postgresql"])


@pytest.fixture
def backend() -> str:
    """Which store backend a test runs on: ``duckdb`` unless pytest_generate_tests parametrises it."""
    return "duckdb"


def _migrated_template(cluster: PgCluster) -> str:
    """A database crmkit has migrated, cloned for each test (9 ms instead of 40 ms of migrations)."""
    from crmkit.store import Store

    return cluster.template_for("crm", lambda url: Store(url).close())


@pytest.fixture
def db_location(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Where a test's CRM lives, for tests that open it more than once: a new DuckDB file's path (not created
    yet), or the URL of a fresh migrated PostgreSQL database (``pg_cluster``), dropped afterwards."""
    if backend == "duckdb":
        yield str(tmp_path / "crm.duckdb")
        return
    cluster = request.getfixturevalue("pg_cluster")
    with fresh_database_url(cluster, _migrated_template(cluster)) as url:
        yield url


@pytest.fixture
def crm(backend: str, request: pytest.FixtureRequest) -> crmkit.CRM:
    """A fresh CRM signed in as the built-in admin: in memory on DuckDB, a fresh database on PostgreSQL."""
    if backend == "duckdb":
        return crmkit.open(":memory:")
    return crmkit.open(request.getfixturevalue("db_location"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A new DuckDB file's path (DuckDB only; ``db_location`` for tests that run on both backends)."""
    return tmp_path / "crm.duckdb"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


def _install_chromium() -> str | None:
    """Install Debian's Chromium when we may; return why not otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "Chromium is missing and this is not root with apt-get; run `apt-get install -y chromium`"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                 ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, timeout=900, check=False)
        if done.returncode == 0 and argv[1] == "install":
            return None
    return f"apt-get install chromium failed: {done.stderr.decode(errors='replace')[-500:]}"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium. Missing and not installable: skip, but fail under CI=true."""
    if not CHROMIUM.exists():
        why = _install_chromium()
        if why and not CHROMIUM.exists():
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"CI=true needs the browser tier to run: {why}")
            pytest.skip(why)
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # launch() makes its own throw-away profile; --user-data-dir in args would be refused.
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh context and page. Nothing a page loads may leave the machine: a request to any host but
    loopback is aborted, and the test fails at teardown with the list (a dashboard showing personal
    data must not tell a CDN who is looking, and offline the asset would be missing)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="de-DE")  # type: ignore[attr-defined]
    external: list[str] = []

    def refuse(route: Any) -> None:
        external.append(route.request.url)
        route.abort("blockedbyclient")

    def refuse_socket(ws: Any) -> None:
        external.append(ws.url)
        ws.close()  # never connected to the server: a routed socket only connects on connect_to_server()

    context.route(lambda url: not is_loopback_url(url), refuse)
    context.route_web_socket(lambda url: not is_loopback_url(url), refuse_socket)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
    if external:
        listed = "\n  ".join(dict.fromkeys(external))
        pytest.fail(f"the page requested hosts other than loopback (aborted):\n  {listed}")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's throwaway PostgreSQL 15 server (support.postgres.PgCluster; one per xdist worker, as roles
    are cluster-wide). Missing and not installable: skip, but fail under CI=true, like ``chromium``."""
    found = find_or_install_postgres()
    if isinstance(found, str):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs the postgres tier to run: {found}")
        pytest.skip(found)
    cluster = PgCluster(found)
    try:  # stopped and removed on any way out of the session, Ctrl-C included
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_database_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh, empty database (a name used nowhere before) on ``pg_cluster``, dropped afterwards
    with whatever is still connected. A clone of a migrated template: ``support.postgres.fresh_database_url(
    pg_cluster, pg_cluster.template_for(key, build))``."""
    with fresh_database_url(pg_cluster) as url:
        yield url
