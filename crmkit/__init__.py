"""crmkit: send CRM records to colleagues in Microsoft Teams, from notebooks and Voila dashboards.

>>> import crmkit
>>> crm = crmkit.open(":memory:")
"""

from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403 - the error tree is part of the public API
from .errors import __all__ as _error_names

if TYPE_CHECKING:
    from .crm import CRM, User, open
    from .store import Store

__all__ = ["CRM", "Store", "User", "open", *_error_names]
__version__ = "0.1.0"

# The session and the store load on first use, so importing a part (crmkit.store, crmkit.errors)
# does not import every feature the session composes.
_LAZY = {"CRM": "crm", "User": "crm", "open": "crm", "Store": "store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
