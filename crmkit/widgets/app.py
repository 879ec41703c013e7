"""Ready-made dashboards: one call builds the whole view, so a dashboard notebook stays a launcher."""

from __future__ import annotations

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
    """
    global _request_seen
    if _request_seen or os.environ.get("VOILA_PREHEAT") != "True":
        return
    from voila.utils import wait_for_request

    from .. import migrations  # noqa: F401 -- opening a CRM imports it (0.1 s); do it before the visitor comes

    wait_for_request()
    _request_seen = True


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


