"""A throwaway PostgreSQL 15 server for the tests: :class:`PgCluster` (initdb in a temp folder, loopback only,
stopped and removed at the end) and :func:`fresh_database` (an empty or template-cloned database on it).

The recipe is the one measured in ../shared/docs/STACK-NOTES-2.md, section P: Debian's binaries; initdb and
pg_ctl refuse root, so as root they run as the ``postgres`` OS user with the cluster folder as working
directory; the folder lives on tmpfs when it has room (cloning from a template slows down on ext4 after a
hundred cycles); durability is switched off (a test cluster never survives a crash anyway). The fixtures built
from it live in tests/conftest.py (``pg_cluster``, ``pg_database_url``).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SHM = Path("/dev/shm")
SHM_MIN_FREE = 512 * 1024 * 1024  # container defaults can be 64 MB: too small for a cluster plus clones
# Test settings: nothing here has to survive a crash; 200 connections leave room for pools and workers.
TEST_SETTINGS = ("fsync = off", "synchronous_commit = off", "full_page_writes = off", "max_connections = 200")
APT_PACKAGES = ["postgresql", "postgresql-contrib"]
_KEY = re.compile(r"[a-z0-9_]{1,40}")  # template keys become part of a database name (63 bytes at most)


class PgClusterError(RuntimeError):
    """The test cluster could not be set up or started; the message ends with the server log's tail."""


