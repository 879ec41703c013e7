"""Carrying out one action run: plan → outbox (same transaction as the run row) → deliver → outcome.

A run is worked on by one process at a time, the one named in ``claimed_by``. A claim ends when
the run is finished, when it expires, or (on the same machine) when its process is gone; only
then may another process take the run over. Once a run row carries an outbox batch id, it is
never planned again: taking over means delivering that batch, and the outbox reconciles whatever
the previous process may already have posted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx

from .. import privacy
from ..errors import AuthError, CrmkitError, GraphError, IntegrationDisabled
from ..i18n import catalog, relocalize, t
from ..processes import HOST, process_gone
from ..teams.activation import switched_off
from ..teams.options import CAMPAIGN_OPTIONS, SendOptions, campaign_columns
from ..teams.outbox import utcnow
from ..teams.staging import enqueue_plan
from ._template import render_message, render_subject, template_fields

if TYPE_CHECKING:
    from ..crm import CRM
    from ..store import Store, Tx
    from ..teams.planning import SendPlan
    from ..teams.send import TeamsService

__all__ = ["Claimer", "RunOutcome", "claim_due", "claim_runs", "execute_run", "retry_delay", "run_error_text"]

log = logging.getLogger("crmkit.campaigns")

FINAL = ("done", "failed", "skipped")
RETRY_CAP_S = 3600.0


def retry_delay(attempts: int) -> float:
    """Seconds until the next attempt: doubling from ``CRMKIT_CAMPAIGN_RETRY_S`` (default 60), capped at 1 h."""
    base = float(os.environ.get("CRMKIT_CAMPAIGN_RETRY_S") or 60)
    return float(min(base * 2 ** max(attempts - 1, 0), RETRY_CAP_S))


@dataclass(frozen=True)
class Claimer:
    """Who works on runs: a process (host + pid) with a unique holder id, and how long its claims last."""

    holder: str
    pid: int
    host: str
    ttl: float

    @classmethod
    def here(cls, role: str, ttl: float) -> Claimer:
        host, pid = HOST, os.getpid()
        return cls(f"{role}:{host}:{pid}:{uuid.uuid4().hex[:8]}", pid, host, ttl)

    def gone(self, host: str | None, pid: int | None) -> bool:
        """Whether another claim's process is known dead (only provable on this machine)."""
        return pid != self.pid and process_gone(host, pid)


@dataclass(frozen=True)
class RunOutcome:
    """What happened to a run in this attempt (``status`` is its new state)."""

    run_id: int
    status: str
    error: str | None = None


def claim_columns(claimer: Claimer) -> tuple[str, list[Any]]:
    sql = ("status = 'running', attempts = attempts + 1, claimed_by = ?, claim_pid = ?, claim_host = ?, "
           "claim_expires_at = ?")
    return sql, [claimer.holder, claimer.pid, claimer.host, utcnow() + timedelta(seconds=claimer.ttl)]


def claim_due(crm: CRM, claimer: Claimer, *, limit: int = 20) -> list[int]:
    """Claim runs that are due, due again after a failure, or abandoned by a dead or expired claim."""
    return claim_runs(crm.store, claimer, limit=limit)


# Runs due (again) now, oldest first.
_READY_SQL = ("SELECT id FROM campaign_runs WHERE status IN ('due', 'retry') AND coalesce(next_attempt_at, due_at) "
              "<= ? ORDER BY coalesce(next_attempt_at, due_at), id LIMIT ?")
# Live-looking claims of other processes on this machine, whose process Claimer.gone() can check.
_LOCAL_HOLDERS_SQL = ("SELECT DISTINCT claimed_by, claim_host, claim_pid FROM campaign_runs WHERE status = 'running' "
                      "AND claimed_by IS DISTINCT FROM ? AND claim_host = ? AND claim_expires_at >= ?")
# Runs abandoned by another claimer: its claim expired, or (filled in) its process is gone.
_ABANDONED_SQL = ("SELECT id FROM campaign_runs WHERE status = 'running' AND claimed_by IS DISTINCT FROM ? "
                  "AND (claim_expires_at IS NULL OR claim_expires_at < ?{dead}) ORDER BY id LIMIT ?")


