"""System settings: the campaign sender account ("Kampagnen Account einrichten") with "Testen…",
and the admin-consent panel (»Azure AD-Administratorzustimmung«: a checkbox per account and one for
the whole organisation).

Thin views over :class:`crmkit.auth.CampaignAccount` and the consent helpers. The password field
is emptied as soon as it is saved and is never filled from stored data. Rights are checked in
the core; the view only disables what the user may not change.
"""

from __future__ import annotations

import atexit
import html
import logging
import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ..auth import ADMIN_RIGHTS, DeviceSignIn, Microsoft365, TestResult
from ..auth.consent import ORGANIZATION, ConsentRequest, consent_redirect_uri
from ..errors import ValidationError
from ..i18n import t
from .accounts import SignInPanel
from .common import ErrorBox
from .rights_hint import disable_without

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["AdminConsentPanel", "CampaignAccountForm"]

log = logging.getLogger("crmkit.widgets")

# The consent panels' watch threads, stopped (and waited for) when the interpreter exits: a daemon
# thread killed in the middle of a DuckDB read aborts the process.
_watchers: set[tuple[threading.Event, threading.Thread]] = set()
_watchers_lock = threading.Lock()


@atexit.register
def _stop_watchers() -> None:
    with _watchers_lock:
        running = list(_watchers)
    for stop, _thread in running:
        stop.set()
    for _stop, thread in running:
        thread.join(timeout=5)

_OK = "color:#107c10"
_BAD = "color:#a4000f"


def _m365(crm: CRM | None, m365: Microsoft365 | None) -> Microsoft365:
    if m365 is not None:
        return m365
    if crm is None:
        raise ValueError("pass crm or m365")
    return Microsoft365(crm)


