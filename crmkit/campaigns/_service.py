"""Campaigns, activities, reactions, reaction actions and their runs: ``Campaigns(crm)``.

Editing needs ``campaign.admin``; recording reactions and reading need only a CRM user. Recording
a reaction creates its action runs in the same transaction, keyed by (action, recorded reaction),
so a run exists exactly once. Immediate runs are delivered right away by the recording call;
later ones by ``crmkit worker`` (see :mod:`crmkit.campaigns.worker`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import NotFound, ValidationError, catalog_error
from ..i18n import LANGUAGES, t
from ..teams import recipients
from ..teams.options import CAMPAIGN_OPTIONS, CHOICES, DEFAULTS, campaign_columns, check_choice
from ..teams.outbox import utcnow
from ..text_rules import check_text
from ._runner import Claimer, RunOutcome, claim_columns, claim_due, execute_run
from ._schema import TIMINGS
from ._template import check_template

if TYPE_CHECKING:
    from ..auth import CampaignAccountInfo
    from ..session import Session
    from ..store import Tx
    from ..teams.send import TeamsService

__all__ = ["ACTION_DEFAULTS", "ACTIVITY_KINDS", "Campaigns", "RecordResult", "TeamsAction"]

ACTIVITY_KINDS = ("mailing", "call", "email", "visit", "event", "other")
MAX_RECIPIENTS = 50
RIGHT = "campaign.admin"
# The recording process keeps its claim this long; a worker on another machine takes over only after.
SESSION_CLAIM_TTL = 900.0

# Editable fields of a "Send message in Microsoft Teams" action and their defaults; the send options and
# their defaults come from crmkit.teams.options.
ACTION_DEFAULTS: dict[str, Any] = {
    "recipients": [], "subject": "", "message": "", "timing": "immediately", "delay": None, "at": None,
    **{name: DEFAULTS[name] for name in CAMPAIGN_OPTIONS}, "skip_blocked": True, "active": True,
}


@dataclass(frozen=True)
class TeamsAction:
    """A reaction action of type "Send message in Microsoft Teams" (Nachricht in Microsoft Teams versenden).

    ``delay`` is set for timing ``delay``; ``at`` (naive UTC) for timing ``at``. The sender is
    always the system's one campaign account.
    """

    id: int
    reaction_id: int
    description: str
    recipients: list[dict[str, str]]
    subject: str
    message: str
    timing: str
    delay: timedelta | None
    at: datetime | None
    record_contact: bool
    include_record: bool
    record_format: str
    chat: str
    importance: str
    skip_blocked: bool
    purpose: str | None
    language: str | None
    active: bool


@dataclass
class RecordResult:
    """What recording a reaction did.

    Attributes:
        recorded: address id → recorded-reaction id (new or the earlier one).
        new: addresses recorded now; ``already``: recorded before (no new runs).
        runs: ids of the runs created now.
        outcomes: the immediate runs this call delivered.
    """

    recorded: dict[int, int] = field(default_factory=dict)
    new: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    outcomes: list[RunOutcome] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now().replace(microsecond=0)


def to_utc(value: datetime) -> datetime:
    """A naive UTC timestamp from an aware one, or from a naive one meant as local time."""
    return value.astimezone(UTC).replace(tzinfo=None)


def _text(value: Any, what: str, *, field: str, required: bool = True, limit: int = 200, lines: bool = False,
          bidi: bool = False) -> str | None:
    """Stripped text of ``field``; ``lines``: it may hold line breaks; ``bidi``: it may become a subject.

    ``what`` names the text in errors: the catalog's ``campaigns.what.<what>`` (»Der Kampagnenname«).
    """
    names = {f"what_{lang}": t(f"campaigns.what.{what}", lang) for lang in ("de", "en")}
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise catalog_error(ValidationError, "error.msg.text_required", **names)
        return None
    if not isinstance(value, str):
        raise catalog_error(ValidationError, "error.msg.text_type", type=type(value).__name__, **names)
    value = value.strip()
    if len(value) > limit:
        raise catalog_error(ValidationError, "error.msg.text_too_long", limit=limit, **names)
    return check_text(value, field, lines=lines, bidi=bidi, label_key=f"campaigns.{field}")


def _id(value: Any, what: str = "id") -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValidationError(f"A {what} is an integer, not {value!r}.")
    return int(value.__index__())


def _opt_id(value: Any, what: str = "id") -> int | None:
    """An optional id filter: None stays None (no filter), anything else must be an id."""
    return None if value is None else _id(value, what)


def _where(*filters: tuple[str, Any]) -> tuple[str, list[Any]]:
    """The `` WHERE a = ? AND …`` of the (condition, value) filters that are given (value not None), and
    their parameters in order: one builder for the optional filters of the history and run lists."""
    given = [(cond, value) for cond, value in filters if value is not None]
    return (" WHERE " + " AND ".join(c for c, _ in given) if given else ""), [v for _, v in given]


def _recipient_list(value: Any) -> list[Any]:
    """The recipients as given, each well-formed (checked before the directory is asked)."""
    if value is None:
        value = []
    elif isinstance(value, (str, dict)) or not isinstance(value, Iterable):
        value = [value]
    items = list(value)
    if not items:
        raise catalog_error(ValidationError, "error.msg.pick_recipient")
    if len(recipients.check(items, saving=True)) > MAX_RECIPIENTS:
        raise catalog_error(ValidationError, "error.msg.too_many_recipients", max=MAX_RECIPIENTS)
    return items


def _clean_action(values: dict[str, Any]) -> dict[str, Any]:
    """Validate a full set of action fields but the recipients; returns their column values."""
    unknown = set(values) - set(ACTION_DEFAULTS) - {"description"}
    if unknown:
        raise ValidationError(f"Unknown action fields {sorted(unknown)}; known: description, "
                              f"{', '.join(ACTION_DEFAULTS)}.")
    v = {**ACTION_DEFAULTS, **values}
    # The description is the subject when there is none: both are one line, without bidi controls.
    description = _text(v.get("description"), "action_description", field="description", bidi=True)
    subject = _text(v["subject"], "subject", field="subject", required=False, bidi=True) or description
    message = v["message"] or ""
    if not isinstance(message, str) or len(message) > 20_000:
        raise ValidationError("The message is text of at most 20,000 characters.")
    check_text(message, "message", lines=True, label_key="campaigns.message")
    check_template(subject or "")
    check_template(message)
    timing = v["timing"]
    if timing not in TIMINGS:
        raise ValidationError(f"timing must be one of {TIMINGS}, not {timing!r}.")
    delay_seconds = run_at = None
    if timing == "delay":
        delay = v["delay"]
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            raise ValidationError("A delayed action needs delay= a positive timedelta or number of seconds.")
        delay_seconds = round(seconds)
    elif timing == "at":
        if not isinstance(v["at"], datetime):
            raise ValidationError("An action at a date and time needs at= a datetime.")
        run_at = to_utc(v["at"]).replace(microsecond=0)
    for name in CAMPAIGN_OPTIONS:
        if name in CHOICES:
            check_choice(name, v[name])
    check_choice("language", v["language"], (None, *LANGUAGES))
    for name in (*(n for n in CAMPAIGN_OPTIONS if isinstance(DEFAULTS[n], bool)), "skip_blocked", "active"):
        if not isinstance(v[name], bool):
            raise ValidationError(f"{name} is True or False.")
    return {  # without the recipients: the caller resolves them in the directory (or keeps the stored ones)
        "description": description, "subject": subject, "message": message, "timing": timing,
        "delay_seconds": delay_seconds,
        "run_at": run_at, **{name: v[name] for name in CAMPAIGN_OPTIONS},
        "purpose": _text(v["purpose"], "purpose", field="purpose", required=False, limit=500),
        "skip_blocked": v["skip_blocked"], "active": v["active"],
    }


def _action(row: dict[str, Any]) -> TeamsAction:
    return TeamsAction(
        id=int(row["id"]), reaction_id=int(row["reaction_id"]), description=row["description"],
        recipients=json.loads(row["recipients"]), subject=row["subject"], message=row["message"],
        timing=row["timing"],
        delay=None if row["delay_seconds"] is None else timedelta(seconds=int(row["delay_seconds"])),
        at=row["run_at"], **campaign_columns(row), skip_blocked=bool(row["skip_blocked"]),
        active=bool(row["active"]),
    )


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return list(frame.astype(object).where(frame.notna(), None).to_dict("records"))


class Campaigns:
    """Campaigns of a CRM session.

    Args:
        crm: the session; its user needs ``campaign.admin`` to edit, nothing to record reactions.
        teams: the Teams service that sends as the campaign account (built on first use).
    """

    def __init__(self, crm: Session, *, teams: TeamsService | None = None) -> None:
        self.crm = crm
        self._teams = teams
        self._lock = threading.Lock()
        self.claimer = Claimer.here("session", SESSION_CLAIM_TTL)

    def __repr__(self) -> str:
        return f"<Campaigns user={self.crm.user.name!r}>"

    @property
    def teams(self) -> TeamsService:
        """The Teams service sending as the campaign account."""
        with self._lock:
            if self._teams is None:
                from ..teams.send import TeamsService

                self._teams = TeamsService(self.crm, sender="campaign")
            return self._teams

    def close(self) -> None:
        if self._teams is not None:
            self._teams.close()

    def sender(self) -> CampaignAccountInfo | None:
        """The default sender of every Teams action: the system's campaign account (None if not set up)."""
        return self.teams.m365.campaign.info()

    def directory(self, text: str = "", *, limit: int = 25) -> pd.DataFrame:
        """People from the directory for the recipients picker (searched as the campaign account)."""
        return self.teams.directory(text, limit=limit)

    def _resolve_recipients(self, value: Any) -> str:
        """The recipients column: each person as the directory has them (object id, name, UPN), once.

        Checked when the action is saved, not first when it runs: a malformed, unknown or disabled
        recipient is refused here and nothing is saved. Looked up as the campaign account, like the picker.
        """
        people = self.teams.resolve(_recipient_list(value), saving=True)
        out = []
        for p in people:
            entry = {"id": str(p["id"]), "name": str(p.get("displayName") or p.get("userPrincipalName") or p["id"])}
            if p.get("userPrincipalName"):
                entry["upn"] = str(p["userPrincipalName"])
            if p.get("kind") == "channel" and p.get("mention"):  # a channel's @mentions, by object id
                entry["mention"] = [str(m["id"]) for m in p["mention"]]
            out.append(entry)
        return json.dumps(out, ensure_ascii=False)

    # -- campaigns, activities, participants, reactions -------------------------------------------------

    def campaigns(self) -> pd.DataFrame:
        return self.crm.store.df(
            "SELECT c.id, c.name, c.description, count(a.id) AS activities, c.modified_at FROM campaigns c "
            "LEFT JOIN campaign_activities a ON a.campaign_id = c.id "
            "GROUP BY c.id, c.name, c.description, c.modified_at ORDER BY c.id")

    def add_campaign(self, name: str, description: str | None = None) -> int:
        """Create a campaign (needs ``campaign.admin``); returns its id."""
        self.crm.require(RIGHT)
        name_ = _text(name, "campaign_name", field="name")
        desc = _text(description, "description", field="description", required=False, limit=2000, lines=True)

        def run(tx: Tx) -> int:
            now, user = _now(), self.crm.user.name
            new_id = int(tx.one(
                "INSERT INTO campaigns (name, description, created_at, created_by, modified_at, modified_by) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", [name_, desc, now, user, now, user]))
            self.crm.audit(tx, "campaigns", f"campaign:{new_id}", None, {"name": name_})
            return new_id

        return self.crm.store.write(run)

    def rename_campaign(self, campaign_id: int, name: str, description: str | None = None) -> None:
        self.crm.require(RIGHT)
        campaign_id = _id(campaign_id, "campaign id")
        name_ = _text(name, "campaign_name", field="name")
        desc = _text(description, "description", field="description", required=False, limit=2000, lines=True)

        def run(tx: Tx) -> None:
            old = tx.one("SELECT name FROM campaigns WHERE id = ?", [campaign_id])
            if old is None:
                raise catalog_error(NotFound, "error.msg.no_campaign", id=campaign_id)
            tx.execute("UPDATE campaigns SET name = ?, description = ?, modified_at = ?, modified_by = ? WHERE id = ?",
                       [name_, desc, _now(), self.crm.user.name, campaign_id])
            self.crm.audit(tx, "campaigns", f"campaign:{campaign_id}", {"name": old}, {"name": name_})

        self.crm.store.write(run)

    def activities(self, campaign_id: int | None = None) -> pd.DataFrame:
        where, params = ("WHERE a.campaign_id = ?", [_id(campaign_id)]) if campaign_id is not None else ("", [])
        return self.crm.store.df(
            "SELECT a.id, a.campaign_id, c.name AS campaign, a.name, a.kind, a.description, "
            "(SELECT count(*) FROM campaign_participants p WHERE p.activity_id = a.id) AS participants "
            f"FROM campaign_activities a JOIN campaigns c ON c.id = a.campaign_id {where} ORDER BY a.id", params)

    def add_activity(self, campaign_id: int, name: str, *, kind: str = "mailing",
                     description: str | None = None) -> int:
        """Add an activity (a step such as a mailing or a call) to a campaign; returns its id."""
        self.crm.require(RIGHT)
        campaign_id = _id(campaign_id, "campaign id")
        name_ = _text(name, "activity_name", field="name")
        if kind not in ACTIVITY_KINDS:
            raise ValidationError(f"kind must be one of {ACTIVITY_KINDS}, not {kind!r}.")
        desc = _text(description, "description", field="description", required=False, limit=2000, lines=True)

        def run(tx: Tx) -> int:
            if not tx.one("SELECT count(*) FROM campaigns WHERE id = ?", [campaign_id]):
                raise catalog_error(NotFound, "error.msg.no_campaign", id=campaign_id)
            new_id = int(tx.one(
                "INSERT INTO campaign_activities (campaign_id, name, kind, description, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING id", [campaign_id, name_, kind, desc, _now(), self.crm.user.name]))
            self.crm.audit(tx, "campaigns", f"activity:{new_id}", None, {"campaign": campaign_id, "name": name_})
            return new_id

        return self.crm.store.write(run)

    def add_participants(self, activity_id: int, address_ids: Iterable[int]) -> int:
        """Make addresses participants of an activity; returns how many were new."""
        self.crm.require(RIGHT)
        activity_id = _id(activity_id, "activity id")
        ids = list(dict.fromkeys(_id(a, "address id") for a in address_ids))
        if not ids:
            return 0

        def run(tx: Tx) -> int:
            if not tx.one("SELECT count(*) FROM campaign_activities WHERE id = ?", [activity_id]):
                raise catalog_error(NotFound, "error.msg.no_activity", id=activity_id)
            found = {r[0] for r in tx.rows("SELECT id FROM addresses WHERE id IN (SELECT unnest(?::BIGINT[]))", [ids])}
            missing = [a for a in ids if a not in found]
            if missing:
                raise catalog_error(NotFound, "error.msg.no_addresses", ids=missing[:10])
            before = int(tx.one("SELECT count(*) FROM campaign_participants WHERE activity_id = ?", [activity_id]))
            tx.execute(
                "INSERT INTO campaign_participants SELECT ?, unnest(?::BIGINT[]), ?, ? ON CONFLICT DO NOTHING",
                [activity_id, ids, _now(), self.crm.user.name])
            added = int(tx.one("SELECT count(*) FROM campaign_participants WHERE activity_id = ?", [activity_id]))
            return added - before

        return self.crm.store.write(run)

    def participants(self, activity_id: int) -> pd.DataFrame:
        """Participant addresses with their latest recorded reaction."""
        return self.crm.store.df(
            "SELECT ad.id, ad.company, ad.first_name, ad.last_name, ad.city, "
            "(SELECT re.name FROM campaign_recorded_reactions rr JOIN campaign_reactions re ON re.id = rr.reaction_id "
            " WHERE rr.activity_id = p.activity_id AND rr.address_id = p.address_id "
            " ORDER BY rr.recorded_at DESC, rr.id DESC LIMIT 1) AS reaction "
            "FROM campaign_participants p JOIN addresses ad ON ad.id = p.address_id WHERE p.activity_id = ? "
            "ORDER BY ad.id", [_id(activity_id, "activity id")])

    def reactions(self, activity_id: int) -> pd.DataFrame:
        return self.crm.store.df(
            "SELECT r.id, r.activity_id, r.name, "
            "(SELECT count(*) FROM campaign_actions a WHERE a.reaction_id = r.id AND a.active) AS actions "
            "FROM campaign_reactions r WHERE r.activity_id = ? ORDER BY r.id", [_id(activity_id, "activity id")])

    def add_reaction(self, activity_id: int, name: str) -> int:
        """Add a possible reaction (outcome) to an activity; returns its id."""
        self.crm.require(RIGHT)
        activity_id = _id(activity_id, "activity id")
        name_ = _text(name, "reaction_name", field="name")

        def run(tx: Tx) -> int:
            if not tx.one("SELECT count(*) FROM campaign_activities WHERE id = ?", [activity_id]):
                raise catalog_error(NotFound, "error.msg.no_activity", id=activity_id)
            if tx.one("SELECT count(*) FROM campaign_reactions WHERE activity_id = ? AND name = ?",
                      [activity_id, name_]):
                raise catalog_error(ValidationError, "error.msg.reaction_exists", name=repr(name_))
            new_id = int(tx.one(
                "INSERT INTO campaign_reactions (activity_id, name, created_at, created_by) VALUES (?, ?, ?, ?) "
                "RETURNING id", [activity_id, name_, _now(), self.crm.user.name]))
            self.crm.audit(tx, "campaigns", f"reaction:{new_id}", None, {"activity": activity_id, "name": name_})
            return new_id

        return self.crm.store.write(run)

    # -- reaction actions ----------------------------------------------------------------------------

    def actions(self, reaction_id: int) -> pd.DataFrame:
        """The actions of a reaction ("Vorgänge der Reaktion")."""
        return self.crm.store.df(
            "SELECT id, kind, description, timing, delay_seconds, run_at, active, recipients FROM campaign_actions "
            "WHERE reaction_id = ? ORDER BY id", [_id(reaction_id, "reaction id")])

    def action(self, action_id: int) -> TeamsAction:
        frame = self.crm.store.df("SELECT * FROM campaign_actions WHERE id = ?", [_id(action_id, "action id")])
        if frame.empty:
            raise NotFound(f"No reaction action with id {action_id}.")
        return _action(_records(frame)[0])

    def add_teams_action(self, reaction_id: int, description: str, *, recipients: Sequence[Any],
                         **options: Any) -> int:
        """Add "Send message in Microsoft Teams" to a reaction; returns the action id.

        Args:
            reaction_id: the reaction whose recording triggers the action.
            description: what the action is for (Beschreibung).
            recipients: directory users: ids or user names, or dicts with ``id`` and ``name``.
            **options: ``subject`` and ``message`` (templates with ``{company}``, ``{first_name}`` …;
                the subject defaults to the description), ``timing`` (``immediately``/``delay``/``at``)
                with ``delay`` (timedelta or seconds) or ``at`` (datetime), ``record_contact``,
                ``include_record``, ``record_format`` (card/table), ``chat`` (one_on_one/group),
                ``importance``, ``skip_blocked``, ``purpose``, ``language``, ``active``.

        Raises:
            PermissionDenied: without ``campaign.admin``.
            ValidationError: a bad option or an unknown placeholder; nothing is saved.
        """
        self.crm.require(RIGHT)
        reaction_id = _id(reaction_id, "reaction id")
        cols = _clean_action({**options, "description": description, "recipients": recipients})
        cols["recipients"] = self._resolve_recipients(recipients)

        def run(tx: Tx) -> int:
            if not tx.one("SELECT count(*) FROM campaign_reactions WHERE id = ?", [reaction_id]):
                raise catalog_error(NotFound, "error.msg.no_reaction", id=reaction_id)
            now, user = _now(), self.crm.user.name
            names = ["reaction_id", "kind", *cols, "created_at", "created_by", "modified_at", "modified_by"]
            values = [reaction_id, "teams_message", *cols.values(), now, user, now, user]
            new_id = int(tx.one(f"INSERT INTO campaign_actions ({', '.join(names)}) VALUES "
                                f"({', '.join('?' * len(names))}) RETURNING id", values))
            self.crm.audit(tx, "campaigns", f"action:{new_id}", None, _audit_view(cols))
            return new_id

        return self.crm.store.write(run)

    def update_action(self, action_id: int, **changes: Any) -> TeamsAction:
        """Change fields of an action (same names as :meth:`add_teams_action`); runs already created keep going."""
        self.crm.require(RIGHT)
        current = self.action(action_id)
        values = {k: getattr(current, k) for k in ("description", *ACTION_DEFAULTS)}
        if current.at is not None:  # stored as naive UTC; a naive datetime would be read as local time
            values["at"] = current.at.replace(tzinfo=UTC)
        cols = _clean_action({**values, **changes})
        stored = json.dumps(current.recipients, ensure_ascii=False)
        # New recipients are resolved like a new action's; unchanged ones are kept without a look-up, so
        # an action whose recipient has left can still be edited or switched off.
        changed = "recipients" in changes and changes["recipients"] != current.recipients
        cols["recipients"] = self._resolve_recipients(changes["recipients"]) if changed else stored

        def run(tx: Tx) -> None:
            sets = ", ".join(f"{k} = ?" for k in cols)
            tx.execute(f"UPDATE campaign_actions SET {sets}, modified_at = ?, modified_by = ? WHERE id = ?",
                       [*cols.values(), _now(), self.crm.user.name, current.id])
            self.crm.audit(tx, "campaigns", f"action:{current.id}",
                            _audit_view({**_clean_action(values), "recipients": stored}), _audit_view(cols))

        self.crm.store.write(run)
        return self.action(current.id)

    # -- recording reactions ---------------------------------------------------------------------------

    def record_reaction(self, reaction_id: int, address_ids: int | Iterable[int], *, notes: str | None = None,
                        deliver: bool = True) -> RecordResult:
        """Record that participant addresses reacted; create the reaction's action runs exactly once.

        Recording the same reaction for an address again changes nothing. With ``deliver`` the
        immediate runs are sent now, in this process; delayed ones wait for ``crmkit worker``.

        Raises:
            NotFound: no such reaction or address.
            ValidationError: an address is not a participant of the reaction's activity.
        """
        reaction_id = _id(reaction_id, "reaction id")
        ids = [_id(address_ids, "address id")] if not isinstance(address_ids, Iterable) else list(
            dict.fromkeys(_id(a, "address id") for a in address_ids))
        if not ids:
            raise catalog_error(ValidationError, "error.msg.pick_address")
        notes = _text(notes, "notes", field="notes", required=False, limit=2000, lines=True)
        def run(tx: Tx) -> tuple[list[int], RecordResult]:
            result = RecordResult()  # afresh in each attempt: a write retried after a conflict starts over
            activity_id = tx.one("SELECT activity_id FROM campaign_reactions WHERE id = ?", [reaction_id])
            if activity_id is None:
                raise catalog_error(NotFound, "error.msg.no_reaction", id=reaction_id)
            members = {r[0] for r in tx.rows(
                "SELECT address_id FROM campaign_participants WHERE activity_id = ? "
                "AND address_id IN (SELECT unnest(?::BIGINT[]))", [activity_id, ids])}
            outside = [a for a in ids if a not in members]
            if outside:
                raise ValidationError(f"Addresses {outside[:10]} are not participants of this activity; a campaign "
                                      "administrator adds them first. Nothing was recorded.")
            earlier = dict(tx.rows(
                "SELECT address_id, id FROM campaign_recorded_reactions WHERE reaction_id = ? "
                "AND address_id IN (SELECT unnest(?::BIGINT[]))", [reaction_id, ids]))
            actions = tx.rows("SELECT id, timing, delay_seconds, run_at FROM campaign_actions "
                              "WHERE reaction_id = ? AND active ORDER BY id", [reaction_id])
            now, utc = _now(), utcnow()
            claim_sql, claim_params = claim_columns(self.claimer)
            mine: list[int] = []
            for address_id in ids:
                if address_id in earlier:
                    result.recorded[address_id] = int(earlier[address_id])
                    result.already.append(address_id)
                    continue
                # Another session may record the same reaction at the same moment: with ON CONFLICT its commit
                # is a write conflict here (PostgreSQL's serialization failure), retried, and the retry finds
                # the row among the earlier ones; a plain INSERT would fail with a unique violation instead.
                recorded = tx.one(
                    "INSERT INTO campaign_recorded_reactions (activity_id, reaction_id, address_id, recorded_at, "
                    "recorded_by, notes) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                    [activity_id, reaction_id, address_id, now, self.crm.user.name, notes])
                if recorded is None:  # recorded since our read and visible to us: as if found earlier
                    result.recorded[address_id] = int(tx.one(
                        "SELECT id FROM campaign_recorded_reactions WHERE reaction_id = ? AND address_id = ?",
                        [reaction_id, address_id]))
                    result.already.append(address_id)
                    continue
                recorded_id = int(recorded)
                result.recorded[address_id] = recorded_id
                result.new.append(address_id)
                for action_id, timing, delay_seconds, run_at in actions:
                    due = utc + timedelta(seconds=int(delay_seconds)) if timing == "delay" else (
                        max(run_at, utc) if timing == "at" else utc)
                    run_id = tx.one(
                        "INSERT INTO campaign_runs (action_id, recorded_reaction_id, address_id, status, created_at, "
                        "due_at) VALUES (?, ?, ?, 'due', ?, ?) ON CONFLICT DO NOTHING RETURNING id",
                        [action_id, recorded_id, address_id, utc, due])
                    if run_id is None:
                        continue
                    result.runs.append(int(run_id))
                    if deliver and timing == "immediately":
                        # Claimed in the same transaction, so the worker leaves it to us while we live.
                        tx.execute(f"UPDATE campaign_runs SET {claim_sql} WHERE id = ?", [*claim_params, run_id])
                        mine.append(int(run_id))
            return mine, result

        mine, result = self.crm.store.write(run)
        for run_id in mine:
            result.outcomes.append(execute_run(self.crm, self.teams, self.claimer, run_id))
        return result

    def history(self, *, activity_id: int | None = None, address_id: int | None = None) -> pd.DataFrame:
        """Recorded reactions, newest first (the reaction history per participant)."""
        where, params = _where(("rr.activity_id = ?", _opt_id(activity_id, "activity id")),
                               ("rr.address_id = ?", _opt_id(address_id, "address id")))
        return self.crm.store.df(
            "SELECT rr.id, rr.recorded_at, rr.recorded_by, rr.address_id, rr.activity_id, rr.reaction_id, "
            f"re.name AS reaction, rr.notes FROM campaign_recorded_reactions rr JOIN campaign_reactions re "
            f"ON re.id = rr.reaction_id{where} ORDER BY rr.recorded_at DESC, rr.id DESC", params)

    # -- runs ------------------------------------------------------------------------------------------

    def runs(self, *, action_id: int | None = None, activity_id: int | None = None, status: str | None = None,
             limit: int = 1000) -> pd.DataFrame:
        """Action runs with status and error, newest first (times in UTC)."""
        where, params = _where(("r.action_id = ?", _opt_id(action_id, "action id")),
                               ("rr.activity_id = ?", _opt_id(activity_id, "activity id")),
                               ("r.status = ?", status))
        return self.crm.store.df(
            "SELECT r.id, r.action_id, a.description AS action, r.address_id, re.name AS reaction, r.status, "
            "r.due_at, r.attempts, r.next_attempt_at, r.finished_at, r.error, r.batch_id FROM campaign_runs r "
            "JOIN campaign_actions a ON a.id = r.action_id "
            "JOIN campaign_recorded_reactions rr ON rr.id = r.recorded_reaction_id "
            f"JOIN campaign_reactions re ON re.id = rr.reaction_id{where} ORDER BY r.id DESC LIMIT ?",
            [*params, int(limit)])

    def run_due(self, claimer: Claimer | None = None, *, limit: int = 20) -> list[RunOutcome]:
        """Claim and carry out the runs that are due now (what the worker does each round)."""
        claimer = claimer or self.claimer
        return [execute_run(self.crm, self.teams, claimer, run_id)
                for run_id in claim_due(self.crm, claimer, limit=limit)]

    def retry(self, run_ids: Iterable[int]) -> int:
        """Queue failed runs again now (needs ``campaign.admin``); a run with a batch resumes that batch."""
        self.crm.require(RIGHT)
        ids = [_id(r, "run id") for r in run_ids]
        if not ids:
            return 0

        def run(tx: Tx) -> int:
            n = int(tx.one(f"SELECT count(*) FROM campaign_runs WHERE status = 'failed' AND id IN "
                           f"({', '.join('?' * len(ids))})", ids))
            marks = ", ".join("?" * len(ids))
            # A batch with nothing delivered and nothing open is planned afresh; otherwise it is resumed,
            # so nobody gets the message twice.
            tx.execute(
                "UPDATE campaign_runs SET batch_id = NULL WHERE status = 'failed' AND batch_id IS NOT NULL "
                f"AND id IN ({marks}) AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.batch_id = campaign_runs.batch_id "
                "AND o.status IN ('sent', 'pending', 'sending'))", ids)
            tx.execute("UPDATE campaign_runs SET status = 'retry', next_attempt_at = ?, finished_at = NULL, error = "
                       f"NULL WHERE status = 'failed' AND id IN ({marks})", [utcnow(), *ids])
            self.crm.audit(tx, "campaigns", "runs.retry", None, ids)
            return n

        return self.crm.store.write(run)


def _audit_view(cols: dict[str, Any]) -> dict[str, Any]:
    return {k: (json.loads(v) if k == "recipients" else v) for k, v in cols.items() if k != "message"} | {
        "message_chars": len(cols.get("message") or "")}