def claim_runs(store: Store, claimer: Claimer, *, limit: int = 20) -> list[int]:
    """Claim up to ``limit`` runs for ``claimer`` and mark them running; returns their ids (due runs first).

    Claimed are runs due now (``due``, or ``retry`` whose next attempt is due) and runs another claimer
    abandoned (its claim expired, or its process on this machine is gone). A claimed run has
    ``status = 'running'``, ``attempts`` one higher, and ``claimed_by``/``claim_pid``/``claim_host`` naming
    the claimer until ``claim_expires_at`` (now + ``claimer.ttl``); the claimer then carries it out
    (:func:`execute_run`), which ends the claim. On PostgreSQL any number of processes on any number of
    machines may call this at once: the rows are locked (``FOR UPDATE SKIP LOCKED``) in the claiming
    transaction, so each run goes to exactly one caller and no caller waits for another's rows. On DuckDB
    one process writes at a time (the worker lease keeps one worker active).
    """
    # A read first: an idle worker polling must not take the file's write lock every round.
    waiting = store.one(
        "SELECT count(*) FROM campaign_runs WHERE (status IN ('due', 'retry') AND coalesce(next_attempt_at, due_at) "
        "<= ?) OR (status = 'running' AND claimed_by IS DISTINCT FROM ?)", [utcnow(), claimer.holder])
    if not waiting or limit <= 0:
        return []

    def run(tx: Tx) -> list[int]:
        # Several claimers at once on PostgreSQL: SKIP LOCKED passes over the rows another claim transaction holds,
        # so each claimer gets rows of its own at once; READ COMMITTED (below) re-checks a row another claimer
        # has just committed against the WHERE (REPEATABLE READ would fail and retry the whole claim).
        lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgresql" else ""
        now = utcnow()
        ids = [r[0] for r in tx.rows(_READY_SQL + lock, [now, limit])]
        if len(ids) < limit:
            dead = [r[0] for r in tx.rows(_LOCAL_HOLDERS_SQL, [claimer.holder, claimer.host, now])
                    if claimer.gone(r[1], r[2])]
            sql = _ABANDONED_SQL.format(dead=f" OR claimed_by IN ({', '.join('?' * len(dead))})" if dead else "")
            ids += [r[0] for r in tx.rows(sql + lock, [claimer.holder, now, *dead, limit - len(ids)])]
        if not ids:
            return []
        sets, params = claim_columns(claimer)
        tx.execute(f"UPDATE campaign_runs SET {sets} WHERE id IN ({', '.join('?' * len(ids))})", [*params, *ids])
        return ids

    return store.write(run, isolation="read committed")


_CONTEXT_SQL = f"""
SELECT r.id, r.status, r.batch_id, r.claimed_by, r.attempts, r.address_id, rr.recorded_by,
       a.recipients, a.subject, a.message, {", ".join(f"a.{name}" for name in CAMPAIGN_OPTIONS)},
       a.skip_blocked, a.description,
       c.name AS campaign, act.name AS activity, re.name AS reaction
FROM campaign_runs r
JOIN campaign_actions a ON a.id = r.action_id
JOIN campaign_reactions re ON re.id = a.reaction_id
JOIN campaign_activities act ON act.id = re.activity_id
JOIN campaigns c ON c.id = act.campaign_id
JOIN campaign_recorded_reactions rr ON rr.id = r.recorded_reaction_id
WHERE r.id = ?"""


class _LostClaim(Exception):
    """Another process owns the run now; leave it alone."""


def _retryable(exc: BaseException) -> bool:
    """Passing troubles: no or broken campaign account, integration off, Graph or network failures."""
    return isinstance(exc, (AuthError, GraphError, IntegrationDisabled, httpx.HTTPError, OSError, TimeoutError))


def describe_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, AuthError):
        return t("campaigns.run_error.account", "en", detail=text)
    if isinstance(exc, GraphError):
        return t("campaigns.run_error.graph", "en", detail=text)
    if isinstance(exc, (httpx.HTTPError, OSError, TimeoutError)):
        return t("campaigns.run_error.network", "en", detail=text)
    return text


# A run's error is stored in English (the log, the API, the worker's report) from these catalog texts,
# and shown to a user in their language by run_error_text().
_RUN_ERRORS = ("campaigns.run_error.retry", "campaigns.run_error.confirming", "campaigns.run_error.partly",
               "campaigns.run_error.account", "campaigns.run_error.graph", "campaigns.run_error.network",
               "campaigns.run_error.nothing")
