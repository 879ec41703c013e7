"""Sizes of the resilience tests: as in ``make test``, or ``CRMKIT_SOAK`` times larger.

``python -m bench --soak`` runs the kill, fault and concurrency tests with ``CRMKIT_SOAK`` set (5
unless told otherwise); the tests take their sizes and time limits through :func:`scaled`.
"""

from __future__ import annotations

import os

__all__ = ["SOAK", "scaled"]


def _factor() -> int:
    raw = os.environ.get("CRMKIT_SOAK", "").strip() or "1"
    try:
        factor = int(raw)
    except ValueError:
        raise SystemExit(f"CRMKIT_SOAK is a whole number ≥ 1, not {raw!r}") from None
    if factor < 1:
        raise SystemExit(f"CRMKIT_SOAK is a whole number ≥ 1, not {raw!r}")
    return factor


SOAK = _factor()


def scaled(n: int | float) -> int:
    """``n`` for ``make test``; ``n × CRMKIT_SOAK`` under the soak run."""
    return int(n * SOAK)
