"""Why a user may not do something, for a disabled control's tooltip.

Views disable what the session user lacks the right for and say why in the tooltip, instead of
refusing after a click. The core still checks every call (:meth:`crmkit.CRM.require`); this only
reads the same rights (:data:`crmkit.rights.RIGHTS`) to word the reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..i18n import t
from ..rights import RIGHTS

if TYPE_CHECKING:
    import ipywidgets as widgets

    from ..crm import CRM

__all__ = ["apply_right", "missing_right"]


def missing_right(crm: CRM, right: str, lang: str) -> str | None:
    """The tooltip text naming ``right`` when the session user lacks it, else None."""
    if right not in RIGHTS:
        raise ValueError(f"unknown right {right!r}")
    if crm.user.can(right):
        return None
    de, en = RIGHTS[right]
    return t("rights.missing", lang, label=de if lang == "de" else en, right=right)


def apply_right(control: widgets.DOMWidget, crm: CRM, right: str, lang: str, tooltip: str | None = None) -> bool:
    """Disable ``control`` with the reason as its tooltip when the user lacks ``right``; otherwise
    set ``tooltip`` (when given). Returns whether the user holds the right."""
    reason = missing_right(crm, right, lang)
    if reason is not None:
        control.disabled = True
        control.tooltip = f"{tooltip} – {reason}" if tooltip else reason
        return False
    if tooltip is not None:
        control.tooltip = tooltip
    return True