def _install_postgres() -> str | None:
    """Install Debian's PostgreSQL when we may (root with apt-get); return why not otherwise."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return (f"PostgreSQL 15 is missing ({PG_BIN}) and this is not root with apt-get; "
                f"run `apt-get install -y {' '.join(APT_PACKAGES)}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", *APT_PACKAGES]
    for argv in (install, ["apt-get", "update"], install):  # a stale package list is the usual failure
        try:
            done = subprocess.run(argv, env=env, capture_output=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv)}` took longer than 900 s"
        if done.returncode == 0 and argv[1] == "install":
            return None
    return f"apt-get install {' '.join(APT_PACKAGES)} failed: {done.stderr.decode(errors='replace')[-500:]}"


def find_or_install_postgres() -> Path | str:
    """PostgreSQL 15's bin folder, installing Debian's ``postgresql`` first when it is missing and we are root;
    a string saying why not when there is none."""
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    why = _install_postgres()
    if (PG_BIN / "initdb").exists():
        return PG_BIN
    return why or f"apt-get installed {' '.join(APT_PACKAGES)} but {PG_BIN}/initdb is missing (not PostgreSQL 15?)"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_parent() -> str | None:
    """tmpfs when it has room, else the normal temp folder (None)."""
    try:
        return str(SHM) if shutil.disk_usage(SHM).free >= SHM_MIN_FREE else None
    except OSError:
        return None


class PgCluster:
    """One PostgreSQL 15 cluster in a temp folder of its own, listening on 127.0.0.1 only (TCP, a free port;
    its Unix socket in that folder). ``start()`` runs initdb and starts the server, ``stop()`` stops it
    (``-m immediate``) and removes the folder. Every login is the superuser ``postgres`` without password
    (``-A trust``: the server is loopback-only and lives as long as the test session).

    ``timings`` holds the seconds ``initdb``, ``start`` and ``stop`` took."""

    def __init__(self, bin_dir: Path = PG_BIN) -> None:
        self.bin_dir = Path(bin_dir)
        self.folder: Path | None = None
        self.port: int = 0
        self.timings: dict[str, float] = {}
        self._admin: psycopg.Connection | None = None
        self._lock = threading.Lock()  # one admin connection; fixtures may run from several threads
        self._names = itertools.count(1)
        self._templates: dict[str, str] = {}

    # --- life cycle -------------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        assert self.folder is not None, "PgCluster not started"
        return self.folder / "data"

    @property
    def log_file(self) -> Path:
        assert self.folder is not None, "PgCluster not started"
        return self.folder / "server.log"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """One of the cluster's binaries, as ``postgres`` when we are root (initdb and pg_ctl refuse root).
        runuser keeps our working directory, which must be one postgres may enter: the cluster folder."""
        cmd = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        # the flags decide, not the caller's environment: no LANG/LC_* (initdb's locale), no PG* (PGDATA, PGPORT)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANG", "LC_", "PG"))}
        return subprocess.run(cmd, cwd=self.folder, env=env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            raise PgClusterError(f"{what} failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}"
                                 f"\n--- server log ---\n{self.log_tail()}")

    def start(self) -> PgCluster:
        """initdb a new cluster and start it; returns self. On failure nothing is left running or on disk."""
        if self.folder is not None:
            raise PgClusterError("this PgCluster is already started")
        if not (self.bin_dir / "initdb").exists():
            raise PgClusterError(f"no initdb in {self.bin_dir}; see find_or_install_postgres()")
        # mkdtemp, not pytest's tmp_path: those folders are root's with mode 0700, so postgres could not enter
        self.folder = Path(tempfile.mkdtemp(prefix="crmkit-pg-", dir=_cluster_parent()))
        atexit.register(self.stop)  # pytest's teardown is the normal way; this covers an aborted session
        try:
            if os.geteuid() == 0:
                shutil.chown(self.folder, "postgres", "postgres")
            t0 = time.perf_counter()
            self._check(self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                                  "--locale=C.UTF-8", "--no-sync", "--no-instructions"), "initdb")
            self.timings["initdb"] = time.perf_counter() - t0
            with open(self.data / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
                conf.write("".join(f"{line}\n" for line in TEST_SETTINGS))
            t0 = time.perf_counter()
            for attempt in range(3):  # the free port may be taken between our probe and the server's bind
                self.port = _free_loopback_port()
                done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", "60",
                                 "-o", f"-k {self.folder} -c listen_addresses=127.0.0.1 -p {self.port}", "start")
                if done.returncode == 0 or "already in use" not in self.log_tail() or attempt == 2:
                    break
            self._check(done, "pg_ctl start")
            self.timings["start"] = time.perf_counter() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``) and remove the cluster folder. Safe to call twice."""
        if self.folder is None:
            return
        t0 = time.perf_counter()
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            done = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
            if done.returncode != 0 and pid_file.exists():  # never leave a server running on a deleted folder
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)  # what -m immediate sends
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        self._templates.clear()
        atexit.unregister(self.stop)
        self.timings["stop"] = time.perf_counter() - t0

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log ('' when there is none yet)."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except (OSError, AssertionError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- addresses --------------------------------------------------------------------------------------
    def url(self, dbname: str) -> str:
        """The URL of database ``dbname`` as the superuser, over TCP on loopback (Unix socket paths are
        limited to 107 bytes; a URL does not depend on where the folder is)."""
        if not self.port:
            raise PgClusterError("PgCluster not started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def admin_url(self) -> str:
        return self.url("postgres")

    # --- databases --------------------------------------------------------------------------------------
    def _execute(self, query: sql.Composable, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """One statement on the session's admin connection (autocommit: CREATE/DROP DATABASE need it)."""
        with self._lock:
            if self._admin is None or self._admin.closed:
                self._admin = psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10)
            with self._admin.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []

    def unique_name(self, prefix: str = "t") -> str:
        """A database name not used before on this cluster."""
        return f"{prefix}_{os.getpid()}_{next(self._names)}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name``: a copy of ``template``, or empty (from template0, which nobody can
        connect to, so the copy never fails with ObjectInUse). Returns the name.

        FILE_COPY rather than PostgreSQL 15's default WAL_LOG: its checkpoint costs next to nothing with
        fsync off on tmpfs, and it measured 7-8 ms against 9-16 ms (empty) and 9 against 12-13 ms (a
        20-table template), also with other databases' buffers dirty."""
        self._execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template or "template0")))
        return name

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` even while connections are open (WITH (FORCE)), a template too; no error when
        it does not exist."""
        rows = self._execute(sql.SQL("SELECT datistemplate FROM pg_database WHERE datname = %s"), (name,))
        if rows and rows[0][0]:
            self._execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
        self._execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self._templates = {k: v for k, v in self._templates.items() if v != name}

    def mark_template(self, name: str) -> None:
        """Make ``name`` a template nobody can connect to, and end the sessions still on it (a pool the build
        left open): CREATE DATABASE ... TEMPLATE fails with ObjectInUse while anyone is connected."""
        ident = sql.Identifier(name)
        self._execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(ident))
        self._execute(sql.SQL("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()"), (name,))

    def template_for(self, key: str, build: Callable[[str], None]) -> str:
        """The template database ``tpl_<key>``: made once per cluster by ``build(url)`` (say, running the
        migrations against that URL), then marked a template; later calls return the name at once. Clone it
        with :func:`fresh_database` (``template=``). When ``build`` raises, the half-built database is
        dropped and the error propagates."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"template key must match {_KEY.pattern}: {key!r}")
        if key in self._templates:
            return self._templates[key]
        name = f"tpl_{key}"
        self.drop_database(name)  # left from an earlier failed build on this cluster
        self.create_database(name)
        try:
            build(self.url(name))
            self.mark_template(name)
        except BaseException:
            self.drop_database(name)
            raise
        self._templates[key] = name
        return name


def fresh_database(cluster: PgCluster, template: str | None = None) -> str:
    """A new database on ``cluster`` with a name used nowhere before: empty, or a clone of ``template`` (a
    name from :meth:`PgCluster.template_for`). Returns its name; its URL is ``cluster.url(name)``; drop it
    with ``cluster.drop_database(name)``."""
    return cluster.create_database(cluster.unique_name(), template)


@contextlib.contextmanager
def fresh_database_url(cluster: PgCluster, template: str | None = None) -> Iterator[str]:
    """:func:`fresh_database` as a context: yields the URL, drops the database afterwards (connections
    still open included)."""
    name = fresh_database(cluster, template)
    try:
        yield cluster.url(name)
    finally:
        from crmkit.store.postgres import close_pools

        close_pools(cluster.url(name))  # crmkit's pool for it first: a dropped database's pool would reconnect
        cluster.drop_database(name)
