"""Ready-made dashboards: one call builds the whole view, so a dashboard notebook stays a launcher."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..errors import CrmkitError
from ..i18n import LANGUAGES
from .common import error_html
from .record_table import RecordTable

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["address_dashboard", "wait_for_voila_request"]

log = logging.getLogger(__name__)
_request_seen = False


def wait_for_voila_request() -> None:
    """Block until a browser asks for the page, when Voila runs this kernel preheated.

    A preheated kernel executes the dashboard before anyone asks for it. Imports (the slow
    part) may happen then, but the data and the user's language must be read at request time,
    or the page shows the CRM as it was when the kernel was heated. Outside preheat (Jupyter,
    nbclient, plain Voila) this returns at once.

    This speaks Voila's preheat protocol itself instead of calling ``voila.utils.wait_for_request``:
    importing that module loads Voila's whole server stack (jupyter_server, jupyterlab_server,
    nbconvert) into every kernel, 1.3 CPU-seconds of the ~3 a kernel took to heat, which under
    back-to-back visits is CPU the visitors' pages wait for.
    """
    global _request_seen
    if _request_seen or os.environ.get("VOILA_PREHEAT") != "True":
        return
    from .. import migrations  # noqa: F401 -- opening a CRM imports it (0.1 s); do it before the visitor comes

    _set_request_environ(_receive_request_info())
    _request_seen = True


def _voila_query_url() -> str:
    """Where Voila hands a preheated kernel its request (the server sets these variables on the kernel)."""
    env = os.environ
    base = env.get("VOILA_WS_BASE_URL") or env.get("VOILA_SERVER_URL", "/")
    return (f"{env.get('VOILA_WS_PROTOCOL', 'ws')}://{env.get('VOILA_APP_IP', '127.0.0.1')}:"
            f"{env.get('VOILA_APP_PORT', '8866')}{base}voila/query/{env.get('VOILA_KERNEL_ID', '')}")


def _receive_request_info() -> str | None:
    """Wait (without a limit: the visitor comes when they come) for Voila's one message, the request's
    environment as JSON; ``None`` when the server cannot be reached."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    url = _voila_query_url()
    try:
        with connect(url, open_timeout=5) as ws:
            message = ws.recv()
    except (OSError, TimeoutError, WebSocketException) as exc:
        log.warning("preheated kernel: no request from %s: %s", url, exc)
        return None
    return message.decode() if isinstance(message, bytes) else message


def _set_request_environ(info: str | None) -> None:
    if info is None:
        return
    for name, value in json.loads(info).items():
        os.environ[name] = str(value)


def address_dashboard(crm: CRM | None = None) -> widgets.Widget:
    """The addresses dashboard: a :class:`RecordTable` over ``crm``.

    Without ``crm`` it opens the CRM named by the environment (``CRMKIT_DB``, ``CRMKIT_USER``), at
    request time under Voila's kernel preheating (see :func:`wait_for_voila_request`).
    If that fails, it returns a box that explains why (in both languages: no session, so no
    language setting yet) instead of raising, because Voila hides tracebacks.
    """
    if crm is None:
        import crmkit

        wait_for_voila_request()
        try:
            crm = crmkit.open()
        except CrmkitError as exc:
            log.warning("address dashboard: cannot open the CRM: %s", exc)
            box = widgets.HTML("".join(error_html(exc, lang, title_key="error.open") for lang in LANGUAGES))
            box.add_class("crmkit-error")
            box.add_class("crmkit-open-error")
            return box
    return RecordTable(crm)


