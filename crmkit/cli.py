"""The ``crmkit`` command line.

    crmkit [--db PATH] [--user NAME] init
    crmkit [--db PATH] [--user NAME] demo-data --addresses N [--seed S] [--replace]
    crmkit sandbox …      the local Microsoft sandbox tenant
    crmkit demo           the demo: sandbox, demo data, Voila dashboards, JupyterLab
    crmkit [--db PATH] [--user NAME] worker [--interval S] [--once] [--reply-interval S]   the worker
    crmkit migrate-store SOURCE TARGET   copy a CRM into an empty database (DuckDB file <-> PostgreSQL URL)
    crmkit --db postgresql://OWNER@HOST/DB db-roles [--rotate USER --home DIR]   database logins per CRM user
    crmkit hub [--db postgresql://OWNER@HOST/DB] [--port P] [--tenant-id T --client-id C --client-secret-file F]
                                         JupyterHub for a team (as root)

Every crmkit error ends as one line on stderr and exit code 2; so do bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .errors import CrmkitError
from .store import DEFAULT_DB, default_path, is_postgres_url

if TYPE_CHECKING:
    from .store import Store

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _count(text: str) -> int:
    try:
        value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crmkit",
        description="crmkit: send CRM records to colleagues in Microsoft Teams; manage its DuckDB record store.",
        epilog="Environment: CRMKIT_DB (database path), CRMKIT_USER (CRM user name).",
    )
    parser.add_argument("--db", metavar="PATH", default=None,
                        help=f"the DuckDB database file or a postgresql:// URL (default: $CRMKIT_DB, else "
                             f"./{DEFAULT_DB})")
    parser.add_argument("--user", metavar="NAME", default=None,
                        help="the CRM user to act as (default: $CRMKIT_USER, else admin)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create a database or bring its schema up to date",
                       description="Create the database file if it is missing and apply pending schema "
                                   "migrations; print what was done. Safe to run again.")
    p.add_argument("--admin", metavar="UPN", default=None,
                   help="bootstrap the first administrator: the CRM user named after the UPN's local part, with "
                        "the admin role, linked to that directory account of the configured tenant at its first "
                        "verified sign-in")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("demo-data", help="fill the database with realistic demo addresses",
                       description="Add deterministic demo addresses from Germany, Austria and Switzerland "
                                   "(companies with contact persons, private persons), their contact history, "
                                   "and demo users (anna, ben, tom, petra, kai, vera). Needs system.admin.")
    p.add_argument("--addresses", type=_count, required=True, metavar="N",
                   help="how many addresses to add, sub-addresses included (e.g. 1000000)")
    p.add_argument("--seed", type=_count, default=42, metavar="S", help="random seed; same seed, same rows "
                   "(default 42)")
    p.add_argument("--replace", action="store_true",
                   help="delete all addresses and contacts first (default: append after the highest id)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_demo_data)

    # Delegates to crmkit.sandbox, which parses its own options (and --help): see main().
    p = sub.add_parser("sandbox", add_help=False, help="run the local sandbox tenant (Microsoft identity "
                       "platform + Graph + Teams) on loopback; `crmkit sandbox --help` for its options",
                       description="Run the local sandbox tenant.")
    p.set_defaults(func=_cmd_sandbox)

    p = sub.add_parser("demo", help="start the demo: sandbox tenant, demo data, Voila dashboards, JupyterLab",
                       description="Start the crmkit demo: the local sandbox tenant, 1,000 demo addresses "
                                   "(first run only), the Voila dashboards and JupyterLab with the notebooks "
                                   "(token-protected) on 127.0.0.1; prints the URLs. Ctrl+C stops it all.")
    p.add_argument("--addresses", type=_count, default=1000, metavar="N",
                   help="demo addresses to create when the database is empty (default 1000)")
    p.add_argument("--sandbox-port", type=_count, default=8765, metavar="PORT", help="default 8765")
    p.add_argument("--sandbox-https-port", type=_count, default=8766, metavar="PORT",
                   help="the sandbox's https port, for other tools (default 8766)")
    p.add_argument("--voila-port", type=_count, default=8866, metavar="PORT", help="default 8866")
    p.add_argument("--lab-port", type=_count, default=8888, metavar="PORT", help="JupyterLab's port (default 8888)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("worker", help="run the campaign-action worker",
                       description="Run campaign reaction actions when they are due (delayed ones, and immediate "
                                   "ones whose recording process died). On a DuckDB file one worker is active at a "
                                   "time; others stand by and take over when it stops. On PostgreSQL every worker "
                                   "is active and also delivers its user's queued sends, the work and Teams' limits "
                                   "shared through the database. With the setting teams.file_replies on it files "
                                   "replies in Teams to crmkit's messages on the records, every --reply-interval "
                                   "seconds. SIGTERM or Ctrl-C stop it cleanly.")
    # SUPPRESS: given here they override the global --db/--user, left out they leave them alone.
    p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                   help="the database: a DuckDB file or a postgresql:// URL")
    p.add_argument("--user", metavar="NAME", default=argparse.SUPPRESS,
                   help="the CRM user the worker acts as (default: $CRMKIT_USER, else admin)")
    p.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between rounds (default 5)")
    p.add_argument("--once", action="store_true", help="run what is due now, then exit")
    p.add_argument("--reply-interval", type=float, default=60.0, metavar="SECONDS",
                   help="seconds between passes filing replies from Teams, when teams.file_replies is on "
                        "(default 60; 0: never)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("migrate-store", help="copy a CRM into an empty database (DuckDB file <-> PostgreSQL)",
                       description="Copy every table of the crmkit database SOURCE (the logs and an unfinished "
                                   "outbox included) into TARGET, which must hold no data yet; verified per table "
                                   "by row count and checksum, in one transaction of TARGET. Each is a DuckDB "
                                   "file path or a postgresql:// URL; both are brought to this crmkit's schema "
                                   "first. Prints each table on stderr, then a summary.")
    p.add_argument("source", metavar="SOURCE", help="the CRM to copy (left unchanged apart from migrations)")
    p.add_argument("target", metavar="TARGET", help="an empty database: a new DuckDB file, or an empty "
                   "PostgreSQL database owned by the URL's role")
    p.set_defaults(func=_cmd_migrate_store)
    p = sub.add_parser("db-roles", help="PostgreSQL: a database login per CRM user, granted what its rights allow",
                       description="Make the database's roles mirror the CRM users: a login role per active user in "
                                   "the group roles of its rights, table and row grants to match (crmkit.store."
                                   "pg_roles). Run as the database owner; safe to run again (after an upgrade too).")
    p.add_argument("--rotate", metavar="USER", action="append", default=[],
                   help="give USER's login a new random password (repeatable); needs --home")
    p.add_argument("--home", metavar="DIR", type=Path, default=None,
                   help="that person's CRMKIT_HOME: the password goes to DIR/pgpass (0600), never to the screen")
    p.set_defaults(func=_cmd_db_roles)

    p = sub.add_parser("hub", help="run JupyterHub for a team: sign-in at the tenant, a server per person as "
                                   "their own OS user (needs root)",
                       description="Start JupyterHub with its proxy on 127.0.0.1: people sign in at the sandbox "
                                   "tenant (started over https; the hub registered there as a confidential web "
                                   "client), or at Microsoft Entra ID with --tenant-id, --client-id and "
                                   "--client-secret-file; each person's JupyterLab + Voila server runs as their "
                                   "own OS user crmkit-NAME, created on first sign-in. Prints the hub's URL; "
                                   "Ctrl+C or SIGTERM stops the hub, the proxy, the servers and the sandbox.")
    p.add_argument("--state", metavar="DIR", type=Path, default=None,
                   help="the hub's state folder (0700: secrets, sqlite, config, logs; default $CRMKIT_HOME/hub)")
    p.add_argument("--port", type=_count, default=8000, metavar="PORT", help="the hub's port (default 8000; 0: a "
                   "free one)")
    p.add_argument("--home-base", metavar="DIR", type=Path, default=Path("/home"),
                   help="where the people's homes are created (default /home)")
    p.add_argument("--allow", metavar="NAME", action="append", default=[],
                   help="only these hub users (repeatable; default: everybody the tenant signs in)")
    p.add_argument("--tenant-id", metavar="ID", default=None, help="Microsoft Entra ID: the directory (tenant) id")
    p.add_argument("--client-id", metavar="ID", default=None, help="Entra: the hub's app registration (client) id")
    p.add_argument("--client-secret-file", metavar="FILE", type=Path, default=None,
                   help="Entra: a 0600 file holding the hub's client secret (never on the command line)")
    p.add_argument("--db", metavar="URL", default=argparse.SUPPRESS,
                   help="the team's CRM: the owner's postgresql:// URL, without password (root's libpq passfile "
                        "holds it); the hub hands each signed-in person only their own CRM user's login")
    p.set_defaults(func=_cmd_hub)
    return parser


# -- commands ----------------------------------------------------------------------------------------

def _cmd_init(args: argparse.Namespace) -> int:
    from .migrations import MIGRATIONS
    from .store import Store

    path = args.db or default_path()
    existed = Path(path).exists() if not is_postgres_url(path) else None
    store = Store(path)  # migrates; store.applied_migrations: what this run applied
    try:
        after = {r[0] for r in store.read(lambda tx: tx.rows("SELECT id FROM _crmkit_migrations"))}
        admin = _bootstrap_admin(store, args.admin) if getattr(args, "admin", None) else None
        users = store.one("SELECT count(*) FROM users")
        addresses = store.one("SELECT count(*) FROM addresses")
    finally:
        store.close()
    applied = set(store.applied_migrations)
    if existed is None:  # a PostgreSQL database exists before crmkit runs: new to crmkit when it had no schema
        existed = 1 not in applied
    new = [f"{mid} ({name})" for mid, name, _ in MIGRATIONS if mid in applied]
    if not existed:
        made = "Created" if store.dialect == "duckdb" else "Set up crmkit's schema in"
        print(f"{made} {store.path}; applied schema migration(s) {', '.join(new)}.")
    elif new:
        print(f"Updated {store.path}; applied schema migration(s) {', '.join(new)}.")
    else:
        print(f"{store.path} is up to date (schema {max(after)}); nothing to do.")
    if admin is not None:
        print(admin)
    # The demo-data hint only for a CRM without addresses: it would add 1,000 more to a CRM in use.
    hint = f" Next: crmkit --db {_shell(store.path)} demo-data --addresses 1000" if not addresses else ""
    print(f"{users} user(s), {addresses:,} address(es).{hint}")
    return EXIT_OK


def _bootstrap_admin(store: Store, upn: str) -> str:
    """``init --admin UPN``: the first administrator and its pending link (crmkit.directory_links); what was done."""
    import json

    from .config import TeamsConfig
    from .directory_links import bootstrap_admin

    class _Settings:  # TeamsConfig.resolve reads the tenant from the stored system setting, like a session
        @staticmethod
        def setting(name: str) -> object:
            raw = store.one("SELECT value FROM system_settings WHERE key = ?", [name])
            return None if raw is None else json.loads(raw)

    tenant = TeamsConfig.resolve(_Settings()).tenant_id  # type: ignore[arg-type]
    done = bootstrap_admin(store, upn, tenant)
    if not done.linked:
        return f"Administrator {done.user} is already set up for {upn} (tenant {tenant}); nothing to do."
    made = "Created the CRM user" if done.created_user else "Made the existing CRM user"
    return (f"{made} {done.user} an administrator, linked to {upn} in tenant {tenant} at its first verified "
            "sign-in.")


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from . import demo_data
    from .crm import open as open_crm

    crm = open_crm(args.db, args.user)
    bar = None if args.quiet else ProgressBar(sys.stderr, "addresses")
    try:
        summary = demo_data.generate(crm, args.addresses, seed=args.seed, replace=args.replace, progress=bar)
    finally:
        if bar is not None:
            bar.close()
        crm.store.close()
    ids = f" (ids {summary['first_id']:,}–{summary['last_id']:,})" if summary["addresses"] else ""
    print(
        f"Added {summary['addresses']:,} addresses{ids}: {summary['companies']:,} companies, "
        f"{summary['sub_addresses']:,} of their contact persons as sub-addresses, "
        f"{summary['persons'] - summary['sub_addresses']:,} private persons; "
        f"{summary['contacts']:,} contacts."
    )
    if summary["users_added"]:
        print(f"Demo users added: {', '.join(summary['users_added'])}.")
    print(f"Done in {summary['seconds']:.1f} s.")
    return EXIT_OK


def _cmd_sandbox(args: argparse.Namespace) -> int:
    """Owned by the sandbox engineer: everything after ``sandbox`` goes to ``crmkit.sandbox``."""
    try:
        from .sandbox.__main__ import main as sandbox_main
    except ImportError as exc:
        print(f"crmkit: error: the sandbox tenant is not available in this install ({exc}).", file=sys.stderr)
        return EXIT_ERROR
    if args.db:
        os.environ["CRMKIT_DB"] = args.db
    if args.user:
        os.environ["CRMKIT_USER"] = args.user
    return int(sandbox_main(args.rest) or 0)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoSettings, run_demo

    return run_demo(DemoSettings(db=args.db, addresses=args.addresses, sandbox_port=args.sandbox_port,
                                 sandbox_https_port=args.sandbox_https_port, voila_port=args.voila_port,
                                 lab_port=args.lab_port))


def _cmd_worker(args: argparse.Namespace) -> int:
    """The campaign-action worker (crmkit.campaigns.worker); prints one line per state change."""
    import logging
    import signal
    import threading

    from .campaigns.worker import run_worker

    if args.interval < 0 or args.reply_interval < 0:
        print("crmkit: error: --interval and --reply-interval must be 0 or more.", file=sys.stderr)
        return EXIT_ERROR
    path = args.db or default_path()
    # A worker never creates a database of its own (a PostgreSQL URL: Store says if the server refuses).
    if path != ":memory:" and not is_postgres_url(path) and not Path(path).exists():
        print(f"crmkit: error: no database at {path}; give --db PATH of the CRM's database "
              "(or create one with `crmkit init`).", file=sys.stderr)
        return EXIT_ERROR
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"crmkit worker: {signal.Signals(signum).name}, stopping after the current run.", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    stats = run_worker(path, poll_interval=args.interval, once=args.once, stop_event=stop, user=args.user,
                       reply_interval=args.reply_interval)
    outcomes = ", ".join(f"{n} {status}" for status, n in sorted(stats.outcomes.items())) or "none"
    role = "active" if stats.active else "standby (another worker held the lease)"
    queued = f"; queued messages delivered: {stats.messages}" if stats.messages else ""
    replies = f"; replies filed: {stats.replies}" if stats.replies else ""
    print(f"crmkit worker: stopped; was {role}; runs: {outcomes}{queued}{replies}.")
    return EXIT_OK


def _cmd_migrate_store(args: argparse.Namespace) -> int:
    """crmkit.store.copy.migrate_store with a line per table on stderr; messages show URLs without password."""
    from .store.copy import migrate_store

    def progress(table: str, done: int, total: int) -> None:
        if done >= total:  # one line per table, when it is copied
            print(f"  {table:<28} {done:>12,} rows", file=sys.stderr, flush=True)

    report = migrate_store(args.source, args.target, progress=progress)
    print(f"Copied {report.source} to {report.target}: {len(report.tables)} tables, {report.rows:,} rows, "
          f"{'verified' if report.verified else 'NOT verified'} (row counts and checksums), "
          f"in {report.seconds:.1f} s.")
    return EXIT_OK


# -- helpers -----------------------------------------------------------------------------------------

class ProgressBar:
    """A text progress bar on a stream: redrawn in place on a terminal, one line per update otherwise."""

    def __init__(self, stream: TextIO, unit: str, width: int = 30) -> None:
        self.stream = stream
        self.unit = unit
        self.width = width
        self.started = time.perf_counter()
        self.tty = stream.isatty()
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        share = done / total if total else 1.0
        filled = round(share * self.width)
        line = (f"[{'#' * filled}{'.' * (self.width - filled)}] {share:4.0%} {done:,}/{total:,} {self.unit}, "
                f"{time.perf_counter() - self.started:.1f} s")
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _cmd_db_roles(args: argparse.Namespace) -> int:
    from .store import Store
    from .store.pg_roles import rotate_password, sync_database_roles

    if args.rotate and args.home is None:  # a password is never printed: it needs a file to go to
        print("crmkit: error: --rotate needs --home DIR (the person's CRMKIT_HOME) for the password file.",
              file=sys.stderr)
        return EXIT_ERROR
    store = Store(args.db or default_path())
    try:
        report = sync_database_roles(store)
        print(f"{store.path}: {len(report.users)} login role(s); created {len(report.created)}, dropped "
              f"{len(report.dropped)}, {len(report.granted)} membership(s) granted, {len(report.revoked)} revoked.")
        for user, role in sorted(report.users.items()):
            print(f"  {user}: {role}")
        if report.unclassified:
            print(f"crmkit: warning: no crmkit role may use the table(s) {', '.join(report.unclassified)} "
                  "(unknown to this crmkit).", file=sys.stderr)
        for user in args.rotate:
            login = rotate_password(store, user, home=args.home)
            print(f"New password for {user} in {login.passfile}; connect with {login.url}")
    finally:
        store.close()
    return EXIT_OK


def _shell(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _cmd_hub(args: argparse.Namespace) -> int:
    from .config import crmkit_home
    from .hub import HubSettings, run_hub

    state = args.state or crmkit_home() / "hub"
    return run_hub(HubSettings(state=state, port=args.port, home_base=args.home_base, allowed_users=tuple(args.allow),
                               tenant_id=args.tenant_id, client_id=args.client_id,
                               client_secret_file=args.client_secret_file, db=args.db))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 error or bad arguments, 130 interrupted)."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "sandbox":
        args.rest = rest  # the sandbox's own options, --help included
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CrmkitError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message looks like
        print(f"crmkit: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("crmkit: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
