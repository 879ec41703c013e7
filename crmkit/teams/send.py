"""Send address records to people in Teams: ``crm.teams.send(records, to=[...], subject=..., ...)``.

A send is planned in full before anything leaves: the integration must be on, the user must hold
``teams.send``, every recipient must resolve in the directory, the personal-data policy is asked,
every message is rendered and size-checked. Only then are the messages written to the outbox
(with a ``blocked`` transfer-log row for each blocked address) and delivered by
:class:`~crmkit.teams.delivery.DeliveryEngine`.

Large sends stream: :meth:`TeamsService.send` plans :data:`PLAN_CHUNK` records at a time and stages
each chunk's rows in the outbox under a staging id that no batch has (``status = 'staged'``), so
delivery cannot see them; when every chunk is planned, one transaction creates the batch and turns
the staged rows into its pending rows. A refusal in any chunk deletes what was staged, so nothing
is sent and the outbox keeps nothing of the send. Staging ids name the planning process (host,
pid, start); rows left by one that died are deleted by the next :meth:`TeamsService.resume`.
Delivery loads :data:`DELIVER_CHUNK` rows at a time. Memory stays flat in the number of records
(``bench/send_memory.py``).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import duckdb
import httpx
import pandas as pd

from .. import privacy
from ..errors import NotFound, StoreError, ValidationError, catalog_error
from ..graph import TEAMS_CHAT_RATE, TEAMS_TENANT_RATE, GraphNotFound, RateLimiter, RetryPolicy
from . import display_format, recipients
from .activation import switched_off
from .compose import build_message, check_message_text, check_size, prefixed_subject, split_rows
from .delivery import Ambiguous, DeliveryEngine, Progress
from .options import SendOptions
from .outbox import (
    STAGED,
    OutboxMessage,
    add_messages,
    cancel,
    create_batch,
    keyed_batch,
    open_ids,
    open_rows,
    purge_abandoned_staging,
    staging_id,
)

if TYPE_CHECKING:
    from ..auth import Microsoft365
    from ..crm import CRM
    from ..graph import GraphClient
    from ..store import Tx

__all__ = ["SendOptions", "SendPlan", "TeamsService", "enqueue_plan"]

RESULT_COLUMNS = ["record", "recipient", "recipient_name", "status", "message_id", "error"]
MAX_PASSES = 5
PLAN_CHUNK = 1_000  # records planned, rendered and staged in the outbox at a time by send()
DELIVER_CHUNK = 1_000  # outbox rows loaded and handed to the delivery engine at a time
READ_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_IDEMPOTENCY_KEY = 200  # characters; a compose's key is a uuid, a notebook's whatever the author chose
USER_FIELDS = ["id", "displayName", "userPrincipalName", "mail", "accountEnabled", "userType"]


@dataclass
class SendPlan:
    """Everything a send would do; ``preview()`` returns it, ``send()`` carries it out."""

    subject: str
    text: str
    options: SendOptions
    channel: str
    trigger: str
    me: dict[str, Any]
    recipients: list[dict[str, Any]]
    messages: list[OutboxMessage]
    blocked: dict[int, str]
    log: bool
    purpose: str | None
    field_names: dict[int, list[str]] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """One row per message: recipients, records, size and the exact body."""
        rows = []
        for m in self.messages:
            rows.append({
                "recipients": ", ".join(r["name"] for r in m.recipients),
                "records": m.address_ids,
                "chat": m.chat_kind,
                "subject": m.payload["subject"],
                "size_bytes": len(json.dumps(m.payload, ensure_ascii=False).encode()),
                "body_html": m.payload["body"]["content"],
                "card": m.payload.get("attachments", [{}])[0].get("content"),
                "fields": sorted({f for a in m.address_ids for f in self.field_names.get(a, [])}),
            })
        for address_id, reason in self.blocked.items():
            rows.append({"recipients": "", "records": [address_id], "chat": None, "subject": self.subject,
                         "size_bytes": 0, "body_html": None, "card": None, "fields": [],
                         "blocked": reason})
        return pd.DataFrame(rows)


def enqueue_plan(tx: Tx, plan: SendPlan, *, user: str, account: str | None, source: str | None = None,
                 idempotency_key: str | None = None) -> str:
    """Write a planned send to the outbox inside the caller's transaction; returns the batch id.

    Blocked addresses get their ``blocked`` transfer-log rows in the same transaction.
    """
    batch_id = create_batch(
        tx, user=user, account=account, channel=plan.channel, trigger=plan.trigger, purpose=plan.purpose,
        subject=plan.subject, options={**asdict(plan.options), "log": plan.log, "blocked": plan.blocked},
        record_contact=plan.options.record_contact, source=source, idempotency_key=idempotency_key,
    )
    add_messages(tx, batch_id, plan.messages)
    if plan.blocked:
        privacy.log_transfers(tx, [
            privacy.TransferRecord(
                user_name=user, channel=plan.channel, trigger=plan.trigger, address_id=a, fields=[],
                outcome="blocked", recipient_id=r["id"], recipient_name=r["name"], purpose=plan.purpose,
                ms_account=account, message_key=f"{batch_id}:blocked", detail=reason,
            )
            for a, reason in plan.blocked.items() for r in plan.recipients
        ])
    return batch_id


def teams_limiter() -> RateLimiter:
    """Client-side pacing at Teams' documented limits (20/s per tenant, 1/s per chat).

    ``CRMKIT_TEAMS_TENANT_RPS`` / ``CRMKIT_TEAMS_CHAT_RPS`` change them, for a sandbox whose limits
    were raised (tests, benchmarks); against Microsoft keep the defaults.
    """
    tenant = float(os.environ.get("CRMKIT_TEAMS_TENANT_RPS") or TEAMS_TENANT_RATE)
    chat = float(os.environ.get("CRMKIT_TEAMS_CHAT_RPS") or TEAMS_CHAT_RATE)
    return RateLimiter(tenant, chat)


class TeamsService:
    """The Teams side of a CRM session (``crm.teams``).

    Args:
        crm: the session.
        m365: its Microsoft 365 door (accounts, Graph); built from the configuration when omitted.
    """

    def __init__(self, crm: CRM, m365: Microsoft365 | None = None, *, sender: str = "user") -> None:
        if sender not in ("user", "campaign"):
            raise ValueError("sender is 'user' (the session user's Teams account) or 'campaign'")
        self.crm = crm
        self.sender = sender
        self._m365 = m365
        self._graph: GraphClient | None = None
        self._post_graph: GraphClient | None = None
        self._graph_lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}  # one per idempotency key: a repeat waits for the first

    def __repr__(self) -> str:
        return f"<TeamsService user={self.crm.user.name!r}>"

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def m365(self) -> Microsoft365:
        if self._m365 is None:
            from ..auth import Microsoft365
            from ..config import TeamsConfig
            from ..http import make_async_http_client

            config = TeamsConfig.resolve(self.crm)
            # How long a post may go unanswered before the outbox treats it as ambiguous and reconciles.
            timeout = float(os.environ.get("CRMKIT_GRAPH_TIMEOUT") or 30)
            self._m365 = Microsoft365(
                self.crm, config=config,
                async_http=lambda: make_async_http_client(config.sandbox_url, timeout=httpx.Timeout(timeout)),
            )
        return self._m365

    def graph(self) -> GraphClient:
        """Graph as the user's Teams account, for reads (retried on 429 and 5xx).

        Raises:
            SignInRequired: the user has no Microsoft 365 account for Teams yet.
        """
        with self._graph_lock:
            if self._graph is None:
                self._graph = self._sender_graph(retry=RetryPolicy(statuses=READ_RETRY_STATUSES))
            return self._graph

    def _sender_graph(self, **kw: Any) -> GraphClient:
        if self.sender == "campaign":
            return self.m365.campaign.graph(**kw)
        return self.m365.graph(**kw)

    def sender_account(self) -> str | None:
        """The Microsoft 365 user name messages go out as (for the transfer log)."""
        if self.sender == "campaign":
            info = self.m365.campaign.info()
            return info.username if info else None
        account = self.m365.accounts.teams_account()
        return account.username if account else None

    def _delivery_graph(self) -> GraphClient:
        """Graph for delivering, paced to Teams' limits. A post is resent inside only after 429 (the
        client never resends a POST after a 5xx, which may have been stored: the outbox reconciles it);
        the read-back's GETs are retried on 503/504 like any read, so one refusal does not cost the row
        an attempt and its back-off, which only widens the window the next read-back must cover."""
        with self._graph_lock:
            if self._post_graph is None:
                self._post_graph = self._sender_graph(retry=RetryPolicy(), limiter=teams_limiter())
            return self._post_graph

    def close(self) -> None:
        """Close the Graph and identity connections (the service can be used again afterwards)."""
        for client in (self._graph, self._post_graph):
            if client is not None:
                client.close()
        self._graph = self._post_graph = None
        if self._m365 is not None:
            self._m365.close()
            self._m365 = None

    def require_ready(self) -> None:
        """Raise unless the integration is on and the user may send."""
        if not self.crm.setting("teams.enabled"):
            raise switched_off()
        self.crm.require("teams.send")

    # -- directory ----------------------------------------------------------------------------------

    def directory(self, text: str = "", *, limit: int = 25) -> pd.DataFrame:
        """People from the organisation's directory whose name starts with ``text`` (the people picker)."""
        page = self.graph().search_users(text, top=limit)
        frame = pd.DataFrame(page.users, columns=["id", "displayName", "userPrincipalName", "mail", "jobTitle",
                                                  "department"])
        return frame.reindex(columns=[c for c in frame.columns if frame[c].notna().any() or c in ("id",
                                                                                                   "displayName")])

    def resolve(self, to: Iterable[str | dict[str, Any]], *, saving: bool = False) -> list[dict[str, Any]]:
        """Each recipient as a directory user, each person once (by object id, however they were named).

        A recipient is an object id, a UPN, an e-mail address or a picker dict (see
        :mod:`crmkit.teams.recipients`); its form is checked before anything is looked up.

        Args:
            saving: word the error for saving (a campaign action) rather than sending.

        Raises:
            InvalidRecipient: none given, or ones malformed, unknown or disabled; all of them named, cut short.
        """
        wanted = recipients.check(to, saving=saving)
        graph = self.graph()
        people: dict[str, dict[str, Any]] = {}
        problems: list[tuple[str, str]] = []
        refused: list[str] = []
        for r in wanted:
            user = _look_up(graph, r)
            if user is None:
                problems.append(("error.msg.not_in_directory", r.label))
            elif user.get("accountEnabled") is False:
                problems.append(("error.msg.account_disabled", recipients.shown(user.get("displayName") or r.key)))
            else:
                people.setdefault(str(user["id"]).lower(), user)  # one person named twice counts once
                continue
            refused.append(r.key)
        if problems:
            raise recipients.invalid(problems, refused, saving=saving)
        return list(people.values())

    # -- planning -----------------------------------------------------------------------------------

    def _address_ids(self, records: Any) -> list[int]:
        if isinstance(records, bool):
            raise ValidationError("records must be address ids, a DataFrame with an id column, or a SQL filter.")
        if isinstance(records, int) or (hasattr(records, "__index__") and not isinstance(records, str)):
            return [int(records)]
        if isinstance(records, pd.DataFrame):
            if "id" not in records.columns:
                raise ValidationError("A DataFrame of records needs the address id column 'id'.")
            return [int(i) for i in records["id"].tolist()]
        if isinstance(records, str):
            return [int(i) for i in self.crm.addresses(where=records, columns=["id"])["id"].tolist()]
        if isinstance(records, Iterable):
            ids = []
            for r in records:
                if isinstance(r, bool) or not hasattr(r, "__index__"):
                    raise ValidationError(f"An address id is an integer, not {r!r}.")
                ids.append(int(r))
            return ids
        raise ValidationError("records must be address ids, a DataFrame with an id column, or a SQL filter.")

    def plan(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "", *,
        options: SendOptions | None = None, channel: str = "teams_manual", trigger: str = "manual",
        me: dict[str, Any] | None = None, recipients: list[dict[str, Any]] | None = None,
    ) -> SendPlan:
        """Work out every message of a send without sending or writing anything."""
        ids, context = self._prepare(records, to, subject, message, options, me, recipients)
        return self._plan_ids(ids, *context, channel=channel, trigger=trigger)

    def plan_chunks(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "", *,
        options: SendOptions | None = None, channel: str = "teams_manual", trigger: str = "manual",
        me: dict[str, Any] | None = None, recipients: list[dict[str, Any]] | None = None, size: int = PLAN_CHUNK,
    ) -> Iterator[SendPlan]:
        """:meth:`plan` for ``size`` records at a time (recipients resolved once), so memory stays flat.

        The records, recipients, subject and text are checked before the first chunk is yielded; each
        chunk asks the policy for its own addresses. A digest (``mode="digest"``) is split at chunk
        boundaries as well as under Teams' size limit.
        """
        ids, context = self._prepare(records, to, subject, message, options, me, recipients)
        for start in range(0, len(ids), max(1, size)):
            yield self._plan_ids(ids[start:start + size], *context, channel=channel, trigger=trigger)

    def _prepare(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str,
        options: SendOptions | None, me: dict[str, Any] | None, recipients: list[dict[str, Any]] | None,
    ) -> tuple[list[int], tuple[Any, ...]]:
        options = options or SendOptions()
        ids = list(dict.fromkeys(self._address_ids(records)))
        if not ids:
            raise catalog_error(ValidationError, "error.msg.no_records")
        full_subject = prefixed_subject(subject, self.crm.setting("teams.subject_prefix"))
        check_message_text(message)
        people = recipients if recipients is not None else self.resolve(to)
        me = me if me is not None else self.graph().me()
        people = [p for p in people if p["id"] != me["id"]]
        if not people:
            raise catalog_error(ValidationError, "error.msg.only_yourself")
        lang = options.language or self.crm.language
        fmt = display_format.load_format(self.crm)
        return ids, (options, full_subject, message, me, people, lang, fmt)

    def _plan_ids(
        self, ids: list[int], options: SendOptions, full_subject: str, message: str, me: dict[str, Any],
        people: list[dict[str, Any]], lang: str, fmt: Any, *, channel: str, trigger: str,
    ) -> SendPlan:
        frame = self.crm.addresses(id=ids)
        found = {int(r["id"]): r for r in frame.astype(object).where(frame.notna(), None).to_dict("records")}
        missing = [a for a in ids if a not in found]
        if missing:
            raise catalog_error(NotFound, "error.msg.no_addresses_sent", ids=missing[:10])
        names = {a: (fmt.rendered_field_names(found[a]) if options.include_record else []) for a in ids}
        decision = privacy.check_transfer(
            self.crm, channel, ids, options.purpose, fields=sorted({n for v in names.values() for n in v}),
        )
        allowed_ids = set(decision.allowed_ids)  # a set: decision.allowed(a) scans every address
        allowed = [a for a in ids if a in allowed_ids]
        recips = [{"id": p["id"], "name": p.get("displayName") or p.get("userPrincipalName") or p["id"]}
                  for p in people]
        messages: list[OutboxMessage] = []
        lanes = ([[r] for r in recips] if options.chat == "one_on_one" else [recips])
        kind = "oneOnOne" if options.chat == "one_on_one" else "group"
        topic = full_subject[:250] if kind == "group" else None
        for lane in lanes:
            members = [me["id"], *(r["id"] for r in lane)]
            if options.mode == "per_record":
                for a in allowed:
                    messages.append(self._record_message(full_subject, message, found[a], fmt, lang, options,
                                                         kind, members, lane, topic, names[a]))
            else:
                messages.extend(self._digest_messages(full_subject, message, [found[a] for a in allowed], fmt,
                                                      lang, options, kind, members, lane, topic, names))
        return SendPlan(
            subject=full_subject, text=message, options=options, channel=channel, trigger=trigger, me=me,
            recipients=recips, messages=messages, blocked=decision.blocked, log=decision.log,
            purpose=decision.purpose, field_names=names,
        )

    def _record_message(self, subject: str, text: str, record: dict[str, Any], fmt: Any, lang: str,
                        options: SendOptions, kind: str, members: list[str], lane: list[dict[str, str]],
                        topic: str | None, names: list[str]) -> OutboxMessage:
        marker = uuid.uuid4().hex
        card = table = None
        if options.include_record:
            if options.record_format == "card":
                card = fmt.card(record, lang)
            else:
                table = fmt.html_table(record, lang)
        payload = build_message(subject, text, record_html=table or "", card=card,
                                attachment_id=marker if card is not None else None, importance=options.importance)
        check_size(payload)
        return OutboxMessage(
            payload=payload, marker=marker, chat_kind=kind, members=members, recipients=lane,
            address_ids=[int(record["id"])], field_names={str(record["id"]): names}, topic=topic,
            contact_subject=subject, contact_notes=text or None,
        )

    def _digest_messages(self, subject: str, text: str, records: list[dict[str, Any]], fmt: Any, lang: str,
                         options: SendOptions, kind: str, members: list[str], lane: list[dict[str, str]],
                         topic: str | None, names: dict[int, list[str]]) -> list[OutboxMessage]:
        rows = [fmt.html_table_row(r, lang) for r in records]
        ids_by_row = {row_index: int(r["id"]) for row_index, r in enumerate(records)}
        header = fmt.html_header(lang)

        def build(chunk: list[str]) -> dict[str, Any]:
            table = f'<table class="crmkit-digest">{header}{"".join(chunk)}</table>'
            return build_message(subject, text, record_html=table, importance=options.importance)

        out: list[OutboxMessage] = []
        start = 0
        for chunk in split_rows(rows, build):
            chunk_ids = [ids_by_row[i] for i in range(start, start + len(chunk))]
            start += len(chunk)
            out.append(OutboxMessage(
                payload=build(chunk), marker=uuid.uuid4().hex, chat_kind=kind, members=members, recipients=lane,
                address_ids=chunk_ids, field_names={str(a): names[a] for a in chunk_ids}, topic=topic,
                contact_subject=subject, contact_notes=text or None,
            ))
        return out

    # -- sending ------------------------------------------------------------------------------------

    def preview(self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "",
                **options: Any) -> pd.DataFrame:
        """Exactly what :meth:`send` would post, one row per message; nothing is sent or logged."""
        self.require_ready()
        return self.plan(records, to, subject, message, options=SendOptions.of(**options)).frame()

    def send(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "", *,
        record_contact: bool = False, progress: Callable[[Progress], None] | None = None,
        cancel_event: threading.Event | None = None, idempotency_key: str | None = None, **options: Any,
    ) -> pd.DataFrame:
        """Send records to people in Teams; returns one row per (record, recipient).

        The result's ``attrs["batch_ids"]`` names the batch (one per send).

        Args:
            records: an address id, a list of ids, a DataFrame with an ``id`` column, or a SQL filter.
            to: directory users (UPN, e-mail or object id).
            subject: prefixed with the system's "cobra CRM - ".
            message: the sender's text (HTML is sanitised).
            record_contact: file a contact of type TS on each address.
            progress: called after each message with a :class:`Progress`.
            cancel_event: set it to stop; unsent messages are cancelled, sent ones stay logged.
            idempotency_key: names this compose (printable text, at most 200 characters; the compose
                dialog makes one per message). A send under a key this CRM user already sent under
                posts nothing and returns that earlier batch's results (same batch, same rows),
                whatever records, recipients or text it is given now: the key says "this message",
                so a double click or a re-run notebook cell cannot send twice. If that batch was
                interrupted, its undelivered messages go out now, each exactly once. A send refused
                before its batch was made leaves the key unused.
            **options: see :class:`SendOptions` (chat, mode, record_format, importance, purpose …).

        Raises:
            IntegrationDisabled, PermissionDenied, ValidationError, MessageTooLarge, TransferBlocked,
            SignInRequired: before anything is sent or written.
        """
        self.require_ready()
        key = _check_idempotency_key(idempotency_key)
        with self._key_lock(key):  # a second send with this key (another thread) waits, then finds the batch
            if key is not None:
                existing = self.crm.store.read(lambda tx: keyed_batch(tx, self.crm.user.name, key))
                if existing is not None:
                    return self._repeat(existing, progress=progress, cancel_event=cancel_event)
            chunks = self.plan_chunks(records, to, subject, message,
                                      options=SendOptions.of(record_contact=record_contact, **options))
            staging, summary, staged = self._stage(chunks)  # every chunk planned; its rows inert in the outbox
            try:
                self.resume()  # an earlier interrupted send goes first, so nothing overtakes it
            except BaseException:
                self._unstage(staging)
                raise
            batch_id, made = self._activate(staging, summary, staged, idempotency_key=key)
            if not made:  # another process made the batch for this key meanwhile
                return self._repeat(batch_id, progress=progress, cancel_event=cancel_event)
            return self.deliver([batch_id], progress=progress, cancel_event=cancel_event)

    def _key_lock(self, key: str | None) -> AbstractContextManager[Any]:
        if key is None:
            return nullcontext()
        with self._graph_lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _repeat(self, batch_id: str, *, progress: Callable[[Progress], None] | None,
                cancel_event: threading.Event | None) -> pd.DataFrame:
        """A send repeated under its key: the batch's results; what it left undelivered goes out once."""
        if open_ids(self.crm.store, [batch_id]):
            return self.deliver([batch_id], progress=progress, cancel_event=cancel_event)
        return self.results([batch_id])

    def enqueue(self, plan: SendPlan, *, source: str | None = None) -> str:
        """Write a planned send to the outbox (and its blocked rows to the transfer log)."""
        account = self.sender_account()

        def run(tx: Tx) -> str:
            batch_id = enqueue_plan(tx, plan, user=self.crm.user.name, account=account, source=source)
            self._mark_used(tx, account)
            return batch_id

        return self.crm.store.write(run)

    def _mark_used(self, tx: Tx, account: str | None) -> None:
        """Stamp the user's Teams account as used, in the transaction that accepts a send (never
        earlier: a refused send or a preview writes nothing). The campaign account has no such column."""
        if self.sender == "user":
            from ..auth.accounts import mark_used

            mark_used(tx, self.crm.user.name, account)

    def _stage(self, chunks: Iterator[SendPlan]) -> tuple[str, SendPlan, int]:
        """Plan chunk by chunk, writing each chunk's rows as ``staged`` under a fresh id no batch has.

        Returns the staging id, a summary plan (no messages; blocked addresses and the log flag of
        the whole send) and the number of rows staged. Any refusal deletes the staged rows and is
        raised: nothing of the send stays.
        """
        staging = staging_id()
        summary: SendPlan | None = None
        seq = 0
        try:
            for plan in chunks:
                if plan.messages:
                    self.crm.store.write(lambda tx, p=plan, first=seq: _stage_rows(tx, staging, p, first))
                    seq += len(plan.messages)
                if summary is None:
                    summary = SendPlan(
                        subject=plan.subject, text=plan.text, options=plan.options, channel=plan.channel,
                        trigger=plan.trigger, me=plan.me, recipients=plan.recipients, messages=[], blocked={},
                        log=False, purpose=plan.purpose,
                    )
                summary.blocked.update(plan.blocked)
                summary.log = summary.log or plan.log  # personal data anywhere in the send: log all of it
        except BaseException:
            self._unstage(staging)
            raise
        assert summary is not None  # plan_chunks yields at least one chunk (it refuses an empty selection)
        return staging, summary, seq

    def _unstage(self, staging: str) -> None:
        self.crm.store.write(lambda tx: tx.execute("DELETE FROM outbox WHERE batch_id = ?", [staging]))

    def _activate(self, staging: str, summary: SendPlan, staged: int, *,
                  idempotency_key: str | None = None) -> tuple[str, bool]:
        """One transaction: the batch, its blocked transfer-log rows, and the staged rows made pending.

        Returns the batch id and whether it was made here: a batch that already holds
        ``idempotency_key`` (made meanwhile elsewhere) is returned instead, and the staged rows go.
        """
        user = self.crm.user.name
        try:
            account = self.sender_account()

            def run(tx: Tx) -> tuple[str, bool]:
                if idempotency_key is not None:
                    existing = keyed_batch(tx, user, idempotency_key)
                    if existing is not None:
                        tx.execute("DELETE FROM outbox WHERE batch_id = ?", [staging])
                        return existing, False
                batch_id = enqueue_plan(tx, summary, user=user, account=account, idempotency_key=idempotency_key)
                self._mark_used(tx, account)
                tx.execute("UPDATE outbox SET batch_id = ?, status = 'pending' WHERE batch_id = ? AND status = ?",
                           [batch_id, staging, STAGED])
                found = int(tx.one("SELECT count(*) FROM outbox WHERE batch_id = ?", [batch_id]))
                if found != staged:  # rolled back: a partial send must not go out as if it were whole
                    raise StoreError(f"The send's planned messages are not all in the outbox ({found} of {staged}); "
                                     "nothing was sent. Send again.")
                return batch_id, True

            try:
                return self.crm.store.write(run)
            except duckdb.ConstraintException:
                # The unique index on (user, key): a writer that checked at the same moment won.
                existing = None if idempotency_key is None else self.crm.store.read(
                    lambda tx: keyed_batch(tx, user, idempotency_key))
                if existing is None:
                    raise
                self._unstage(staging)
                return existing, False
        except BaseException:
            self._unstage(staging)
            raise

    def resume(self, *, progress: Callable[[Progress], None] | None = None,
               cancel_event: threading.Event | None = None) -> pd.DataFrame:
        """Deliver what an interrupted send left (pending or unconfirmed), each message exactly once.

        Rows staged by a send whose planning died with its process are deleted first: that send never
        started, so they are never delivered.
        """
        from .outbox import pending_batches

        purge_abandoned_staging(self.crm.store)
        # Only this sender's own batches: a campaign batch must never go out as the user's account.
        channels = ["teams_campaign"] if self.sender == "campaign" else ["teams_manual"]
        batches = pending_batches(self.crm.store, user=self.crm.user.name, channels=channels)
        if not batches:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        return self.deliver(batches, progress=progress, cancel_event=cancel_event)

    def deliver(self, batch_ids: list[str], *, progress: Callable[[Progress], None] | None = None,
                cancel_event: threading.Event | None = None) -> pd.DataFrame:
        # A pass can leave messages unconfirmed (no answer, read-back failed); another pass reconciles
        # them, as long as passes make progress. A pass loads DELIVER_CHUNK rows at a time.
        for _ in range(MAX_PASSES):
            ids = open_ids(self.crm.store, batch_ids)
            if not ids:
                break
            graph = self._delivery_graph()
            engine = DeliveryEngine(self.crm.store, GraphChatGateway(graph), self._side_effects)
            counts = Progress(0, len(ids), 0, 0)
            progressed = False
            for start in range(0, len(ids), DELIVER_CHUNK):
                rows = open_rows(self.crm.store, ids[start:start + DELIVER_CHUNK])
                if not len(rows):
                    continue
                done = graph.submit(engine.run(rows, progress=_offset(progress, counts),
                                               cancel=cancel_event)).result()
                counts.done += len(done)
                counts.sent += sum(d.status == "sent" for d in done)
                counts.failed += sum(d.status == "failed" for d in done)
                progressed = progressed or any(d.status != "sending" for d in done)
                if cancel_event is not None and cancel_event.is_set():
                    break
            if cancel_event is not None and cancel_event.is_set():
                for b in batch_ids:
                    cancel(self.crm.store, b)
                break
            if not progressed:
                break  # no progress: leave the rest for a later resume
        return self.results(batch_ids)

    def results(self, batch_ids: list[str]) -> pd.DataFrame:
        """One row per (record, recipient) of the given sends, blocked ones included."""
        marks = ", ".join("?" * len(batch_ids))
        frame = self.crm.store.df(
            "SELECT o.address_ids, o.recipients, o.status, o.message_id, o.error FROM outbox o "
            f"WHERE o.batch_id IN ({marks}) ORDER BY o.batch_id, o.seq", batch_ids,
        )
        out = []
        for row in frame.itertuples(index=False):
            for a in json.loads(row.address_ids):
                for r in json.loads(row.recipients):
                    out.append([a, r["id"], r["name"], row.status, row.message_id, row.error])
        blocked = self.crm.store.df(
            "SELECT options FROM outbox_batches WHERE id IN (" + marks + ")", batch_ids)
        for opts in blocked["options"]:
            for a, reason in json.loads(opts).get("blocked", {}).items():
                out.append([int(a), None, None, "blocked", None, reason])
        frame = pd.DataFrame(out, columns=RESULT_COLUMNS)
        frame.attrs["batch_ids"] = list(batch_ids)
        return frame

    # -- what a final outcome writes, in the delivery transaction ---------------------------------------

    def _side_effects(self, tx: Tx, row: Any, delivery: Any) -> None:
        options = json.loads(row.options) if hasattr(row, "options") else {}
        recipients = json.loads(row.recipients)
        fields = json.loads(row.field_names)
        log = options.get("log", True)
        if log:
            privacy.log_transfers(tx, [
                privacy.TransferRecord(
                    user_name=row.user_name, channel=row.channel, trigger=row.trigger, address_id=int(a),
                    fields=fields.get(str(a), []), outcome=delivery.status, recipient_id=r["id"],
                    recipient_name=r["name"], purpose=row.purpose, ms_account=row.account,
                    message_id=delivery.message_id, message_key=row.id, detail=delivery.error,
                    logged_at=delivery.at,
                )
                for a in json.loads(row.address_ids) for r in recipients
            ], on_conflict="ignore")
        if delivery.status == "sent" and row.record_contact:
            names = ", ".join(r["name"] for r in recipients)
            link = message_link(delivery.chat_id, delivery.message_id)
            for a in json.loads(row.address_ids):
                _file_contact(tx, int(a), row, names, delivery, link)