class CampaignAccountForm(widgets.VBox):
    """Set up, test and remove the campaign sender account.

    Attributes (for tests and dashboards): ``mode`` (toggle), ``email``, ``password``, ``save``,
    ``sign_in`` (device code), ``test``, ``remove``, ``current`` and ``result`` (HTML),
    ``panel`` (:class:`SignInPanel`), ``error``.
    """

    def __init__(self, crm: CRM | None = None, *, m365: Microsoft365 | None = None, lang: str | None = None) -> None:
        self.m365 = _m365(crm, m365)
        self.lang = lang = lang or self.m365.crm.language
        user = self.m365.crm.user
        self.may_change = any(user.can(r) for r in ADMIN_RIGHTS)
        self.title = widgets.HTML(f"<h3>{html.escape(t('teams.campaign_account', lang))}</h3>")
        self.current = widgets.HTML()
        self.current.add_class("crmkit-campaign-current")
        self.mode = widgets.ToggleButtons(
            options=[(t("campaign.mode.signed_in", lang), "signed_in"),
                     (t("campaign.mode.password", lang), "password")],
            value="signed_in", description=t("campaign.mode", lang), style={"description_width": "initial"},
        )
        self.signed_in_hint = widgets.HTML(f"<p>{html.escape(t('campaign.signed_in_hint', lang))}</p>")
        self.sign_in = widgets.Button(description=t("campaign.sign_in", lang), icon="sign-in", button_style="primary")
        self.sign_in.add_class("crmkit-campaign-sign-in")
        self.signed_in_box = widgets.VBox([self.signed_in_hint, self.sign_in])
        self.warning = widgets.HTML(
            f'<p role="note" style="color:#8a5300"><b>⚠</b> {html.escape(t("campaign.password_warning", lang))}</p>')
        self.email = widgets.Text(description=t("campaign.email", lang), placeholder=t("campaign.email_example", lang))
        self.password = widgets.Password(description=t("campaign.password", lang))
        self.save = widgets.Button(description=t("campaign.save", lang), icon="lock", button_style="primary")
        self.save.add_class("crmkit-campaign-save")
        self.password_box = widgets.VBox([self.warning, self.email, self.password, self.save],
                                         layout=widgets.Layout(display="none"))
        self.test = widgets.Button(description=t("teams.test", lang), icon="check")
        self.test.add_class("crmkit-campaign-test")
        self.remove = widgets.Button(description=t("campaign.remove", lang), icon="trash", button_style="danger")
        self.result = widgets.HTML()
        self.result.add_class("crmkit-campaign-result")
        self.panel = SignInPanel(lang)
        self.error = ErrorBox()
        self.rights_note = widgets.HTML(
            "" if self.may_change else f"<p><i>{html.escape(t('campaign.no_rights', lang))}</i></p>")
        # What the user may not change is disabled, the missing right in the tooltip; the core checks again.
        disable_without((self.mode, self.email, self.password, self.save, self.sign_in, self.test, self.remove),
                        user, ADMIN_RIGHTS, lang)
        self.mode.observe(self._mode_changed, "value")
        self.save.on_click(lambda _b: self.save_password())
        self.sign_in.on_click(lambda _b: self.start_sign_in())
        self.test.on_click(lambda _b: self.run_test())
        self.remove.on_click(lambda _b: self._remove())
        super().__init__([self.title, self.current, self.rights_note, self.mode, self.signed_in_box,
                          self.password_box, self.panel, widgets.HBox([self.test, self.remove]), self.result,
                          self.error])
        self.add_class("crmkit-campaign-account")
        info = self.m365.campaign.info()
        if info is not None:
            self.mode.value = info.mode
            if info.mode == "password":
                self.email.value = info.username
        self.refresh()

    def refresh(self) -> None:
        info = self.m365.campaign.info()
        if info is None:
            self.current.value = f"<p>{html.escape(t('campaign.not_set', self.lang))}</p>"
            self.remove.layout.display = "none"
            return
        self.remove.layout.display = None
        mode = t(f"campaign.mode.{info.mode}", self.lang)
        text = html.escape(t("campaign.current", self.lang, user=info.username, mode=mode))
        if info.last_test_at is not None:
            when = info.last_test_at.strftime("%d.%m.%Y %H:%M" if self.lang == "de" else "%Y-%m-%d %H:%M")
            verdict = t("campaign.reason.ok" if info.last_test_ok else "m365.failed", self.lang)
            style = _OK if info.last_test_ok else _BAD
            text += f'<br><span style="{style}">' + html.escape(
                t("campaign.last_test", self.lang, when=when, result=verdict)) + "</span>"
        self.current.value = f"<p>{text}</p>"

    def _mode_changed(self, _change: dict[str, Any]) -> None:
        password = self.mode.value == "password"
        self.password_box.layout.display = None if password else "none"
        self.signed_in_box.layout.display = "none" if password else None

    def save_password(self) -> None:
        """Store e-mail + password (encrypted); the field is emptied whatever happens."""
        password, self.password.value = self.password.value, ""
        try:
            self.m365.campaign.set_password(self.email.value, password)
            self.error.show(None, self.lang)
            self.result.value = f'<p style="{_OK}">{html.escape(t("campaign.password_saved", self.lang))}</p>'
        except Exception as exc:
            self.result.value = ""
            self.error.show(exc, self.lang)
        finally:
            del password
        self.refresh()

    def start_sign_in(self) -> DeviceSignIn | None:
        self.error.show(None, self.lang)
        try:
            sign_in = self.m365.campaign.start_sign_in()
        except Exception as exc:
            self.error.show(exc, self.lang)
            return None
        self.sign_in.disabled = True
        self.panel.start(sign_in)
        sign_in.add_done_callback(self._signed_in)
        return sign_in

    def _signed_in(self, sign_in: DeviceSignIn) -> None:
        user = sign_in.result.username if sign_in.status == "signed_in" else ""
        self.panel.finish(sign_in, t("m365.signed_in", self.lang, user=user))
        self.sign_in.disabled = not self.may_change
        self.refresh()

    def run_test(self) -> TestResult | None:
        """ "Testen…": get a token, read /me, show success or the precise reason."""
        self.error.show(None, self.lang)
        try:
            outcome = self.m365.campaign.test()
        except Exception as exc:
            self.error.show(exc, self.lang)
            return None
        consent_url = outcome.consent_url
        if consent_url and self.m365.crm.user.can("teams.admin"):
            # A link whose answer crmkit records itself (the consent tab shows it), not the bare one.
            try:
                consent_url = self.m365.start_consent(ORGANIZATION).url
            except Exception:  # the bare link still lets the admin consent
                log.warning("a consent link with a recorded state could not be made", exc_info=True)
        self.result.value = _result_html(outcome, self.lang, consent_url)
        self.refresh()
        return outcome

    def _remove(self) -> None:
        try:
            self.m365.campaign.clear()
            self.error.show(None, self.lang)
            self.result.value = ""
        except Exception as exc:
            self.error.show(exc, self.lang)
        self.refresh()


def _result_html(outcome: TestResult, lang: str, consent_url: str | None = None) -> str:
    headline = t(f"campaign.reason.{outcome.reason}", lang)
    style = _OK if outcome.ok else _BAD
    body = f'<p role="status" style="{style}"><b>{html.escape(headline)}</b><br>{html.escape(outcome.message)}'
    consent_url = consent_url or outcome.consent_url
    if consent_url:
        link = html.escape(consent_url)
        body += (f'<br><a href="{link}" target="_blank" rel="noopener">'
                 f"{html.escape(t('consent.org_link', lang))}</a>")
    return body + "</p>"


