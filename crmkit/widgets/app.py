"""Ready-made dashboards: one call builds the whole view, so a dashboard notebook stays a launcher."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ipywidgets as widgets

from ..errors import CrmkitError
from ..i18n import LANGUAGES
from .common import error_html
from .record_table import RecordTable

if TYPE_CHECKING:
    from ..crm import CRM

__all__ = ["address_dashboard"]

log = logging.getLogger(__name__)


def address_dashboard(crm: CRM | None = None) -> widgets.Widget:
    """The addresses dashboard: a :class:`RecordTable` over ``crm``.

    Without ``crm`` it opens the CRM named by the environment (``CRMKIT_DB``, ``CRMKIT_USER``).
    If that fails, it returns a box that explains why (in both languages: no session, so no
    language setting yet) instead of raising, because Voila hides tracebacks.
    """
    if crm is None:
        import crmkit

        try:
            crm = crmkit.open()
        except CrmkitError as exc:
            log.warning("address dashboard: cannot open the CRM: %s", exc)
            box = widgets.HTML("".join(error_html(exc, lang, title_key="error.open") for lang in LANGUAGES))
            box.add_class("crmkit-error")
            box.add_class("crmkit-open-error")
            return box
    return RecordTable(crm)


