"""Why a user may not do something, for a disabled control's tooltip.

Views disable what the session user lacks the right for and say why in the tooltip, instead of
refusing after a click. The core still checks every call (:meth:`crmkit.CRM.require`); this only
reads the same rights (:data:`crmkit.rights.RIGHTS`) to word the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..i18n import t
from ..rights import RIGHTS, right_label

if TYPE_CHECKING:
    import ipywidgets as widgets

    from ..crm import CRM, User

__all__ = ["apply_right", "disable_without", "missing_right", "missing_right_text"]


def missing_right_text(user: User, rights: Iterable[str], lang: str) -> str | None:
    """Why ``user`` may not do what needs any of ``rights``, in ``lang``; None when they may."""
    rights = tuple(rights)
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown:
        raise ValueError(f"unknown right(s) {unknown!r}")
    if any(user.can(r) for r in rights):
        return None
    labels = [right_label(r, lang) for r in rights]
    if len(labels) == 1:
        return t("rights.missing", lang, label=labels[0], right=rights[0])
    return t("rights.missing_any", lang, rights=", ".join(labels))


def missing_right(crm: CRM, right: str, lang: str) -> str | None:
    """The tooltip text naming ``right`` when the session user lacks it, else None."""
    return missing_right_text(crm.user, [right], lang)


def disable_without(controls: Iterable[widgets.Widget], user: User, rights: Iterable[str], lang: str) -> bool:
    """Disable ``controls`` and give them the reason as tooltip when ``user`` lacks all of ``rights``.

    Returns whether the user may use them. Controls the user may use are left as they are.
    """
    reason = missing_right_text(user, rights, lang)
    if reason is None:
        return True
    for control in controls:
        control.disabled = True
        control.tooltip = reason
    return False


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