_BLOCKED = ("campaigns.run_error.blocked",)
_BLOCKED_PART = re.compile(r"address \d+ blocked \([^()]*\)")


def _reason_text(name: str, value: str, lang: str | None) -> str | None:
    """A blocked address's reason (``flag:no_campaign``, ``not_found``) as the user reads it."""
    if name != "reason":
        return None
    if value.startswith("flag:") and value[5:] in privacy.FLAGS:
        _channels, de, en = privacy.FLAGS[value[5:]]
        return de if lang == "de" else en
    return t("campaigns.run_error.not_found", lang) if value == "not_found" else None


def run_error_text(error: str | None, lang: str | None) -> str:
    """A run's stored (English) error in ``lang``: the runner's own texts, and the core errors' texts inside
    them; anything else (a server's own words) as stored."""
    if not error:
        return ""
    parts = error.split("; ")
    if all(_BLOCKED_PART.fullmatch(p) for p in parts):  # one part per blocked address
        return "; ".join(relocalize(p, lang, _BLOCKED, _reason_text) for p in parts)
    return relocalize(error, lang, _RUN_ERRORS + _core_error_keys(), _reason_text)


@cache
def _core_error_keys() -> tuple[str, ...]:
    """Core error texts whose placeholders are the same in both languages (they can be filled from English)."""
    def fields(text: str) -> set[str]:
        return set(re.findall(r"{(\w+)}", text))
    return tuple(k for k, e in catalog().items() if k.startswith("error.msg.") and fields(e["de"]) == fields(e["en"]))


def execute_run(crm: CRM, service: TeamsService, claimer: Claimer, run_id: int) -> RunOutcome:
    """Carry out one claimed run; never raises for a run's own failure (it is recorded on the run)."""
    try:
        ctx = crm.store.read(lambda tx: tx.df(_CONTEXT_SQL, [run_id]))
        if ctx.empty:
            return RunOutcome(run_id, "failed", "run not found")
        row = ctx.astype(object).where(ctx.notna(), None).iloc[0].to_dict()
        if row["claimed_by"] != claimer.holder or row["status"] != "running":
            return RunOutcome(run_id, str(row["status"]), "claimed by another process")
        batch_id = row["batch_id"] or _plan_and_enqueue(crm, service, claimer, row)
        if isinstance(batch_id, RunOutcome):
            return batch_id
        results = service.deliver([batch_id])
        return _record_delivery(crm, claimer, row, results)
    except _LostClaim:
        return RunOutcome(run_id, "running", "claimed by another process")
    except Exception as exc:
        if not isinstance(exc, CrmkitError) and not _retryable(exc):
            log.exception("campaign run %s failed unexpectedly", run_id)
        attempts = int(crm.store.one("SELECT attempts FROM campaign_runs WHERE id = ?", [run_id]) or 1)
        if _retryable(exc):
            delay = retry_delay(attempts)
            error = t("campaigns.run_error.retry", "en", error=describe_error(exc), attempt=attempts,
                      delay=f"{delay:.0f}")
            return _finish(crm, claimer, run_id, "retry", error, utcnow() + timedelta(seconds=delay))
        return _finish(crm, claimer, run_id, "failed", describe_error(exc))


def _values(crm: CRM, row: dict[str, Any]) -> dict[str, Any]:
    values = dict(crm.address(int(row["address_id"])))
    values.update(campaign=row["campaign"], activity=row["activity"], reaction=row["reaction"])
    return values


def _send_options(crm: CRM, row: dict[str, Any]) -> SendOptions:
    """The action's stored send options: its columns carry the options' names."""
    values = campaign_columns(row)
    values["language"] = values["language"] or crm.language
    return SendOptions(**values)


