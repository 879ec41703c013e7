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

``voila_launch.voila_command`` runs this module instead of ``python -m voila``; everything else
(``dashboards/voila.json``, the command-line flags) is Voila's.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server._tz import utcnow
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from jupyter_server.utils import ensure_async
from traitlets import Float, Integer
from voila.app import Voila
from voila.tornado.handler import TornadoVoilaHandler

from .i18n import LANGUAGES, stored_language, t

__all__ = ["TEMPLATE_DIR", "CrmkitVoila", "DashboardHandler", "PageKernelManager", "main"]

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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._had_page: set[str] = set()  # kernels a page has connected to at least once
        self._reaps: dict[str, asyncio.TimerHandle] = {}

    def notify_connect(self, kernel_id: str) -> None:
        super().notify_connect(kernel_id)
        self._had_page.add(kernel_id)
        handle = self._reaps.pop(kernel_id, None)
        if handle is not None:
            handle.cancel()

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if self.page_gone_after > 0 and not self._kernel_connections.get(kernel_id, 0):
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
        ids = list(self.list_kernel_ids())
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
        return len(self.list_kernel_ids()) < self.max_kernels


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


class CrmkitVoila(Voila):
    """Voila serving dashboard pages through :class:`DashboardHandler`, with ``voila_template/`` first on
    the template search path: its files shadow the ``lab`` template's of the same name (no CDN links)."""

    def setup_template_dirs(self) -> None:
        super().setup_template_dirs()
        # The same list object reaches the page renderer (nbconvert exporter) and Voila's own Jinja env.
        self.template_paths.insert(0, str(TEMPLATE_DIR))
        # The loading text's words, from the catalog, for the template (``resources.crmkit_loading``).
        resources = self.config.VoilaConfiguration.get("resources")
        resources = dict(resources) if isinstance(resources, dict) else {}
        resources["crmkit_loading"] = {lang: {"page": t("voila.loading", lang), "cell": t("voila.executing", lang)}
                                       for lang in LANGUAGES}
        self.config.VoilaConfiguration.resources = resources

    def init_handlers(self) -> list[Any]:
        return [(spec[0], DashboardHandler, *spec[2:]) if len(spec) > 1 and spec[1] is TornadoVoilaHandler else spec
                for spec in super().init_handlers()]


def main() -> None:
    CrmkitVoila.launch_instance()


if __name__ == "__main__":
    # Run the importable module's classes, not this __main__ copy's: voila.json names
    # crmkit.voila_app.PageKernelManager, and one class object for both keeps isinstance checks true.
    from crmkit.voila_app import main as _main

    _main()
