"""What the parts of :mod:`crmkit.privacy` share: the clock (address ids: :func:`crmkit.addresses.check_id`)."""

from __future__ import annotations

from datetime import datetime


def now() -> datetime:
    """Local time to the second, like the rest of the store."""
    return datetime.now().replace(microsecond=0)
