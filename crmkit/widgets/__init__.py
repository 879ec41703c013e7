"""ipywidgets views over the crmkit core. Models hold state and logic; views only bind.

>>> import crmkit
>>> from crmkit.widgets import RecordTable
>>> table = RecordTable(crmkit.open(":memory:"))
"""

from .app import address_dashboard
from .common import ErrorBox, LanguageSwitch, error_html
from .record_table import RecordTable
from .record_table_model import DEFAULT_COLUMNS, PAGE_SIZES, RecordTableModel

__all__ = [
    "DEFAULT_COLUMNS",
    "PAGE_SIZES",
    "ErrorBox",
    "LanguageSwitch",
    "RecordTable",
    "RecordTableModel",
    "address_dashboard",
    "error_html",
]
