"""State and logic of the compose dialog »Datensatz per Teams senden«, without any widget.

:class:`ComposeModel` holds the state and runs the work: the people-picker search (debounced, in a
timer thread), preview, send in a background thread with progress and cancel, the device-code sign-in
when the user has no Teams account yet, and the state machine over :data:`STATES`. It imports no
ipywidgets, so tests drive it directly; :class:`crmkit.widgets.compose.ComposeDialog` binds it to widgets.

Every check (integration on, ``teams.send``, recipients, policy) happens in the core
(:class:`crmkit.teams.send.TeamsService`); errors land in :attr:`ComposeModel.error`, typed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from traitlets import Any as AnyTrait
from traitlets import Bool, HasTraits, List, MetaHasTraits, Unicode, observe

from .. import privacy
from ..auth import DeviceSignIn, SignInRequired
from ..errors import CrmkitError
from ..teams.compose import new_compose_key
from ..teams.delivery import Progress
from ..teams.options import COMPOSE_CHOICES, DEFAULTS, FILE_THRESHOLD
from ..teams.recipients import parse_channel_key

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["STATES", "SUGGESTIONS", "ComposeModel", "person_label"]

log = logging.getLogger(__name__)

SUGGESTIONS = 8  # people shown under the search box
STATES = ("idle", "searching", "previewing", "sending", "cancelling", "signing_in", "done", "cancelled")


def _person(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of a directory user the dialog keeps (NaN from DataFrames becomes None)."""
    out = {}
    for key in ("id", "displayName", "userPrincipalName", "mail"):
        value = row.get(key)
        out[key] = None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    return out


def _channel(row: dict[str, Any]) -> dict[str, Any]:
    """A joined channel (a row of ``crm.teams.channels()``) as a picker entry beside people."""
    return {"id": str(row["key"]), "displayName": f"{row['team']} / {row['channel']}", "userPrincipalName": None,
            "mail": None, "kind": "channel"}


def person_label(person: dict[str, Any]) -> str:
    if person.get("kind") == "channel":
        return f"# {person.get('displayName')}"
    name = person.get("displayName") or person.get("userPrincipalName") or person.get("id") or "?"
    upn = person.get("userPrincipalName") or person.get("mail")
    return f"{name} ({upn})" if upn and upn != name else str(name)


# One trait per choice of crmkit.teams.options the dialog offers, with its default: a new choice needs no
# line here (the dialog makes its dropdown from the same list).
_ChoiceTraits = MetaHasTraits("_ChoiceTraits", (HasTraits,),
                              {name: Unicode(DEFAULTS[name]) for name in COMPOSE_CHOICES})


