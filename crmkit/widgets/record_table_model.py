"""State and logic of the record table, without any widget: filters, paging, selection, language.

The model reads exactly one page per interaction through :meth:`crmkit.CRM.address_page` (one
attach of the store, released before the call returns), so a table over a million addresses
costs the same as one over fifty, and no DuckDB file stays open while the user thinks. Its one query
of its own runs once when it starts: the distinct cities and countries the filters offer.

Errors never escape an interaction: a core error lands in :attr:`RecordTableModel.error` (typed,
so the view can word it per language), anything unexpected is logged and lands there too.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from traitlets import Any as AnyTrait
from traitlets import Dict, HasTraits, Int, List, Unicode, observe, validate

from ..errors import CrmkitError, ValidationError, catalog_error
from ..i18n import LANGUAGES, format_count

if TYPE_CHECKING:
    from ..crm import CRM
    from ..store import Tx

__all__ = ["DEFAULT_COLUMNS", "PAGE_SIZES", "RecordTableModel"]

log = logging.getLogger(__name__)

DEFAULT_COLUMNS: tuple[str, ...] = (
    "company", "salutation", "first_name", "last_name", "street", "postal_code", "city", "country", "phone", "email",
)
PAGE_SIZES: tuple[int, ...] = (10, 25, 50, 100)
_PAGE_NUMBER = re.compile(r"[0-9]+|[0-9]{1,3}(?:[.,\u202f ][0-9]{3})+")
CHOICE_LIMIT = 1000  # most distinct cities a dropdown offers; beyond that, search finds them


class RecordTableModel(HasTraits):
    """A filterable, paged view of the CRM's addresses.

    Args:
        crm: the session; the model reads through it, so its rights apply.
        columns: the address columns shown (``id`` is always fetched).
        where, params: a fixed SQL filter under the interactive ones (an analyst's selection).
        order_by: a column, optionally followed by ``desc``.

    Traits (observe them): ``search``, ``city``, ``country`` (``""`` means any), ``page`` (0-based),
    ``page_size``, ``total``, ``rows`` (records of the current page), ``selected_ids`` (kept across
    pages and filters), ``language``, ``error`` (the last failure, or None).
    """

    search = Unicode("")
    city = Unicode("")
    country = Unicode("")
    page = Int(0)
    page_size = Int(25)
    total = Int(0)
    rows = List(Dict())
    selected_ids = List(Int())
    language = Unicode("de")
    error = AnyTrait(None, allow_none=True)
    cities = List(Unicode())
    countries = List(Unicode())
    loads = Int(0)  # counts page reads; views re-render once per read by observing it

    def __init__(
        self, crm: CRM, *, columns: Sequence[str] = DEFAULT_COLUMNS, where: str | None = None,
        params: Sequence[Any] = (), order_by: str = "id", load: bool = True,
    ) -> None:
        super().__init__()
        self.crm = crm
        self.columns = tuple(columns)
        self.where = where
        self.params = tuple(params)
        self.order_by = order_by
        self._quiet = False
        if load:
            self._guard(self._start)

    # -- derived -------------------------------------------------------------------------------------

    @property
    def pages(self) -> int:
        """Number of pages; an empty result still has one (empty) page."""
        return max(1, math.ceil(self.total / self.page_size))

    @property
    def page_ids(self) -> list[int]:
        return [int(r["id"]) for r in self.rows]

    @property
    def has_previous(self) -> bool:
        return self.page > 0

    @property
    def has_next(self) -> bool:
        return self.page + 1 < self.pages

    # -- interactions --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the current page again (after the data changed elsewhere)."""
        self._guard(self._load)

    def next_page(self) -> None:
        if self.has_next:
            self.page += 1

    def previous_page(self) -> None:
        if self.has_previous:
            self.page -= 1

    def first_page(self) -> None:
        if self.page != 0:
            self.page = 0

    def last_page(self) -> None:
        if self.page != self.pages - 1:
            self.page = self.pages - 1

    def go_to_page(self, number: int | str) -> None:
        """Show page ``number`` (1-based, as the page label counts), typed by the user.

        Raises:
            ValidationError: not a whole number from 1 to :attr:`pages` (the message names the range in
                the user's language); the page stays as it was.
        """
        text = str(number).strip()
        # Digits, optionally grouped in threes as the page label shows them ("1.000" / "1,000").
        digits = re.sub(r"[.,\u202f ]", "", text) if _PAGE_NUMBER.fullmatch(text) else ""
        if not digits or not 1 <= int(digits) <= self.pages:
            pages = format_count(self.pages, self.language)
            raise catalog_error(ValidationError, "table.bad_page", text=text[:40], pages=pages)
        if int(digits) - 1 != self.page:
            self.page = int(digits) - 1

    def set_filters(self, **values: str) -> None:
        """Change several of ``search``/``city``/``country`` at once, with one read."""
        unknown = set(values) - {"search", "city", "country"}
        if unknown:
            raise ValueError(f"unknown filters {sorted(unknown)}")
        with self._silenced():
            for name, value in values.items():
                setattr(self, name, value or "")
            self.page = 0
        self.refresh()

    def select(self, ids: Iterable[int], selected: bool = True) -> None:
        """Add ids to (or remove them from) the selection; order of first selection is kept."""
        wanted = [int(i) for i in ids]
        if selected:
            current = list(self.selected_ids)
            current += [i for i in wanted if i not in current]
        else:
            current = [i for i in self.selected_ids if i not in set(wanted)]
        self.selected_ids = current

    def clear_selection(self) -> None:
        self.selected_ids = []

    def selected_frame(self) -> pd.DataFrame:
        """The selected addresses, all columns, in one read (what a send action works on)."""
        if not self.selected_ids:
            return self.crm.addresses(id=[])
        return self.crm.addresses(id=list(self.selected_ids))

    def set_language(self, lang: str) -> None:
        """Switch the UI language and store it as the user's setting ``language``."""
        if lang not in LANGUAGES:
            raise ValidationError(f"language must be one of {LANGUAGES}, not {lang!r}.")
        if lang == self.language:
            return

        def run() -> None:
            self.crm.set_user_setting("language", lang)
            self.language = lang

        self._guard(run)

    # -- reactions to trait changes --------------------------------------------------------------------

    @validate("page_size")
    def _valid_page_size(self, proposal: dict[str, Any]) -> int:
        size = int(proposal["value"])
        if not 0 < size <= 1000:
            raise ValidationError(f"page_size must be 1..1000, not {size}.")
        return size

    @observe("search", "city", "country", "page_size")
    def _filters_changed(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        with self._silenced():
            self.page = 0
        self.refresh()

    @observe("page")
    def _page_changed(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.refresh()

    # -- reading ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        self.language = self.crm.language
        stored = self.crm.user_setting("page_size")
        with self._silenced():
            if isinstance(stored, int) and 0 < stored <= 1000:
                self.page_size = stored
        self.cities, self.countries = self.crm.store.read(_choices)
        self._load()

    def _load(self) -> None:
        filters = {name: value for name, value in (("city", self.city), ("country", self.country)) if value}
        frame, total = self.crm.address_page(
            self.page, self.page_size, search=self.search.strip() or None, where=self.where, params=self.params,
            order_by=self.order_by, columns=_with_id(self.columns), **filters,
        )
        if self.page > 0 and self.page * self.page_size >= total:
            # The data shrank under us (another user deleted rows): show the last page instead.
            with self._silenced():
                self.page = max(0, math.ceil(total / self.page_size) - 1)
            frame, total = self.crm.address_page(
                self.page, self.page_size, search=self.search.strip() or None, where=self.where,
                params=self.params, order_by=self.order_by, columns=_with_id(self.columns), **filters,
            )
        self.total = total
        self.rows = _records(frame)
        self.error = None
        self.loads += 1

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except CrmkitError as exc:
            self.error = exc
        except Exception as exc:
            # A view callback has nobody above it to catch; log for the operator, tell the user.
            log.exception("record table: unexpected error")
            self.error = exc

    def _silenced(self) -> _Silence:
        return _Silence(self)


class _Silence:
    """Change traits without triggering reads (batching several changes into one)."""

    def __init__(self, model: RecordTableModel) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.saved = self.model._quiet
        self.model._quiet = True

    def __exit__(self, *exc: object) -> None:
        self.model._quiet = self.saved


def _with_id(columns: Sequence[str]) -> list[str]:
    return ["id", *[c for c in columns if c != "id"]]


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    clean = frame.astype(object).where(frame.notna(), None)
    return [dict(r) for r in clean.to_dict("records")]


def _choices(tx: Tx) -> tuple[list[str], list[str]]:
    # TODO(core): replace with a CRM method for distinct column values once the lead adds one.
    def distinct(column: str) -> list[str]:
        rows = tx.rows(
            f"SELECT DISTINCT {column} FROM addresses WHERE coalesce({column}, '') <> '' "
            f"ORDER BY {column} LIMIT {CHOICE_LIMIT}"
        )
        return [r[0] for r in rows]

    return distinct("city"), distinct("country")
