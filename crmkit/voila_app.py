"""The Voila server the dashboards run on: Voila 0.5 with its kernels tied to their pages.

Stock Voila 0.5 leaves a kernel behind for every page view. Its page posts
``/voila/api/shutdown/<kernel>`` on ``beforeunload`` with the value of the ``_xsrf`` cookie, but a
dashboard page never gets that cookie (only templates rendered through the handler touch the token,
and a preheated page is rendered before its request), so jupyter_server's XSRF check refuses every
such request with 403 (voila#1458). Under traffic the kernels piled up until culling, ~220 MB each
over 1,000,000 addresses. Here:

* :class:`DashboardHandler` sets the ``_xsrf`` cookie on the dashboard page's response. The unload
  beacon then carries a matching token and cookie and passes the unchanged check; a request
  without them is still refused.
* :class:`PageKernelManager` shuts a kernel down ``page_gone_after`` seconds after the last page
  connected to it went away (a crashed tab, a killed browser, a lost network: no unload is sent),
  and keeps at most ``max_kernels``: before a page is served it ends the longest-idle kernels no page
  holds, and refuses the visit (503) if the kernels left are all held by open pages.

* :class:`CrmkitVoila` puts ``crmkit/voila_template/`` first on the template path: pages load nothing
  from a third-party host (stock lab templates link Font Awesome from a public CDN; Voila's bundle has it).
* :class:`ConsentHandler` at ``/crmkit/consent`` is the redirect URI of the consent links the settings
  dashboard hands out (organisation and per account): it records the answer through
  :func:`crmkit.auth.consent.answer_consent` and shows a short page in the user's language. The server
  tells its kernels that URI in ``CRMKIT_CONSENT_REDIRECT_URI`` (unless it is set already).

``voila_launch.voila_command`` runs this module instead of ``python -m voila``; everything else
(``dashboards/voila.json``, the command-line flags) is Voila's.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ensure_async, url_path_join
from traitlets import Bool, Float, Integer
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

from .auth.consent import CONSENT_PATH
from .i18n import DEFAULT_LANGUAGE, LANGUAGES, stored_language, t

__all__ = ["TEMPLATE_DIR", "ConsentHandler", "CrmkitVoila", "DashboardHandler", "PageKernelManager", "consent_page",
           "loading_resources", "main"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "voila_template"


class PageKernelManager(AsyncMappingKernelManager):
    """A kernel lives as long as its page: gone ``page_gone_after`` s after its last connection closed.

    Voila wraps this class with its preheat pool (``VoilaKernelManager``); pool kernels never had a
    page, so they are left alone here and only leave the pool for a visitor.
    """

    page_gone_after = Float(
        10.0, config=True,
        help="Seconds after the last page connection to a kernel closed before the kernel is shut down "
             "(a reload or a short network drop reconnects within it); 0 turns this off.",
    )
    max_kernels = Integer(
        0, config=True,
        help="Most kernels at once, the preheated pool included; 0 means no limit. Before a dashboard "
             "page is served, kernels no page holds are ended, longest idle first, to make room.",
    )
    pages_only = Bool(
        False, config=True,
        help="Apply page_gone_after, max_kernels and idle culling only to kernels started for a Voila page (a "
             "server that also runs JupyterLab, whose notebook kernels outlive their tab: crmkit hub's people's "
             "servers).",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._had_page: set[str] = set()  # kernels a page has connected to at least once
        self._reaps: dict[str, asyncio.TimerHandle] = {}
        self._page_kernels: set[str] = set()  # started for a Voila page (what pages_only limits this to)

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:
        kernel_id = await ensure_async(super().start_kernel(*args, **kwargs))
        # Voila's page handler starts its kernel with SERVER_SOFTWARE=voila/<version> in the env (CGI style), its
        # preheat pool one (for a page to come) with VOILA_PREHEAT=True
        env = kwargs.get("env") or {}
        if str(env.get("SERVER_SOFTWARE", "")).startswith("voila/") or env.get("VOILA_PREHEAT") == "True":
            self._page_kernels.add(kernel_id)
        return str(kernel_id)

    def _governed(self, kernel_id: str) -> bool:
        return not self.pages_only or kernel_id in self._page_kernels

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        # pages_only: MappingKernelManager's culling (a page fetched without a browser never connects) is for the
        # pages' kernels; a notebook's kernel in Lab stays until Lab or its person ends it
        if self._governed(kernel_id):
            await ensure_async(super().cull_kernel_if_idle(kernel_id))

    def notify_connect(self, kernel_id: str) -> None:
        super().notify_connect(kernel_id)
        self._had_page.add(kernel_id)
        handle = self._reaps.pop(kernel_id, None)
        if handle is not None:
            handle.cancel()

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if self.page_gone_after > 0 and not self._kernel_connections.get(kernel_id, 0) and self._governed(kernel_id):
            self._schedule_reap(kernel_id)

    def _schedule_reap(self, kernel_id: str) -> None:
        old = self._reaps.pop(kernel_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_event_loop()
        self._reaps[kernel_id] = loop.call_later(
            self.page_gone_after, lambda: asyncio.ensure_future(self._reap_if_gone(kernel_id)))

    async def _reap_if_gone(self, kernel_id: str) -> None:
        self._reaps.pop(kernel_id, None)
        if kernel_id not in self or self._kernel_connections.get(kernel_id, 0):
            return
        if getattr(self._kernels[kernel_id], "execution_state", None) == "busy":
            self._schedule_reap(kernel_id)  # let a running cell finish; look again later
            return
        self.log.info("Kernel %s: its page is gone (no connection for %.0f s); shutting it down.",
                      kernel_id, self.page_gone_after)
        try:
            await ensure_async(self.shutdown_kernel(kernel_id))
        except (KeyError, RuntimeError, tornado.web.HTTPError):
            pass  # shut down meanwhile (the unload request, the culler)

    async def shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:
        handle = self._reaps.pop(kernel_id, None)
        if handle is not None:
            handle.cancel()
        self._had_page.discard(kernel_id)
        self._page_kernels.discard(kernel_id)
        await ensure_async(super().shutdown_kernel(kernel_id, *args, **kwargs))

    def _pooled(self) -> set[str]:
        """Kernels waiting in Voila's preheat pool (the wrapping VoilaKernelManager keeps ``_pools``)."""
        ids = set()
        for pool in getattr(self, "_pools", {}).values():
            for task in pool:
                if task.done() and not task.cancelled() and task.exception() is None:
                    ids.add(task.result().get("kernel_id"))
        return ids

    async def make_room(self, idle_for: float | None = None) -> bool:
        """With ``max_kernels`` reached, end kernels no page holds, longest idle first; True if there is room.

        A kernel qualifies when no page is connected, it is not running a cell, it is not in the pool,
        and it has been idle ``idle_for`` seconds (default ``page_gone_after``; a just-served page has
        not connected yet).
        """
        if self.max_kernels <= 0:
            return True
        ids = self._governed_ids()
        if len(ids) < self.max_kernels:
            return True
        idle_for = self.page_gone_after if idle_for is None else idle_for
        pooled = self._pooled()
        now = utcnow()
        candidates = []
        for kid in ids:
            kernel = self._kernels.get(kid)
            last = getattr(kernel, "last_activity", None)
            if (kernel is None or kid in pooled or self._kernel_connections.get(kid, 0) or last is None
                    or getattr(kernel, "execution_state", None) == "busy" or now - last < timedelta(seconds=idle_for)):
                continue
            candidates.append((last, kid))
        for _, kid in sorted(candidates)[: len(ids) - self.max_kernels + 1]:
            self.log.warning("Kernel %s: %d kernels reach max_kernels=%d; shutting down this one, which no page holds.",
                             kid, len(ids), self.max_kernels)
            try:
                await ensure_async(self.shutdown_kernel(kid))
            except (KeyError, RuntimeError, tornado.web.HTTPError):
                pass
        return len(self._governed_ids()) < self.max_kernels

    def _governed_ids(self) -> list[str]:
        return [kid for kid in self.list_kernel_ids() if self._governed(kid)]


