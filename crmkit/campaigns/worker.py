"""``crmkit worker``: runs delayed campaign actions (the reference's automation service).

One worker is active at a time. It holds a lease row in the database (holder, pid, host,
heartbeat, expiry) and renews it from a heartbeat thread; another worker takes over only when
the lease has expired, or at once when the holder's process is gone on the same machine. A
standby worker keeps trying, so restarting or starting two is safe. Each round the active worker
claims due runs (and runs abandoned by dead processes) and carries them out through the outbox.

On PostgreSQL every worker is active, on any number of machines: each holds a lease row of its own
(``campaign-worker:<holder>``, the same heartbeat: who is running, where, since when), runs are claimed
with row locks (``FOR UPDATE SKIP LOCKED``, campaigns._runner.claim_runs) and so are outbox rows, under
leases (teams.outbox.claim_open), and Teams' limits are paced for all workers together through the
database (teams.pacing). Besides campaign runs, each round delivers the queued sends of the worker's
CRM user (``crm.teams.send(..., deliver=False)``) through that user's Teams account.

With the system setting ``teams.file_replies`` on, the active worker also files replies in Teams to crmkit's
messages on the records (crmkit.teams.replies) every ``reply_interval`` seconds: its user's own sends, read with
that user's Teams account, and the campaign account's, read with that account. Each reply is filed once, also
when two workers read the same chats (PostgreSQL) or a worker restarts.

>>> run_worker("crm.duckdb", poll_interval=5, once=True)   # doctest: +SKIP
WorkerStats(active=True, runs=3, done=3, ...)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from os import PathLike
from typing import TYPE_CHECKING

from ..teams.outbox import utcnow
from ._runner import Claimer, RunOutcome

if TYPE_CHECKING:
    from ..crm import CRM
    from ..store import Store, Tx
    from ._service import Campaigns

__all__ = ["LEASE_NAME", "Lease", "WorkerStats", "run_worker"]

log = logging.getLogger("crmkit.campaigns.worker")

LEASE_NAME = "campaign-worker"
DEFAULT_LEASE_TTL = 30.0
# A worker's run claims outlive its lease by far: a takeover never starts a run that is being delivered.
RUN_CLAIM_TTL = 600.0


class Lease:
    """The single-active-worker lease (one row of ``campaign_worker_lease``)."""

    def __init__(self, store: Store, claimer: Claimer, *, ttl: float = DEFAULT_LEASE_TTL,
                 name: str = LEASE_NAME) -> None:
        self.store = store
        self.claimer = claimer
        self.ttl = ttl
        self.name = name

    def acquire(self) -> bool:
        """Take the lease if it is free, expired, ours, or its holder died on this machine."""
        c = self.claimer

        def run(tx: Tx) -> bool:
            now = utcnow()
            row = tx.rows("SELECT holder, host, pid, expires_at FROM campaign_worker_lease WHERE name = ?", [self.name])
            if row:
                holder, host, pid, expires = row[0]
                if holder != c.holder and expires > now and not c.gone(host, pid):
                    return False
                tx.execute("DELETE FROM campaign_worker_lease WHERE name = ?", [self.name])
            tx.execute("INSERT INTO campaign_worker_lease VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [self.name, c.holder, c.pid, c.host, now, now, now + timedelta(seconds=self.ttl)])
            return True

        return self.store.write(run)

    def renew(self) -> bool:
        """Extend our lease; False when another worker holds it now."""
        def run(tx: Tx) -> bool:
            now = utcnow()
            done = tx.rows("UPDATE campaign_worker_lease SET heartbeat_at = ?, expires_at = ? WHERE name = ? "
                           "AND holder = ? RETURNING 1",
                           [now, now + timedelta(seconds=self.ttl), self.name, self.claimer.holder])
            return bool(done)

        return self.store.write(run)

    def release(self) -> None:
        self.store.write(lambda tx: tx.execute(
            "DELETE FROM campaign_worker_lease WHERE name = ? AND holder = ?", [self.name, self.claimer.holder])
            and None)

    def holder(self) -> dict[str, object] | None:
        frame = self.store.df("SELECT * FROM campaign_worker_lease WHERE name = ?", [self.name])
        return None if frame.empty else frame.iloc[0].to_dict()


@dataclass
class WorkerStats:
    """What a worker did: whether it was ever active, and its runs by outcome."""

    active: bool = False
    rounds: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    messages: int = 0  # queued messages this worker delivered (PostgreSQL)
    replies: int = 0  # replies from Teams filed on records (one per address and reply)

    @property
    def runs(self) -> int:
        return sum(self.outcomes.values())

    def add(self, outcomes: list[RunOutcome]) -> None:
        self.outcomes.update(o.status for o in outcomes)


def run_worker(
    db_path: str | PathLike[str] | None, *, poll_interval: float = 5.0, once: bool = False,
    stop_event: threading.Event | None = None, user: str | None = None, lease_ttl: float = DEFAULT_LEASE_TTL,
    batch: int = 20, reply_interval: float = 60.0,
) -> WorkerStats:
    """Run due campaign actions until ``stop_event`` is set (or one round with ``once``).

    Args:
        db_path: the crmkit database (None: ``CRMKIT_DB``).
        poll_interval: seconds between rounds (and between tries to become active when standing by).
        once: one round, then return; a worker that cannot get the lease returns at once.
        stop_event: set it to stop after the current run (the CLI sets it on SIGTERM/SIGINT).
        user: the CRM user the worker acts as (default ``CRMKIT_USER``, else ``admin``).
        lease_ttl: seconds a lease lasts without a heartbeat.
        batch: runs claimed per round.
        reply_interval: seconds between reply passes while ``teams.file_replies`` is on (0: none; with ``once``,
            one pass).

    Raises:
        CrmkitError: the database cannot be opened, or the user is unknown.
    """
    import crmkit

    from ._service import Campaigns

    if lease_ttl <= 0 or poll_interval < 0 or reply_interval < 0:
        raise ValueError("lease_ttl must be > 0, poll_interval and reply_interval >= 0")
    stop = stop_event or threading.Event()
    crm = crmkit.open(db_path, user)
    campaigns = Campaigns(crm)
    claimer = Claimer.here("worker", RUN_CLAIM_TTL)
    shared = crm.store.dialect == "postgresql"  # every worker active, each under a lease row of its own
    if shared:
        _forget_dead_workers(crm.store, claimer)
    lease = Lease(crm.store, claimer, ttl=lease_ttl, name=f"{LEASE_NAME}:{claimer.holder}" if shared else LEASE_NAME)
    warned: set[str] = set()
    stats = WorkerStats()
    holding = threading.Event()
    beat_stop = threading.Event()
    next_replies = 0.0  # time.monotonic() of the next reply pass

    def heartbeat() -> None:
        while not beat_stop.wait(lease_ttl / 3):
            if holding.is_set():
                try:
                    if not lease.renew():
                        holding.clear()
                        log.warning("worker %s lost the lease; standing by", claimer.holder)
                except Exception:  # a locked file must not kill the heartbeat; the lease just runs out
                    log.exception("worker %s: heartbeat failed", claimer.holder)

    beat = threading.Thread(target=heartbeat, name="crmkit-worker-heartbeat", daemon=True)
    beat.start()
    log.info("worker %s started on %s as %s", claimer.holder, crm.store.path, crm.user.name)
    try:
        while not stop.is_set():
            stats.rounds += 1
            if not holding.is_set() and lease.acquire():
                holding.set()
                stats.active = True
                log.info("worker %s is the active worker", claimer.holder)
            elif not holding.is_set() and stats.rounds == 1:
                log.info("worker %s stands by: another worker holds the lease", claimer.holder)
            if holding.is_set():
                while not stop.is_set() and holding.is_set():
                    outcomes = campaigns.run_due(claimer, limit=batch)
                    stats.add(outcomes)
                    if len(outcomes) < batch:
                        break
                if shared and not stop.is_set():
                    stats.messages += _deliver_queued(crm, claimer, stop, warned)
                if reply_interval > 0 and not stop.is_set() and time.monotonic() >= next_replies:
                    next_replies = time.monotonic() + reply_interval
                    stats.replies += _file_replies(crm, campaigns, claimer, warned)
            if once:
                break
            stop.wait(poll_interval)
    finally:
        beat_stop.set()
        beat.join(timeout=5)
        if holding.is_set():
            try:
                lease.release()  # a restart takes over at once instead of waiting for the expiry
            except Exception:
                log.exception("worker %s: could not release the lease", claimer.holder)
        campaigns.close()
        crm.teams.close()  # delivery (PostgreSQL) and reply passes
        crm.store.close()
        log.info("worker %s stopped: %d run(s) %s, %d queued message(s)", claimer.holder, stats.runs,
                 dict(stats.outcomes), stats.messages)
    return stats


def _forget_dead_workers(store: Store, claimer: Claimer) -> None:
    """Drop the lease rows of PostgreSQL workers whose lease ran out or whose process is gone on this machine."""
    now = utcnow()
    rows = store.read(lambda tx: tx.rows(
        "SELECT name, host, pid, expires_at FROM campaign_worker_lease WHERE name LIKE ?", [f"{LEASE_NAME}:%"]))
    dead = [name for name, host, pid, expires in rows if expires < now or claimer.gone(host, pid)]
    if dead:
        store.write(lambda tx: tx.execute(
            f"DELETE FROM campaign_worker_lease WHERE name IN ({', '.join('?' * len(dead))})", dead) and None)


def _file_replies(crm: CRM, campaigns: Campaigns, claimer: Claimer, warned: set[str]) -> int:
    """One reply pass for the worker's user's own sends and one for the campaign account's (crmkit.teams.replies),
    while ``teams.file_replies`` is on; the number of contacts filed. Asks Graph nothing when the setting is off."""
    from ..errors import AuthError, CrmkitError
    from ..teams.replies import enabled

    if not enabled(crm):
        return 0
    filed = 0
    for service in (crm.teams, campaigns.teams):
        try:
            frame = service.file_replies()
        except (AuthError, CrmkitError) as exc:  # no account signed in, no right: say so once, keep running
            text = f"{service.sender}: " + " ".join(str(exc).split())
            if text not in warned:
                warned.add(text)
                log.warning("worker %s cannot file replies (%s)", claimer.holder, text)
            continue
        filed += len(frame)
        for conversation, why in frame.attrs.get("failed", {}).items():
            log.warning("worker %s: replies in %s not read, again next pass: %s", claimer.holder, conversation, why)
    return filed


def _deliver_queued(crm: CRM, claimer: Claimer, stop: threading.Event, warned: set[str]) -> int:
    """Deliver what this worker can claim of its user's open sends (PostgreSQL); the number of final outcomes."""
    from ..errors import AuthError
    from ..teams.delivery import deliver_shared
    from ..teams.gateway import GraphChatGateway
    from ..teams.outbox import pending_batches
    from ..teams.results import record_outcome

    batches = pending_batches(crm.store, user=crm.user.name, channels=["teams_manual"])
    if not batches:
        return 0
    try:
        graph = crm.teams._delivery_graph()
        done = deliver_shared(crm.store, graph, GraphChatGateway(graph), batches, holder=claimer.holder,
                              side_effects=record_outcome, until=stop)
    except AuthError as exc:  # no Teams account signed in for this user (yet): say so once, keep running
        text = " ".join(str(exc).split())
        if text not in warned:
            warned.add(text)
            log.warning("worker %s cannot deliver %s's queued sends: %s", claimer.holder, crm.user.name, text)
        return 0
    return sum(d.status != "sending" for d in done)
