"""What the parts of :mod:`crmkit.privacy` share: the clock and the address-id check."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import ValidationError


def now() -> datetime:
    """Local time to the second, like the rest of the store."""
    return datetime.now().replace(microsecond=0)


def check_id(value: Any) -> int:
    """An address id as an int; numpy integers pass, bools and text are refused."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValidationError(f"An address id is an integer, not {value!r}.")
    return int(value.__index__())