class DashboardHandler(TornadoVoilaHandler):
    """Voila's page handler, plus the ``_xsrf`` cookie its unload request needs, and the kernel limit."""

    @tornado.web.authenticated
    async def get(self, path: str | None = None) -> None:
        make_room = getattr(self.kernel_manager, "make_room", None)  # a PageKernelManager (the config names it)
        if make_room is not None and not await make_room():
            raise tornado.web.HTTPError(503, reason="Too many dashboards open; close one and reload")
        # Reading the token sets the cookie (with jupyter_server's signed, masked value) on this response,
        # before the first flush; the page's beforeunload beacon sends it back as the _xsrf form field.
        _ = self.xsrf_token
        # The page's loading text (voila_template/index.html.j2) is in the user's language, read here: a
        # preheated page was rendered before anyone asked, so only this response can say whose page it is.
        lang = await asyncio.get_running_loop().run_in_executor(
            None, stored_language, os.environ.get("CRMKIT_DB"), os.environ.get("CRMKIT_USER"),
            self.get_query_argument("user", None))
        self.set_cookie("crmkit_lang", lang, samesite="Strict")  # read by the page's script, so not httponly
        await super().get(path)


class ConsentHandler(tornado.web.RequestHandler):
    """The redirect URI of crmkit's consent links: the v2 admin-consent answer
    (``admin_consent=True&tenant=…&state=…`` or ``error=…``) and the per-account authorize answer
    (``code=…&state=…`` or ``error=…``).

    Runs in the Voila server, not a kernel: the database work (and the code's redemption) runs in a thread.
    The page says what happened and that the tab can be closed; it never shows the query (no code, no
    state, no token) and is not cached.
    """

    async def get(self) -> None:
        params = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        answer = await asyncio.get_running_loop().run_in_executor(None, _answer_consent, params)
        # The request's language; else the dashboard's cookie (sent when the redirect URI's host is the page's)
        # or the browser's first language.
        cookie = self.get_cookie("crmkit_lang")
        browser = self.request.headers.get("Accept-Language", "")[:2].lower()
        lang = next((x for x in (answer.lang, cookie, browser) if x in LANGUAGES), DEFAULT_LANGUAGE)
        self.set_status(200 if answer.recorded else 400)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")  # the address carries a code and the state
        self.set_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.finish(consent_page(answer, lang))