def _plan_and_enqueue(crm: CRM, service: TeamsService, claimer: Claimer, row: dict[str, Any]) -> str | RunOutcome:
    if not crm.setting("teams.enabled"):
        raise switched_off()
    values = _values(crm, row)
    options = _send_options(crm, row)
    # Resolved again now: someone may have left the directory since the action was saved; the dicts carry
    # their names, so the run's error says who.
    recipients = json.loads(row["recipients"])
    plan = service.plan(int(row["address_id"]), recipients, render_subject(row["subject"], values),
                        render_message(row["message"], values), options=options,
                        channel="teams_campaign", trigger="campaign")
    _add_template_fields(crm, plan, row)
    account = service.sender_account()
    run_id = int(row["id"])

    def run(tx: Tx) -> str | RunOutcome:
        owner = tx.rows("SELECT claimed_by, status, batch_id FROM campaign_runs WHERE id = ?", [run_id])
        if not owner or owner[0][0] != claimer.holder or owner[0][1] != "running" or owner[0][2] is not None:
            raise _LostClaim
        batch_id = enqueue_plan(tx, plan, user=str(row["recorded_by"]), account=account,
                                source=f"campaign_run:{run_id}")
        tx.execute("UPDATE campaign_runs SET batch_id = ? WHERE id = ?", [batch_id, run_id])
        if plan.messages:
            return batch_id
        # The address is blocked (flag or policy): nothing to deliver; the block is in the transfer log.
        reason = "; ".join(t("campaigns.run_error.blocked", "en", address=a, reason=why)
                           for a, why in plan.blocked.items()) or t("campaigns.run_error.nothing", "en")
        status = "skipped" if row["skip_blocked"] else "failed"
        _finish_tx(tx, run_id, status, reason, None)
        return RunOutcome(run_id, status, reason)

    return crm.store.write(run)


def _add_template_fields(crm: CRM, plan: SendPlan, row: dict[str, Any]) -> None:
    """Placeholders put address fields into the text too: log them, and ask the policy about them."""
    extra = template_fields(row["subject"], row["message"])
    if not extra:
        return
    for message in plan.messages:
        for key in message.field_names:
            message.field_names[key] = sorted({*message.field_names[key], *extra})
    for key in plan.field_names:
        plan.field_names[key] = sorted({*plan.field_names[key], *extra})
    decision = privacy.check_transfer(crm, plan.channel, [int(row["address_id"])], plan.purpose,
                                      fields=sorted({f for v in plan.field_names.values() for f in v}))
    plan.log = plan.log or decision.log


def _record_delivery(crm: CRM, claimer: Claimer, row: dict[str, Any], results: Any) -> RunOutcome:
    run_id = int(row["id"])
    statuses = list(results["status"]) if len(results) else []
    failed = results[results["status"].isin(["failed", "cancelled"])] if len(results) else results
    if any(s in ("pending", "sending") for s in statuses):
        attempts = int(row["attempts"] or 1)
        delay = retry_delay(attempts)
        error = t("campaigns.run_error.confirming", "en", sent=statuses.count("sent"), total=len(statuses),
                  delay=f"{delay:.0f}")
        return _finish(crm, claimer, run_id, "retry", error, utcnow() + timedelta(seconds=delay))
    if len(failed):
        detail = "; ".join(f"{r.recipient_name}: {r.error}" for r in failed.itertuples())
        return _finish(crm, claimer, run_id, "failed", t("campaigns.run_error.partly", "en",
                       sent=statuses.count("sent"), total=len(statuses), detail=detail))
    return _finish(crm, claimer, run_id, "done", None)


def _finish_tx(tx: Tx, run_id: int, status: str, error: str | None, next_at: Any) -> None:
    tx.execute(
        "UPDATE campaign_runs SET status = ?, error = ?, next_attempt_at = ?, finished_at = ?, claimed_by = NULL, "
        "claim_pid = NULL, claim_host = NULL, claim_expires_at = NULL WHERE id = ?",
        [status, error, next_at, utcnow() if status in FINAL else None, run_id],
    )


def _finish(crm: CRM, claimer: Claimer, run_id: int, status: str, error: str | None, next_at: Any = None
            ) -> RunOutcome:
    def run(tx: Tx) -> RunOutcome:
        current = tx.rows("SELECT claimed_by, status FROM campaign_runs WHERE id = ?", [run_id])
        if not current or current[0][0] != claimer.holder:
            return RunOutcome(run_id, current[0][1] if current else "failed", "claimed by another process")
        _finish_tx(tx, run_id, status, error, next_at)
        return RunOutcome(run_id, status, error)

    outcome = crm.store.write(run)
    level = logging.WARNING if outcome.status == "failed" else logging.INFO
    log.log(level, "campaign run %s: %s%s", run_id, outcome.status, f" ({outcome.error})" if outcome.error else "")
    return outcome