def _look_up(graph: GraphClient, r: recipients.Recipient) -> dict[str, Any] | None:
    """The directory user a well-formed recipient names, or None: by id or UPN, then an address by mail."""
    try:
        return graph.get_user(r.key, select=USER_FIELDS)
    except GraphNotFound:
        pass
    return graph.find_user_by_mail(r.key, select=USER_FIELDS) if r.kind == "address" else None


def _check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(f"An idempotency_key is printable text of 1 to {MAX_IDEMPOTENCY_KEY} characters "
                              "(one per message composed); nothing was sent.")
    return key


def _stage_rows(tx: Tx, staging: str, plan: SendPlan, first_seq: int) -> None:
    add_messages(tx, staging, plan.messages, first_seq=first_seq)
    tx.execute("UPDATE outbox SET status = ? WHERE batch_id = ? AND status = 'pending'", [STAGED, staging])


def _offset(progress: Callable[[Progress], None] | None, before: Progress) -> Callable[[Progress], None] | None:
    """A chunk's progress reported as progress of the whole pass (counts of earlier chunks added)."""
    if progress is None:
        return None

    def report(p: Progress) -> None:
        progress(Progress(before.done + p.done, before.total, before.sent + p.sent, before.failed + p.failed,
                          p.last))

    return report


def _file_contact(tx: Tx, address_id: int, row: Any, names: str, delivery: Any, link: str) -> None:
    """One TS contact per address and send; later recipients of the same send are added to it."""
    source = f"teams:{row.batch_id}"
    existing = tx.rows("SELECT id, recipients FROM contacts WHERE address_id = ? AND source = ?", [address_id, source])
    if existing:
        contact_id, before = existing[0]
        merged = ", ".join(n for n in dict.fromkeys([*(before or "").split(", "), *names.split(", ")]) if n)
        tx.execute("UPDATE contacts SET recipients = ? WHERE id = ?", [merged, contact_id])
        return
    new_id = int(tx.one("SELECT coalesce(max(id), 0) + 1 FROM contacts"))
    tx.execute(
        "INSERT INTO contacts (id, address_id, happened_at, type_code, subject, notes, user_name, source, "
        "recipients, message_id, link) VALUES (?, ?, coalesce(?, current_timestamp), 'TS', ?, ?, ?, ?, ?, ?, ?)",
        [new_id, address_id, delivery.at, row.contact_subject, row.contact_notes, row.user_name, source, names,
         delivery.message_id, link],
    )