class _ConsentRow:
    """One »Administratorzustimmung« checkbox: ticked = granted; ticking it hands out a consent link."""

    def __init__(self, scope: str, label: str, css: str) -> None:
        self.scope = scope
        self.checkbox = widgets.Checkbox(description=label, indent=False, layout=widgets.Layout(width="auto"))
        self.link = widgets.HTML()
        self.status = widgets.HTML()
        self.status.add_class("crmkit-consent-status")
        self.request: ConsentRequest | None = None
        self.box = widgets.HBox([self.checkbox, self.link, self.status])
        self.box.add_class(css)


class AdminConsentPanel(widgets.VBox):
    """»Azure AD-Administratorzustimmung«: a checkbox for the whole organisation and one per account.

    Ticking a box makes a consent link (:meth:`Microsoft365.start_consent`) that opens the identity
    platform's page in a new tab; its redirect lands on crmkit's Voila server, which records the answer.
    While a link is open a background thread reads its request every ``poll_interval`` seconds and
    updates the boxes by itself; it stops when every link is answered or expired, or the panel closes.
    Where crmkit serves no redirect URI (a notebook outside Voila) the links use the native-client URI
    and the ``paste`` field takes the address the browser shows afterwards.
    """

    poll_interval = 1.0

    def __init__(self, crm: CRM | None = None, *, m365: Microsoft365 | None = None, lang: str | None = None) -> None:
        self.m365 = _m365(crm, m365)
        self.lang = lang = lang or self.m365.crm.language
        user = self.m365.crm.user
        self.may_record = user.can("teams.admin")
        self.redirect_uri = consent_redirect_uri()
        self.title = widgets.HTML(f"<h3>{html.escape(t('consent.title', lang))}</h3>")
        self.organization = _ConsentRow(ORGANIZATION, t("consent.org_checkbox", lang), "crmkit-consent-org")
        self.accounts_title = widgets.HTML(f"<p><b>{html.escape(t('consent.accounts', lang))}</b></p>")
        self.rows: dict[str, _ConsentRow] = {}
        self.accounts_box = widgets.VBox()
        self.account = widgets.Text(description=t("consent.account_link", lang),
                                    placeholder=t("consent.account_example", lang),
                                    style={"description_width": "initial"}, layout=widgets.Layout(width="32em"))
        self.add_account = widgets.Button(description=t("consent.add_account", lang), icon="plus")
        self.add_account.add_class("crmkit-consent-add-account")
        self.add_account.on_click(lambda _b: self.add(self.account.value))
        self.states = widgets.HTML()
        self.paste = widgets.Text(description=t("consent.paste", lang), style={"description_width": "initial"},
                                  layout=widgets.Layout(width="90%"), disabled=not self.may_record)
        self.record = widgets.Button(description=t("common.apply", lang), disabled=not self.may_record)
        self.record.on_click(lambda _b: self._record())
        self.hint = widgets.HTML(f'<p class="crmkit-muted">{html.escape(t("consent.paste_hint", lang))}</p>')
        self.paste_box = widgets.VBox([self.hint, widgets.HBox([self.paste, self.record])])
        if self.redirect_uri is not None:  # crmkit receives the answer itself: no address to paste
            self.paste_box.layout.display = "none"
        self.error = ErrorBox()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._syncing = False
        self._wire(self.organization)
        disable_without((self.paste, self.record, self.account, self.add_account, self.organization.checkbox),
                        user, ("teams.admin",), lang)
        super().__init__([self.title, self.organization.box, self.accounts_title, self.accounts_box,
                          widgets.HBox([self.account, self.add_account]), self.states, self.paste_box, self.error])
        self.add_class("crmkit-admin-consent")
        if self.may_record:
            for name in self.m365.consent_accounts()["account"]:
                self._row(str(name))
        self.refresh()

    # -- rows ----------------------------------------------------------------------------------------

    def _wire(self, row: _ConsentRow) -> None:
        row.checkbox.observe(lambda change: self._ticked(row, change), "value")

    def _row(self, account: str) -> _ConsentRow:
        name = account.strip().lower()
        if name not in self.rows:
            row = _ConsentRow(f"account:{name}", name, "crmkit-consent-account")
            self._wire(row)
            disable_without((row.checkbox,), self.m365.crm.user, ("teams.admin",), self.lang)
            self.rows[name] = row
            self.accounts_box.children = tuple(r.box for _, r in sorted(self.rows.items()))
        return self.rows[name]

    def add(self, account: str) -> _ConsentRow | None:
        """Add an account's checkbox (e.g. one whose sign-in asked for consent)."""
        name = account.strip()
        if "@" not in name or " " in name:
            self.error.show(ValidationError(t("consent.account_example", self.lang)), self.lang)
            return None
        self.error.show(None, self.lang)
        self.account.value = ""
        row = self._row(name)
        self.refresh()
        return row

    def _ticked(self, row: _ConsentRow, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        if change["new"]:
            self.start(row)
        elif row.request is not None:
            request, row.request = row.request, None
            try:
                self.m365.cancel_consent(request)
            except Exception as exc:
                self.error.show(exc, self.lang)
            row.link.value = row.status.value = ""

    def start(self, row: _ConsentRow) -> ConsentRequest | None:
        """Hand out a consent link for the row (the core checks ``teams.admin``) and watch its answer."""
        self.error.show(None, self.lang)
        try:
            request = self.m365.start_consent(row.scope)
        except Exception as exc:
            self.error.show(exc, self.lang)
            self._set(row.checkbox, False)
            return None
        row.request = request
        link = html.escape(request.url)
        row.link.value = (f'<a class="crmkit-consent-link" href="{link}" target="_blank" rel="noopener">'
                          f"{html.escape(t('consent.open_link', self.lang))}</a>")
        row.status.value = f'<span class="crmkit-muted">{html.escape(t("consent.pending", self.lang))}</span>'
        self._watch()
        return request

    # -- watching the store ------------------------------------------------------------------------------

    def _watch(self) -> None:
        with self._lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._stop.clear()
            self._watcher = threading.Thread(target=self._poll, name="crmkit-consent-watch", daemon=True)
            with _watchers_lock:
                _watchers.add((self._stop, self._watcher))
            self._watcher.start()

    def _pending(self) -> list[_ConsentRow]:
        return [r for r in (self.organization, *self.rows.values()) if r.request is not None]

    def _poll(self) -> None:
        try:
            while not self._stop.wait(self.poll_interval):
                if not self.check():
                    return
        finally:
            with _watchers_lock:
                _watchers.discard((self._stop, threading.current_thread()))

    def check(self) -> bool:
        """Read the open requests once; update the rows answered. True while some are still open."""
        still_open = False
        for row in self._pending():
            request = row.request
            assert request is not None
            try:
                status = self.m365.consent_request_status(request)
            except Exception:  # the file is busy or gone for a moment: look again next time
                still_open = True
                continue
            if status == "pending":
                still_open = True
                continue
            row.request = None
            row.link.value = ""
            self.refresh(keep_status=True)
            row.status.value = self._outcome_html(status)  # last: the answer is shown once the box shows it
        return still_open

    def _outcome_html(self, status: str) -> str:
        key = {"granted": "consent.state.granted", "declined": "consent.state.declined",
               "wrong_account": "consent.wrong_account"}.get(status, f"consent.refused.{status}")
        style = _OK if status == "granted" else _BAD
        return f'<span role="status" style="{style}">{html.escape(t(key, self.lang))}</span>'

    def close(self) -> None:
        self._stop.set()
        super().close()

    # -- showing the state ---------------------------------------------------------------------------------

    def _set(self, box: widgets.Checkbox, value: bool) -> None:
        self._syncing = True
        try:
            box.value = value
        finally:
            self._syncing = False

    def refresh(self, *, keep_status: bool = False) -> None:
        frame = self.m365.consent_states()
        states = {str(r.scope): str(r.state) for r in frame.itertuples()}
        for row in (self.organization, *self.rows.values()):
            state = states.get(row.scope, "unknown")
            if row.request is None:
                self._set(row.checkbox, state == "granted")
                if not keep_status or not row.status.value:
                    row.status.value = ("" if state == "unknown" else
                                        f'<span style="{_OK if state == "granted" else _BAD}">'
                                        f"{html.escape(t(f'consent.state.{state}', self.lang))}</span>")
            row.checkbox.disabled = not self.may_record or (state == "granted" and row.request is None)
        if frame.empty:
            self.states.value = (f"<p>{html.escape(t('consent.state', self.lang))}: "
                                 f"{html.escape(t('consent.state.unknown', self.lang))}</p>")
            return
        when = "%d.%m.%Y %H:%M" if self.lang == "de" else "%Y-%m-%d %H:%M"
        rows = "".join(
            f"<li>{html.escape(self._scope_name(str(r.scope)))}: "
            f"<b>{html.escape(t(f'consent.state.{r.state}', self.lang))}</b> "
            f"({html.escape(r.learned_at.strftime(when))}, {html.escape(str(r.learned_by))})</li>"
            for r in frame.itertuples())
        self.states.value = f"<p>{html.escape(t('consent.state', self.lang))}:</p><ul>{rows}</ul>"

    def _scope_name(self, scope: str) -> str:
        if scope.startswith("account:"):
            return scope.removeprefix("account:")
        name = t("consent.page.what.organization", self.lang)
        return name[:1].upper() + name[1:]

    def _record(self) -> None:
        """The fallback: the address the browser showed after a consent page whose redirect crmkit cannot serve."""
        try:
            self.m365.record_consent_redirect(self.paste.value)
            self.paste.value = ""
            self.error.show(None, self.lang)
            for row in self._pending():
                row.request = None
                row.link.value = ""
        except Exception as exc:
            self.error.show(exc, self.lang)
        self.refresh()