def _answer_consent(params: dict[str, str]) -> Any:
    from .auth.consent import ConsentAnswer, answer_consent
    from .store import Store

    db = os.environ.get("CRMKIT_DB")
    if not db or db == ":memory:":
        return ConsentAnswer("unknown")
    try:
        store = Store(db)
    except Exception:  # the page says it failed; the log has the reason
        logging.getLogger("crmkit.voila").exception("consent redirect: the database could not be opened")
        return ConsentAnswer("failed")
    try:
        return answer_consent(store, params)
    except Exception:
        logging.getLogger("crmkit.voila").exception("consent redirect: recording the answer failed")
        return ConsentAnswer("failed")
    finally:
        store.close()


def consent_page(answer: Any, lang: str) -> str:
    """The small page the consent redirect shows: what happened, and that the tab can be closed."""
    scope = answer.scope or ""
    if scope.startswith("account:"):
        what = t("consent.page.what.account", lang, account=scope.removeprefix("account:"))
    else:
        what = t("consent.page.what.organization", lang)
    if answer.outcome in ("granted", "declined", "wrong_account"):
        text = t(f"consent.page.{answer.outcome}", lang, what=what, account=answer.account or "")
    else:
        text = t(f"consent.refused.{answer.outcome}", lang)
    ok = answer.outcome == "granted"
    title = t("consent.page.title", lang)
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
            '<body style="font-family:system-ui,sans-serif;margin:3em auto;max-width:40em;line-height:1.5">'
            f"<h1>{html.escape(title)}</h1>"
            f'<p class="crmkit-consent-outcome" data-outcome="{html.escape(answer.outcome)}" '
            f'style="color:{"#107c10" if ok else "#a4000f"}"><b>{html.escape(text)}</b></p>'
            f"<p>{html.escape(t('consent.page.close', lang))}</p></body></html>")


def loading_resources(resources: Any = None) -> dict[str, Any]:
    """``VoilaConfiguration.resources`` plus the loading text's words from the catalog, for the template
    (``resources.crmkit_loading``)."""
    out = dict(resources) if isinstance(resources, dict) else {}
    out["crmkit_loading"] = {lang: {"page": t("voila.loading", lang), "cell": t("voila.executing", lang)}
                             for lang in LANGUAGES}
    return out


class CrmkitVoila(Voila):
    """Voila serving dashboard pages through :class:`DashboardHandler`, with ``voila_template/`` first on
    the template search path: its files shadow the ``lab`` template's of the same name (no CDN links)."""

    def setup_template_dirs(self) -> None:
        super().setup_template_dirs()
        # The same list object reaches the page renderer (nbconvert exporter) and Voila's own Jinja env.
        self.template_paths.insert(0, str(TEMPLATE_DIR))
        self.config.VoilaConfiguration.resources = loading_resources(self.config.VoilaConfiguration.get("resources"))

    def initialize(self, argv: Any = None) -> None:
        super().initialize(argv)
        # The kernels (preheated ones too) inherit this process's environment when they start, after this:
        # the settings dashboard builds its consent links with this redirect URI. localhost, not 127.0.0.1:
        # Entra matches a registered http://localhost redirect URI on any port (docs/app-registration.md).
        path = url_path_join(self.base_url, CONSENT_PATH.lstrip("/"))
        os.environ.setdefault("CRMKIT_CONSENT_REDIRECT_URI", f"http://localhost:{self.port}{path}")

    def init_handlers(self) -> list[Any]:
        consent = (url_path_join(self.base_url, CONSENT_PATH.lstrip("/")), ConsentHandler)
        return [consent] + [
            (spec[0], DashboardHandler, *spec[2:]) if len(spec) > 1 and spec[1] is TornadoVoilaHandler else spec
            for spec in super().init_handlers()]


def main() -> None:
    CrmkitVoila.launch_instance()


if __name__ == "__main__":
    # Run the importable module's classes, not this __main__ copy's: voila.json names
    # crmkit.voila_app.PageKernelManager, and one class object for both keeps isinstance checks true.
    from crmkit.voila_app import main as _main

    _main()
