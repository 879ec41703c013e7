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

This module is the service that runs a send; each part has its own module beside it: the options
(:mod:`~crmkit.teams.options`), planning the messages (:mod:`~crmkit.teams.planning`), staging them and
making the batch (:mod:`~crmkit.teams.staging`), the outbox (:mod:`~crmkit.teams.outbox`), delivery
(:mod:`~crmkit.teams.delivery`) through the chat gateway and Teams' pacing (:mod:`~crmkit.teams.gateway`),
and results and what an outcome writes (:mod:`~crmkit.teams.results`; contacts through :mod:`crmkit.contacts`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd

from ..errors import ValidationError, catalog_error
from ..graph import GraphNotFound, RetryPolicy
from . import display_format, recipients
from .activation import switched_off
from .channels import joined_channels, resolve_channel
from .compose import check_message_text, prefixed_subject
from .delivery import DeliveryEngine, Progress, deliver_shared, progress_after
from .file_send import plan_file
from .gateway import GraphChatGateway, teams_limiter
from .options import SendOptions
from .outbox import cancel, keyed_batch, new_holder, open_ids, open_rows, pending_batches, purge_abandoned_staging
from .planning import PLAN_CHUNK, SendPlan, address_ids, plan_ids
from .results import RESULT_COLUMNS, message_link, record_outcome
from .results import results as batch_results
from .staging import activate, enqueue_plan, stage, unstage

if TYPE_CHECKING:
    from ..auth import Microsoft365
    from ..crm import CRM
    from ..graph import GraphClient
    from ..store import Tx

# The service, and the names importers used before send.py was split (planning, staging, results, gateway).
__all__ = ["GraphChatGateway", "SendOptions", "SendPlan", "TeamsService", "enqueue_plan", "message_link",
           "teams_limiter"]

MAX_PASSES = 5
DELIVER_CHUNK = 1_000  # outbox rows loaded and handed to the delivery engine at a time
READ_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_IDEMPOTENCY_KEY = 200  # characters; a compose's key is a uuid, a notebook's whatever the author chose
USER_FIELDS = ["id", "displayName", "userPrincipalName", "mail", "accountEnabled", "userType"]


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
                self._post_graph = self._sender_graph(retry=RetryPolicy(), limiter=teams_limiter(self.crm.store))
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

    def channels(self) -> pd.DataFrame:
        """The channels of the teams the sender has joined (the picker lists them beside people).

        Columns: ``key`` (what ``to=`` takes, ``channel:<team id>/<channel id>``), ``team``, ``channel``,
        ``membership`` (standard / private), ``team_id``, ``channel_id``.

        Raises:
            SignInRequired: the user has no Microsoft 365 account for Teams yet.
        """
        return pd.DataFrame(joined_channels(self.graph()),
                            columns=["key", "team", "channel", "membership", "team_id", "channel_id"])

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
        def person(r: recipients.Recipient) -> dict[str, Any] | None:
            user = _look_up(graph, r)
            if user is None:
                problems.append(("error.msg.not_in_directory", r.label))
            elif user.get("accountEnabled") is False:
                problems.append(("error.msg.account_disabled", recipients.shown(user.get("displayName") or r.key)))
            else:
                return user
            refused.append(r.key)
            return None

        for r in wanted:
            if r.kind == "channel":  # read in full below: the sender's joined channel, its members, @mentions
                mentioned = [u for u in map(person, r.mention) if u is not None]
                target = resolve_channel(graph, r, mentioned)
                if target is None:
                    problems.append(("error.msg.channel_not_joined", r.label))
                    refused.append(r.key)
                else:
                    people.setdefault(r.key, target)
                continue
            user = person(r)
            if user is not None:
                people.setdefault(str(user["id"]).lower(), user)  # one person named twice counts once
        if problems:
            raise recipients.invalid(problems, refused, saving=saving)
        return list(people.values())

    # -- planning -----------------------------------------------------------------------------------

    def plan(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "", *,
        options: SendOptions | None = None, channel: str = "teams_manual", trigger: str = "manual",
        me: dict[str, Any] | None = None, recipients: list[dict[str, Any]] | None = None,
    ) -> SendPlan:
        """Work out every message of a send without sending or writing anything."""
        ids, context = self._prepare(records, to, subject, message, options, me, recipients)
        if context[0].one_file(len(ids)):  # a large set as one shared workbook (teams/file_send.py)
            return plan_file(self.crm, ids, *context, channel=channel, trigger=trigger)
        return plan_ids(self.crm, ids, *context, channel=channel, trigger=trigger)

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
        if context[0].one_file(len(ids)):  # one workbook of every record: planned whole, not in chunks
            yield plan_file(self.crm, ids, *context, channel=channel, trigger=trigger)
            return
        for start in range(0, len(ids), max(1, size)):
            yield plan_ids(self.crm, ids[start:start + size], *context, channel=channel, trigger=trigger)

    def _prepare(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str,
        options: SendOptions | None, me: dict[str, Any] | None, recipients: list[dict[str, Any]] | None,
    ) -> tuple[list[int], tuple[Any, ...]]:
        options = options or SendOptions()
        ids = list(dict.fromkeys(address_ids(self.crm, records)))
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

    # -- sending ------------------------------------------------------------------------------------

    def preview(self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "",
                **options: Any) -> pd.DataFrame:
        """Exactly what :meth:`send` would post, one row per message; nothing is sent or logged."""
        self.require_ready()
        return self.plan(records, to, subject, message, options=SendOptions.of(**options)).frame()

    def send(
        self, records: Any, to: Sequence[str | dict[str, Any]], subject: str, message: str = "", *,
        record_contact: bool = False, progress: Callable[[Progress], None] | None = None,
        cancel_event: threading.Event | None = None, idempotency_key: str | None = None, deliver: bool = True,
        **options: Any,
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
            deliver: False queues the send: the batch is made, its messages left pending for ``crmkit worker``
                processes (PostgreSQL) or a later :meth:`resume`; the result shows them pending.
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
            # every chunk planned; its rows inert in the outbox
            staging, summary, staged = stage(self.crm.store, chunks)
            try:
                if deliver:
                    self.resume()  # an earlier interrupted send goes first, so nothing overtakes it
            except BaseException:
                unstage(self.crm.store, staging)
                raise
            batch_id, made = activate(self.crm.store, staging, summary, staged, user=self.crm.user.name,
                                      account=self.sender_account, mark_used=self._mark_used, idempotency_key=key)
            if not made:  # another process made the batch for this key meanwhile
                return self._repeat(batch_id, progress=progress, cancel_event=cancel_event)
            if not deliver:
                return self.results([batch_id])
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

    def resume(self, *, progress: Callable[[Progress], None] | None = None,
               cancel_event: threading.Event | None = None) -> pd.DataFrame:
        """Deliver what an interrupted send left (pending or unconfirmed), each message exactly once.

        Rows staged by a send whose planning died with its process are deleted first: that send never
        started, so they are never delivered.
        """
        purge_abandoned_staging(self.crm.store)
        # Only this sender's own batches: a campaign batch must never go out as the user's account.
        channels = ["teams_campaign"] if self.sender == "campaign" else ["teams_manual"]
        batches = pending_batches(self.crm.store, user=self.crm.user.name, channels=channels)
        if not batches:
            return pd.DataFrame(columns=RESULT_COLUMNS)
        return self.deliver(batches, progress=progress, cancel_event=cancel_event)

    def deliver(self, batch_ids: list[str], *, progress: Callable[[Progress], None] | None = None,
                cancel_event: threading.Event | None = None) -> pd.DataFrame:
        if self.crm.store.dialect == "postgresql":  # workers may share the outbox: claim rows (issue 15)
            graph = self._delivery_graph()
            deliver_shared(self.crm.store, graph, GraphChatGateway(graph), batch_ids, holder=new_holder("sender"),
                           side_effects=record_outcome, progress=progress, cancel=cancel_event)
            return self.results(batch_ids)
        # A pass can leave messages unconfirmed (no answer, read-back failed); another pass reconciles
        # them, as long as passes make progress. A pass loads DELIVER_CHUNK rows at a time.
        for _ in range(MAX_PASSES):
            ids = open_ids(self.crm.store, batch_ids)
            if not ids:
                break
            graph = self._delivery_graph()
            engine = DeliveryEngine(self.crm.store, GraphChatGateway(graph), record_outcome)
            counts = Progress(0, len(ids), 0, 0)
            progressed = False
            for start in range(0, len(ids), DELIVER_CHUNK):
                rows = open_rows(self.crm.store, ids[start:start + DELIVER_CHUNK])
                if not len(rows):
                    continue
                done = graph.submit(engine.run(rows, progress=progress_after(progress, counts),
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
        return batch_results(self.crm.store, batch_ids)

    def file_replies(self) -> pd.DataFrame:
        """File the replies in Teams to this sender's messages on their records, each once (issue 17 part 3).

        One pass of :mod:`crmkit.teams.replies` over the chats (and channel posts) this sender posted to in the last
        30 days, read with the sender's token (the user's Teams account; the campaign account for ``sender=
        "campaign"``), paced at Teams' limits. Returns one row per address and reply filed (``REPLY_COLUMNS``:
        address_id, contact_id, author_name, author_id, created_at, text, reply_id, ...); ``attrs``: requests,
        conversations, failed (conversations to read again next time).

        Raises:
            PermissionDenied: the user lacks ``teams.send``.
            IntegrationDisabled: the integration is off, or the setting ``teams.file_replies`` is.
            SignInRequired: there are messages to look at but no Teams account.
        """
        from .replies import check_ready, reply_pass

        check_ready(self.crm)
        own = self.sender == "user"
        return reply_pass(self.crm, self._delivery_graph, channels=["teams_manual"] if own else ["teams_campaign"],
                          user=self.crm.user.name if own else None).frame()


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

