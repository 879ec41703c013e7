"""Senders sharing one queued send: the setup tests/resilience/test_pg_workers.py and bench/workers_pg.py share.

A CRM whose admin queued one Teams send for the workers (:func:`queue_send`), ``crmkit worker`` processes (or any
other sender's command line) started and stopped (:func:`start`, :func:`stop`), the outbox's rows by status
(:func:`outbox_counts`), the most posts the sandbox stored in any sliding second (:func:`most_per_second`;
a stored message's id is the tenant clock's epoch millisecond), and the sandbox's CPU priority (:func:`renice`).

The sandbox stands for Microsoft's servers, which do not share the workers' cores. At equal priority on 2 cores
its event loop waited up to ~120 ms for a CPU and then stored the requests that had queued meanwhile at once,
so their stamps bunched past 20 in a sliding second though the workers had sent them paced (bench/workers_pg.py
measured it). Both the test and the bench therefore run it at a higher priority (:data:`SANDBOX_NICE`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import crmkit
from crmkit.store import Store

from .sandbox import ROOT, SandboxAdmin, colleagues, sign_in

__all__ = ["SANDBOX_NICE", "most_per_second", "outbox_counts", "queue_send", "renice", "start", "stop",
           "worker_argv"]

SANDBOX_NICE = -5  # the sandbox's threads while workers share its cores


def renice(pid: int, nice: int) -> bool:
    """Every thread of ``pid`` at ``nice`` (Linux's nice is per thread; threads made later inherit the main
    thread's). False where that is not allowed (not root): the run then goes at equal priority."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    except (PermissionError, FileNotFoundError):
        return False
    return True


def queue_send(db: str, admin: SandboxAdmin, *, records: int, people: int, subject: str) -> crmkit.CRM:
    """The CRM at ``db`` (migrated, signed in as its admin) with Teams on, ``records`` new addresses, the admin
    signed in to the sandbox, and one send of them to ``people`` colleagues (one-on-one chats) queued for workers
    (``deliver=False``): ``records × people`` pending outbox rows. Its Teams client is closed; the CRM is open."""
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation

    crm = crmkit.open(db)
    activation.enable(crm)
    ids = [crm.add_address(company=f"Firma {i:03d} GmbH", city="Berlin", country="DE") for i in range(records)]
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    crm.teams.send(ids, to=colleagues(admin, people), subject=subject, deliver=False)
    crm.teams.close()
    return crm


def outbox_counts(store: Store) -> dict[str, int]:
    """The outbox's rows by status."""
    return {s: int(n) for s, n in store.read(lambda tx: tx.rows("SELECT status, count(*) FROM outbox GROUP BY status"))}


def worker_argv(db: str, *, interval: float = 0.5) -> list[str]:
    """The command line of one ``crmkit worker`` on ``db``."""
    return [sys.executable, "-m", "crmkit.cli", "--db", db, "worker", "--interval", str(interval)]


def start(argvs: Sequence[Sequence[str]], log: Path, *, capture: bool = False) -> list[subprocess.Popen[str]]:
    """One process per command line, in the repository, this environment, stderr appended to ``log``; their
    stdout kept for :func:`stop` when ``capture`` (else dropped)."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    with log.open("a") as err:
        return [subprocess.Popen(list(argv), cwd=ROOT, text=True, stdout=out, stderr=err, env=dict(os.environ))
                for argv in argvs]


def stop(procs: Sequence[subprocess.Popen[str]], *, timeout: float = 60) -> list[str]:
    """SIGTERM to those still running, then wait for each (killed after ``timeout`` s); their stdout ('' if
    not captured), in order. A process already gone (SIGKILLed by a test) is reaped too."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate(timeout=10)
        outs.append(out or "")
    return outs


def most_per_second(stamps_ms: Sequence[int], window_ms: int = 1000) -> int:
    """The most stamps in any sliding window [t, t + ``window_ms``) (one second unless told)."""
    stamps, most, lo = sorted(stamps_ms), 0, 0
    for hi, t in enumerate(stamps):
        while stamps[lo] <= t - window_ms:
            lo += 1
        most = max(most, hi - lo + 1)
    return most