def message_link(chat_id: str | None, message_id: str | None) -> str:
    """Teams' deep link to a chat message."""
    context = quote(json.dumps({"contextType": "chat"}, separators=(",", ":")))
    return f"https://teams.microsoft.com/l/message/{quote(chat_id or '', safe=':@')}/{message_id}?context={context}"


class GraphChatGateway:
    """The delivery engine's view of Graph: chats, one post, and reading a chat back.

    Args:
        graph: the Graph client; its :class:`~crmkit.graph.ServerClock` places our times on Graph's clock.
        clock_skew: the read-back's margin while no ``Date`` header has been seen (the clocks' offset unknown).
        margin: the margin once the offset is measured: Graph's front end (``Date``) and the Teams store
            (message stamps) are different machines, and a ``Date`` may be cached a moment.
    """

    def __init__(self, graph: GraphClient, *, clock_skew: timedelta = timedelta(minutes=5),
                 margin: timedelta = timedelta(seconds=5)) -> None:
        self.aio = graph.aio
        self.clock_skew = clock_skew
        self.margin = margin

    def window_start(self, since: datetime) -> pd.Timestamp:
        """``since`` (naive UTC, our clock) as the earliest server stamp a message posted after it can carry."""
        bounds = self.aio.clock.bounds()
        if bounds is None:
            return pd.Timestamp(since) - self.clock_skew
        return pd.Timestamp(since) + pd.Timedelta(seconds=bounds[0]) - self.margin

    async def ensure_chat(self, kind: str, members: list[str], topic: str | None) -> str:
        if kind == "oneOnOne":
            chat = await self.aio.get_or_create_chat(members[0], members[1])
        else:
            chat = await self.aio.get_or_create_group_chat(members, topic=topic)  # one chat per group
        return str(chat["id"])

    async def post_message(self, chat_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        from ..errors import GraphError

        try:
            return await self.aio.post_message(chat_id, payload)
        except GraphError as exc:
            if exc.status is None or exc.status >= 500:
                raise Ambiguous(str(exc)) from exc
            raise

    async def find_marker(self, chat_id: str, marker: str, payload: dict[str, Any], since: datetime) -> str | None:
        """Read back the chat's messages since ``since`` (our clock), newest first, looking for ``marker``.

        Graph is asked for that window only (``$orderby=lastModifiedDateTime desc`` with ``$filter=
        lastModifiedDateTime gt …``, as chat-list-messages documents; an edit only makes a message
        newer), so the read costs pages for the messages in the window, not for the chat's history.
        No upper bound: Graph may store a post after we stopped waiting for its answer.
        """
        path: str | None = f"/chats/{quote(chat_id, safe=':@')}/messages"
        floor = self.window_start(since)
        params: dict[str, Any] | None = {"$top": 50, "$orderby": "lastModifiedDateTime desc",
                                         "$filter": f"lastModifiedDateTime gt {_graph_time(floor)}"}
        content = payload["body"]["content"]
        while path is not None:
            data = await self.aio.json("GET", path, params=params, chat_id=chat_id, paced=True)
            # The first answer may bring the first Date seen: the floor tightens, never below the asked one.
            floor = max(floor, self.window_start(since))
            for m in data.get("value") or []:
                ids = {a.get("id") for a in m.get("attachments") or []}
                if marker in ids or (not ids and (m.get("body") or {}).get("content") == content
                                     and m.get("subject") == payload.get("subject")):
                    return str(m["id"])
                stamp = m.get("lastModifiedDateTime") or m.get("createdDateTime") or "1970-01-01T00:00:00Z"
                if pd.Timestamp(stamp).tz_convert(None) <= floor:
                    return None  # older than the window (a server that ignored the filter): not there
            path, params = data.get("@odata.nextLink"), None
        return None


def _graph_time(t: pd.Timestamp) -> str:
    """An OData DateTimeOffset literal in UTC, cut (not rounded) to milliseconds."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

