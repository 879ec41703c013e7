"""20 dashboard sessions at once while 4 workers deliver a Teams send: PostgreSQL, with DuckDB beside it.

Setup, per database (PostgreSQL first, then DuckDB, one after the other on the same machine): ``ctx.addresses``
demo addresses (PostgreSQL: a clone of bench.store_pg's demo database, or ``crmkit demo-data`` into the bench
run's throwaway cluster, bench/common_pg.py, vacuumed as autovacuum leaves a database that has lived a while;
DuckDB: a copy of bench.store's file, or the CLI), Teams switched on, 20 CRM users (``sitzung01`` … ``sitzung20``,
viewers and sales people by turns), the sandbox tenant in a subprocess with Teams' real limits (20 posts/s per
tenant, 1/s per chat), admin signed in to it by the device-code flow, and one queued send of 50 addresses to 40
people (2,000 messages, ``deliver=False``).

Then 20 session processes start, each ``crmkit.open(db, <its user>)`` and the addresses dashboard's model
(crmkit.widgets.record_table_model.RecordTableModel: what the dashboard binds its widgets to, one
``address_page`` per interaction), and wait. 4 ``crmkit worker`` processes start (on PostgreSQL each claims
outbox rows and delivers them, the pacing shared through the database; on DuckDB one worker is active and
the others stand by, and DuckDB workers do not deliver queued sends, so there the send is delivered by one
more process, ``crm.teams.resume()``: DuckDB's single sender). Once the first message is out, the sessions
go for ``DURATION_S``: each repeats a random interaction (seeded per user), then thinks 0.3–1.2 s — next
page, go to a random page, last page, a search, a city filter, filters cleared, a new page size (stored as
the user's setting ``page_size``, then the page at that size), the UI language switched (the user's setting
``language``). Every interaction is timed in its process; an error is a typed error the model caught
(``model.error``) or an exception.

Figures: p95 of every page interaction (goal ≤ 200 ms on PostgreSQL) and the error count (goal 0), on
PostgreSQL and DuckDB; in the notes p50/p95 per interaction, the settings writes, the messages the workers
delivered during the window, the sandbox's 429s and the machine's load.

Without PostgreSQL 15 on the machine (``/usr/lib/postgresql/15/bin``) the module reports nothing.
Run alone: ``python -m bench dashboard_sessions_pg --addresses 20000 --out /tmp/bench``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .common import Context, Result, p50, p95, say
from .common_pg import ROOT, SERVER, clean_env, cluster, duckdb_demo_file, have_postgres, pg_demo_database

SESSIONS = 20
WORKERS = 4
DURATION_S = 60.0
RECORDS = 50
PEOPLE = 40  # one-on-one chats: at 1/s each, 40 chats let the tenant's 20/s be the limit
SUBJECT = "Sitzungen unter Last"
THINK_S = (0.3, 1.2)
PAGE_GOAL_MS = 200.0
SEARCHES = ("Müller", "Schmidt", "Weber", "Hamburg", "muel", "Fischer GmbH", "Bäckerei")
# interaction: weight
WEIGHTS = {"next page": 30, "go to a page": 10, "last page": 5, "search": 15, "city filter": 15,
           "filters cleared": 10, "page size (setting)": 10, "language (setting)": 5}
SETTINGS_KINDS = ("page size: write the setting", "language (setting)")


# --- one session (a subprocess: python -m bench.dashboard_sessions_pg --session …) --------------------------

def _session(db: str, user: str, seed: int, go_file: Path, out_file: Path) -> None:
    import crmkit
    from crmkit.widgets.record_table_model import RecordTableModel

    t = time.perf_counter()
    crm = crmkit.open(db, user)
    model = RecordTableModel(crm)
    opened_ms = (time.perf_counter() - t) * 1000
    start_error = None if model.error is None else _text(model.error)
    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.05)
    end = float(json.loads(go_file.read_text())["end"])
    rng = random.Random(seed)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    samples: list[tuple[str, float, str | None]] = []

    def timed(kind: str, act: Any) -> None:
        model.error = None
        started = time.perf_counter()
        error = None
        try:
            act()
            if model.error is not None:
                error = _text(model.error)
        except Exception as exc:  # counted, never fatal: the next interaction goes on
            error = _text(exc)
        samples.append((kind, round((time.perf_counter() - started) * 1000, 2), error))

    while time.time() < end:
        kind = rng.choices(kinds, weights)[0]
        if kind == "next page":
            timed(kind, model.next_page if model.has_next else model.first_page)
        elif kind == "go to a page":
            timed(kind, lambda: model.go_to_page(rng.randint(1, model.pages)))
        elif kind == "last page":
            timed(kind, model.last_page if model.pages > 1 else model.refresh)
        elif kind == "search":
            timed(kind, lambda: model.set_filters(search=rng.choice(SEARCHES), city="", country=""))
        elif kind == "city filter":
            city = rng.choice(model.cities[:40] or [""])
            timed(kind, lambda c=city: model.set_filters(city=c, search="", country=""))
        elif kind == "filters cleared":
            timed(kind, lambda: model.set_filters(search="", city="", country=""))
        elif kind == "page size (setting)":
            size = rng.choice([s for s in (25, 50, 100) if s != model.page_size])
            timed("page size: write the setting", lambda n=size: crm.set_user_setting("page_size", n))
            timed("page size: the page", lambda n=size: setattr(model, "page_size", n))
        else:
            timed(kind, lambda: model.set_language("en" if model.language == "de" else "de"))
        time.sleep(rng.uniform(*THINK_S))
    crm.store.close()
    out_file.write_text(json.dumps({"user": user, "opened_ms": opened_ms, "start_error": start_error,
                                    "samples": samples}), encoding="utf-8")


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _deliver(db: str) -> None:
    """DuckDB's sender: deliver the admin's queued sends in this one process."""
    import crmkit

    crm = crmkit.open(db, "admin")
    crm.teams.resume()
    crm.teams.close()
    crm.store.close()


# --- the bench --------------------------------------------------------------------------------------------

def run(ctx: Context) -> list[Result]:
    if not have_postgres():
        say("dashboard_sessions_pg: no PostgreSQL 15 on this machine; skipped")
        return []
    from support.sandbox import SandboxProc

    work = ctx.workdir / "dashboard_sessions_pg"
    work.mkdir(parents=True)
    sandbox = SandboxProc(work / "sandbox-state", work / "sandbox.log", ["--device-code-interval", "1"])
    from crmkit.store.postgres import close_pools

    pg = cluster(ctx)
    try:
        url = pg_demo_database(ctx, pg, ctx.addresses, "sessions")
        figures = {"postgresql": _scenario(ctx, work / "postgresql", url, sandbox)}
        close_pools(url)
        pg.drop_database(url.rsplit("/", 1)[1])
        duck_db, _ = duckdb_demo_file(ctx, work, ctx.addresses)
        figures["duckdb"] = _scenario(ctx, work / "duckdb", str(duck_db), sandbox)
    finally:
        close_pools()
        sandbox.stop()
        # the last module on the run's cluster: give its tmpfs back to the benches after it
        ctx.shared.pop("pg_demo_template", None)
        ctx.shared.pop("pg_cluster", None)
        pg.stop()
    return _results(ctx, figures)


def _scenario(ctx: Context, work: Path, db: str, sandbox: Any) -> dict[str, Any]:
    """Users, the queued send, the sessions and the workers on ``db``; what they measured."""
    from support.sandbox import SandboxAdmin, colleagues, forget_msal, sign_in

    import crmkit
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation

    backend = "postgresql" if db.startswith("postgresql://") else "duckdb"
    sessions = SESSIONS if not ctx.quick else 6
    duration = DURATION_S if not ctx.quick else 10.0
    records = RECORDS if not ctx.quick else 10
    work.mkdir(parents=True)
    admin = SandboxAdmin(sandbox.url)
    admin.reset()
    env = {"CRMKIT_SANDBOX_URL": sandbox.url, "CRMKIT_HOME": str(work / "home")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the sign-in's token cache goes where the workers will find it
    forget_msal()
    try:
        crm = crmkit.open(db, "admin")
        activation.enable(crm)
        users = [f"sitzung{i:02d}" for i in range(1, sessions + 1)]
        for i, name in enumerate(users):
            crm.add_user(name, f"Sitzung {i + 1}", roles=["viewer" if i % 2 else "sales"])
        sign_in(crm, SANDBOX_DEFAULT_UPN)
        people = colleagues(admin, PEOPLE)
        ids = [int(i) for i in crm.address_page(0, records, columns=["id"])[0]["id"]]
        t = time.perf_counter()
        crm.teams.send(ids, to=people, subject=SUBJECT, deliver=False)
        say(f"dashboard_sessions_pg[{backend}]: {len(ids) * len(people):,} messages queued in "
            f"{time.perf_counter() - t:.1f} s")
        crm.teams.close()
        crm.store.close()
    finally:
        forget_msal()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    child_env = clean_env(**env)
    go = work / "go.json"
    procs: list[subprocess.Popen[str]] = []
    workers: list[subprocess.Popen[str]] = []
    logs = (work / "processes.log").open("a")
    try:
        t = time.perf_counter()
        for i, user in enumerate(users):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "bench.dashboard_sessions_pg", "--session", db, user, str(1000 + i),
                 str(go), str(work / f"{user}.json")], cwd=ROOT, env=child_env, text=True,
                stdout=subprocess.PIPE, stderr=logs))
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a session did not start; see {work / 'processes.log'}")
        say(f"dashboard_sessions_pg[{backend}]: {sessions} sessions open in {time.perf_counter() - t:.1f} s")
        for _ in range(WORKERS):
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "crmkit.cli", "--db", db, "--user", "admin", "worker", "--interval", "0.5"],
                cwd=ROOT, env=child_env, text=True, stdout=logs, stderr=logs))
        if backend == "duckdb":  # DuckDB's workers do not deliver queued sends: its single sender does
            workers.append(subprocess.Popen([sys.executable, "-m", "bench.dashboard_sessions_pg", "--deliver", db],
                                            cwd=ROOT, env=child_env, text=True, stdout=logs, stderr=logs))
        watcher = crmkit.open(db, "admin")
        sent_at_go, waited = _wait_sent(watcher, 1, timeout=180)
        say(f"dashboard_sessions_pg[{backend}]: first message out after {waited:.1f} s; the sessions go")
        admin.admin.delete("/_sandbox/counters")
        started = time.time()
        go.write_text(json.dumps({"end": started + duration}), encoding="utf-8")
        load_during: list[float] = []
        while time.time() < started + duration:
            time.sleep(2.0)
            load_during.append(os.getloadavg()[0])
        sent_at_end = _sent(watcher)
        window = time.time() - started
        counters = admin.get("counters")
        exited = [p.returncode for p in workers if p.poll() is not None]  # a sender that died in the window
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in [*procs, *workers]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*procs, *workers]:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
            if p.stdout is not None:
                p.stdout.close()
        logs.close()
    watcher.store.close()
    out = [json.loads((work / f"{u}.json").read_text()) for u in users]
    posts = sum(n for k, n in counters.items() if k.startswith("POST /v1.0") and "/messages" in k
                and k.split()[-1].isdigit() and k.split()[-1].startswith("2"))
    throttled = sum(n for k, n in counters.items() if k.startswith("POST /v1.0") and k.split()[-1] == "429")
    return {"sessions": out, "duration": window, "delivered": sent_at_end - sent_at_go, "posts": posts,
            "throttled": throttled, "load": load_during, "backend": backend, "n_sessions": sessions,
            "queued": len(ids) * len(people), "exited": exited}


def _sent(crm: Any) -> int:
    return int(crm.store.one("SELECT count(*) FROM outbox WHERE status = 'sent'"))


def _wait_sent(crm: Any, at_least: int, timeout: float) -> tuple[int, float]:
    """Wait until ``at_least`` messages are delivered (delivery under way), at most ``timeout`` s (then the
    sessions go anyway and the note shows how few went out); the count then and the seconds waited."""
    started = time.monotonic()
    while True:
        n = _sent(crm)
        if n >= at_least or time.monotonic() - started > timeout:
            return n, time.monotonic() - started
        time.sleep(0.25)


def _results(ctx: Context, figures: dict[str, dict[str, Any]]) -> list[Result]:
    out: list[Result] = []
    summary: dict[str, tuple[float, int]] = {}
    for backend in ("postgresql", "duckdb"):
        f = figures[backend]
        by_kind: defaultdict[str, list[float]] = defaultdict(list)
        errors: Counter[str] = Counter()
        for s in f["sessions"]:
            if s["start_error"]:
                errors[s["start_error"]] += 1
            for kind, ms, error in s["samples"]:
                by_kind[kind].append(ms)
                if error:
                    errors[error] += 1
        pages = [ms for kind, values in by_kind.items() if kind not in SETTINGS_KINDS for ms in values]
        writes = [ms for kind in SETTINGS_KINDS for ms in by_kind.get(kind, [])]
        n_errors = sum(errors.values())
        page95 = p95(pages) if pages else float("nan")
        summary[backend] = (page95, n_errors)
        name = "PostgreSQL" if backend == "postgresql" else "DuckDB"
        loads = f["load"] or [os.getloadavg()[0]]
        sender = (f"{WORKERS} `crmkit worker` processes delivering" if backend == "postgresql" else
                  f"{WORKERS} `crmkit worker` processes (one active, three standby; DuckDB workers do not deliver "
                  "queued sends) and one process delivering by `crm.teams.resume()`")
        setup = (f"{f['n_sessions']} session processes (RecordTableModel over {ctx.addresses:,} addresses, each its "
                 f"own CRM user) for {f['duration']:.0f} s, thinking {THINK_S[0]}–{THINK_S[1]} s between "
                 f"interactions, while {sender} a queued send of {f['queued']:,} messages to the sandbox "
                 f"(Teams' limits 20/s per tenant, 1/s per chat): {f['delivered']:,} delivered in the window "
                 f"({f['delivered'] / f['duration']:.1f} msg/s), the sandbox counted {f['posts']:,} accepted posts "
                 f"and {f['throttled']} × 429"
                 + (f"; sender processes that exited during the window (exit codes): {f['exited']}"
                    if f["exited"] else "")
                 + f"; 1-minute load average {min(loads):.1f}–{max(loads):.1f} on "
                 f"{os.cpu_count()} CPUs")
        kinds = "; ".join(f"{k} p50 {p50(v):.0f} / p95 {p95(v):.0f} ms (n={len(v)})"
                          for k, v in sorted(by_kind.items()))
        err_text = ("; errors: " + "; ".join(f"{n} × {e}" for e, n in errors.most_common(5))) if errors else ""
        server = f"{SERVER}; " if backend == "postgresql" else ""
        goal = backend == "postgresql"
        out.append(Result(
            f"{name}: {f['n_sessions']} dashboard sessions while {WORKERS} workers send: page interactions, p95",
            round(page95, 1), "ms", f"≤ {PAGE_GOAL_MS:.0f} ms (issue 15)" if goal else "",
            (page95 <= PAGE_GOAL_MS) if goal else None,
            note=f"{server}{setup}. {len(pages):,} page interactions, p50 {p50(pages):.0f} ms, max {max(pages):.0f} "
                 f"ms; settings writes p50 {p50(writes) if writes else float('nan'):.0f} / p95 "
                 f"{p95(writes) if writes else float('nan'):.0f} ms (n={len(writes)}); per interaction: {kinds}",
            samples=sorted(round(v, 1) for v in pages)))
        out.append(Result(
            f"{name}: {f['n_sessions']} dashboard sessions while {WORKERS} workers send: errors", float(n_errors),
            "errors", "0 (issue 15)" if goal else "", (n_errors == 0) if goal else None,
            note=f"of {len(pages) + len(writes):,} interactions and {f['n_sessions']} session starts{err_text}"))
    dk95, dk_err = summary["duckdb"]
    out[0].note += f" DuckDB beside it: p95 {dk95:.0f} ms, {dk_err} errors."
    out[1].note += f"; DuckDB beside it: {dk_err} errors"
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--session":
        _session(sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]), Path(sys.argv[6]))
    elif sys.argv[1] == "--deliver":
        _deliver(sys.argv[2])
    else:
        sys.exit("usage: python -m bench.dashboard_sessions_pg --session DB USER SEED GO_FILE OUT_FILE | "
                 "--deliver DB")
