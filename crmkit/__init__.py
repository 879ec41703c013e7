"""crmkit: send CRM records to colleagues in Microsoft Teams, from notebooks and Voila dashboards.

>>> import crmkit
>>> crm = crmkit.open(":memory:")
"""

from .crm import CRM, User, open
from .errors import *  # noqa: F403 - the error tree is part of the public API
from .errors import __all__ as _error_names
from .store import Store

__all__ = ["CRM", "Store", "User", "open", *_error_names]
__version__ = "0.1.0"