class ComposeModel(_ChoiceTraits):  # type: ignore[misc, valid-type]
    """State and logic of the compose dialog.

    Args:
        crm: the session; every check (integration on, ``teams.send``, policy) happens in its core.
        address_ids: the records to send.
        debounce: seconds the people picker waits after the last keystroke before it searches; 0
            searches at once, in the calling thread (tests).

    Traits (observe them): ``search_text``, ``searched`` (the text of the last finished search),
    ``suggestions`` (directory people and the sender's joined channels whose name holds the text, not yet
    chosen; a channel's entry has ``kind`` "channel"), ``channels`` (the joined channels, loaded with the first
    search), ``recipients`` (chosen people and channels), ``mention_people`` (channel posts @mention the chosen
    people, who then get no message of their own), ``subject``, ``message``, ``record_contact``, the send options
    ``chat``, ``mode``, ``record_format``, ``include_record``, ``importance``, ``purpose``;
    ``state`` (one of :data:`STATES`), ``progress`` (the last :class:`Progress`), ``preview`` and
    ``results`` (DataFrames from the core), ``error`` (the last failure, or None), ``sign_in``
    (a running :class:`DeviceSignIn`) and ``sign_in_status``; ``compose_key``, the idempotency key
    of the message being composed.

    A compose is sent once: its key goes with the send, so a second press (a double click, Send
    after the result is shown) yields the same batch and posts nothing. Once a send is over
    (``done``/``cancelled``) :meth:`send` does nothing until :meth:`new_message` starts a new
    compose with a new key.
    """

    search_text = Unicode("")
    searched = Unicode("")  # the text of the last finished search
    suggestions = List()
    recipients = List()
    channels = List()
    mention_people = Bool(False)
    subject = Unicode("")
    message = Unicode("")
    record_contact = Bool(False)
    include_record = Bool(DEFAULTS["include_record"])
    as_file = Bool(DEFAULTS["as_file"])  # offered above FILE_THRESHOLD records (file_offered)
    purpose = Unicode("")
    state = Unicode("idle")
    progress = AnyTrait(None)
    preview = AnyTrait(None)
    results = AnyTrait(None)
    error = AnyTrait(None)
    sign_in = AnyTrait(None)
    sign_in_status = Unicode("")
    compose_key = Unicode("")

    def __init__(self, crm: CRM, address_ids: Sequence[int], *, debounce: float = 0.3) -> None:
        super().__init__()
        self.crm = crm
        self.address_ids = [int(a) for a in address_ids]
        self.debounce = debounce
        self.language = crm.language
        self.prefix: str = crm.setting("teams.subject_prefix")
        self.purpose_required = privacy.policy(crm, "teams_manual") == "log_purpose"
        self._search_seq = 0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self._after_sign_in: Callable[[], Any] | None = None
        self.compose_key = new_compose_key()
        self._channels_loaded: bool | None = None

    # -- people picker -------------------------------------------------------------------------------

    @observe("search_text")
    def _search_text_changed(self, change: dict[str, Any]) -> None:
        with self._lock:
            self._search_seq += 1
            seq = self._search_seq
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        text = str(change["new"]).strip()
        if not text:
            self.suggestions = []
            self.searched = ""
            return
        if self.debounce <= 0:
            self._search(seq, text)
            return
        timer = threading.Timer(self.debounce, self._search, (seq, text))
        timer.daemon = True
        with self._lock:
            self._timer = timer
        timer.start()

    def search(self, text: str) -> None:
        """Search the directory now (what typing does after the debounce)."""
        with self._lock:
            self._search_seq += 1
            seq = self._search_seq
        self._search(seq, text.strip())

    def _search(self, seq: int, text: str) -> None:
        if not text:
            return
        try:
            frame = self.crm.teams.directory(text, limit=SUGGESTIONS + len(self.recipients))
            if self._channels_loaded is None:
                self._load_channels()
        except SignInRequired:
            self._need_sign_in(lambda: self.search(self.search_text))
            return
        except Exception as exc:  # a typed error shows as such; anything else shows generically
            self._fail(exc)
            return
        if seq != self._search_seq:
            return  # the user typed on; a newer search owns the list
        chosen = {p["id"] for p in self.recipients}
        people = [_person(r) for r in frame.to_dict("records")]
        channels = [c for c in self.channels if text.lower() in c["displayName"].lower()]
        self.suggestions = [p for p in [*channels, *people] if p["id"] not in chosen][:SUGGESTIONS]
        self.searched = text
        self.error = None

    def _load_channels(self) -> None:
        """The sender's joined channels, once per dialog (they change rarely). A refusal (say the tenant has not
        consented to Team.ReadBasic.All) leaves the picker to people: it is logged, not shown as the search's error."""
        self._channels_loaded = True
        try:
            self.channels = [_channel(r) for r in self.crm.teams.channels().to_dict("records")]
        except CrmkitError as exc:
            log.warning("compose: the joined channels could not be listed: %s", exc)

    def _suggested(self, person: dict[str, Any] | str) -> dict[str, Any] | None:
        """The current suggestion ``person`` is (by id, or a string matching its id, UPN or mail), if any."""
        if isinstance(person, dict):
            return next((p for p in self.suggestions if person.get("id") and p["id"] == person.get("id")), None)
        key = person.strip().lower() if isinstance(person, str) else None
        return next((p for p in self.suggestions if key and key in (
            str(p.get("id") or "").lower(), str(p.get("userPrincipalName") or "").lower(),
            str(p.get("mail") or "").lower())), None)

    def add_recipient(self, person: dict[str, Any] | str) -> None:
        """Choose a person: a current suggestion, a directory row, or anyone by UPN, e-mail or object id.

        What is not a current suggestion is resolved in the directory by the core (its form checked
        first), so each person is chosen once, by object id, however they were named.

        Raises:
            InvalidRecipient: not a user name, e-mail or object id, not in the directory, or disabled.
            SignInRequired: a look-up was needed and the user has no Teams account yet.
        """
        chosen = self._suggested(person)
        if chosen is None and isinstance(person, dict) and person.get("kind") == "channel":
            chosen = next((c for c in self.channels if c["id"] == person.get("id")), None)
        if chosen is None:
            [user] = self.crm.teams.resolve([person])
            chosen = _person(user) if user.get("kind") != "channel" else {**_person(user), "kind": "channel"}
        if str(chosen["id"]).lower() not in {str(p["id"]).lower() for p in self.recipients}:
            self.recipients = [*self.recipients, chosen]
        self.suggestions = [p for p in self.suggestions if p["id"] != chosen["id"]]

    def add_typed(self, text: str | None = None) -> bool:
        """»Hinzufügen«: add who the search box names (default: its text); False (and ``error``) if refused."""
        text = self.search_text if text is None else text
        try:
            self._require_account()
            self.add_recipient(text)
        except SignInRequired:
            self._need_sign_in(lambda: self.add_typed(text))
            return False
        except Exception as exc:
            self._fail(exc)
            return False
        self.error = None
        return True

    def remove_recipient(self, person_id: str) -> None:
        self.recipients = [p for p in self.recipients if p["id"] != person_id]

    # -- preview and send ----------------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The send options as keyword arguments of ``crm.teams.preview`` / ``send``."""
        return {**{name: getattr(self, name) for name in COMPOSE_CHOICES}, "include_record": self.include_record,
                "purpose": self.purpose.strip() or None, **({"as_file": True} if self.file_send else {})}

    @property
    def file_offered(self) -> bool:
        """Whether the dialog offers »Als eine Datei senden«: more records than :data:`FILE_THRESHOLD`."""
        return len(self.address_ids) > FILE_THRESHOLD

    @property
    def file_send(self) -> bool:
        """Whether Send makes one shared workbook instead of messages (offered and chosen)."""
        return self.as_file and self.file_offered

    def _to(self) -> list[str | dict[str, Any]]:
        """Who the core sends to: people by id, channels by key; with ``mention_people`` and a channel chosen,
        the chosen people are @mentioned in each channel post instead of getting a message of their own."""
        channels = [str(p["id"]) for p in self.recipients if p.get("kind") == "channel"]
        people = [str(p["id"]) for p in self.recipients if p.get("kind") != "channel"]
        if not (self.mention_people and channels and people):
            return [*people, *channels]
        out: list[str | dict[str, Any]] = []
        for key in channels:
            team, channel = parse_channel_key(key) or ("", "")
            out.append({"team": team, "channel": channel, "mention": people})
        return out

    def _require_account(self) -> None:
        """Raise SignInRequired before anything else when the user has no Teams account yet, so the
        sign-in comes first rather than after the form was checked."""
        if self.crm.teams.sender == "user" and self.crm.teams.m365.accounts.teams_account() is None:
            raise SignInRequired("Sign in to Microsoft 365 to use Teams.")

    def run_preview(self) -> pd.DataFrame | None:
        """Exactly what Send would post (nothing is sent or logged); also kept in ``preview``."""
        if self.busy or self.finished:
            return None
        self.error = None
        self.state = "previewing"
        try:
            self._require_account()
            self.preview = self.crm.teams.preview(self.address_ids, self._to(), self.subject, self.message,
                                                  **self.options())
            return self.preview
        except SignInRequired:
            self._need_sign_in(self.run_preview)
            return None
        except Exception as exc:
            self._fail(exc)
            return None
        finally:
            if self.state == "previewing":
                self.state = "idle"

    @property
    def busy(self) -> bool:
        return self.state in ("sending", "cancelling", "signing_in")

    @property
    def finished(self) -> bool:
        """This compose was sent (or its send cancelled): only :meth:`new_message` goes on."""
        return self.state in ("done", "cancelled")

    def new_message(self) -> bool:
        """Start a new compose for the same records: a new key, empty recipients, subject, text and
        purpose, no preview or result (the send options stay). False while a send is running."""
        with self._lock:
            if self.busy:
                return False
        # Still "done" until the end, so Send stays refused while the fields empty.
        self.error = None
        self.preview = self.results = self.progress = None
        self.recipients = []
        self.subject = self.message = self.purpose = ""
        self.record_contact = False
        self.compose_key = new_compose_key()
        self.state = "idle"
        return True

    def send(self, *, wait: bool = False) -> threading.Thread | None:
        """Send in a background thread (the kernel stays responsive); ``wait`` joins it (tests, scripts).

        Returns the worker thread, or None when a send or sign-in is already running.
        """
        with self._lock:
            if self.busy or self.finished:  # a second press of one compose sends nothing
                return None
            self.state = "sending"
        self.error = None
        self.results = None
        self.progress = Progress(0, 0, 0, 0)
        self._cancel = threading.Event()
        worker = threading.Thread(target=self._send_worker, args=(self._cancel,), name="crmkit-compose-send",
                                  daemon=True)
        self._worker = worker
        worker.start()
        if wait:
            worker.join()
        return worker

    def _send_worker(self, cancel: threading.Event) -> None:
        try:
            self._require_account()
            results = self.crm.teams.send(
                self.address_ids, self._to(), self.subject, self.message, record_contact=self.record_contact,
                progress=self._on_progress, cancel_event=cancel, idempotency_key=self.compose_key,
                **self.options(),
            )
        except SignInRequired:
            self.state = "idle"
            self._need_sign_in(self.send)
            return
        except Exception as exc:
            self._fail(exc)
            self.state = "idle"
            return
        self.results = results
        self.preview = None  # what the preview showed is sent now; a new message previews anew
        self.state = "cancelled" if cancel.is_set() else "done"

    def _on_progress(self, progress: Progress) -> None:
        # Called on the delivery loop's thread; a trait assignment is all the view needs.
        self.progress = Progress(progress.done, progress.total, progress.sent, progress.failed, progress.last)

    def cancel(self) -> None:
        """Stop a running send (sent messages stay sent and logged) or a waiting sign-in."""
        if self.state == "sending":
            self.state = "cancelling"
            self._cancel.set()
        elif self.state == "signing_in" and self.sign_in is not None:
            self.sign_in.cancel()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the background send ends (tests, scripts)."""
        if self._worker is not None:
            self._worker.join(timeout)

    def counts(self) -> dict[str, int]:
        """Rows of ``results`` per status."""
        if self.results is None or self.results.empty:
            return {}
        return {str(k): int(v) for k, v in self.results["status"].value_counts().items()}

    # -- sign-in ---------------------------------------------------------------------------------------

    def _need_sign_in(self, then: Callable[[], Any]) -> None:
        """The user has no Teams account: start the device-code sign-in, and ``then`` once signed in."""
        if self.sign_in is not None and not self.sign_in.done:
            self._after_sign_in = then
            return
        try:
            sign_in = self.crm.teams.m365.accounts.start_sign_in(use_teams=True)
        except Exception as exc:
            self._fail(exc)
            return
        self._after_sign_in = then
        self.state = "signing_in"
        self.sign_in_status = "waiting"
        self.sign_in = sign_in
        sign_in.add_done_callback(self._sign_in_done)

    def _sign_in_done(self, sign_in: DeviceSignIn) -> None:
        # Runs on the sign-in's thread.
        then, self._after_sign_in = self._after_sign_in, None
        self.state = "idle"
        self.sign_in_status = sign_in.status
        if sign_in.status == "signed_in" and then is not None:
            then()

    def _fail(self, exc: BaseException) -> None:
        if not isinstance(exc, CrmkitError):
            log.exception("compose dialog: unexpected error", exc_info=exc)
        self.error = exc
