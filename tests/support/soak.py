"""Sizes of the resilience tests: as in ``make test``, or ``CRMKIT_SOAK`` times larger.

``python -m bench --soak`` runs the kill, fault and concurrency tests with ``CRMKIT_SOAK`` set (5
unless told otherwise); the tests take their sizes and time limits through :func:`scaled`.
"""

from __future__ import annotations

import json
import os

__all__ = ["SOAK", "figure", "scaled"]


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
_FIGURES = os.environ.get("CRMKIT_SOAK_FIGURES", "").strip()  # read at import: tests clear CRMKIT_*


def scaled(n: int | float) -> int:
    """``n`` for ``make test``; ``n × CRMKIT_SOAK`` under the soak run."""
    return int(n * SOAK)


def figure(test: str, name: str, value: object) -> None:
    """Hand a measured figure to the soak report: ``python -m bench --soak`` names a JSON file in
    ``CRMKIT_SOAK_FIGURES`` and puts what the tests wrote there into ``soak.md``. A no-op otherwise."""
    if not _FIGURES:
        return
    with open(_FIGURES, "a", encoding="utf-8") as out:  # one JSON object a line; tests run one at a time
        out.write(json.dumps({"test": test, "name": name, "value": value}) + "\n")
