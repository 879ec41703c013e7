"""Deterministic, realistic demo addresses from Germany, Austria and Switzerland.

``generate(crm, 1_000_000)`` fills a store with companies (main addresses) and their contact persons
(sub-addresses, ``parent_id`` → the company), private persons, a contact history, and demo CRM users
holding the built-in roles.

How it stays fast: Faker is slow per call, so it only fills small *pools* per locale (de_DE, de_AT,
de_CH): names, streets, cities, companies. Every row is then a handful of integers drawn with numpy
(which pool entry, which house number, which date …). Those integer frames are registered with
DuckDB and one ``INSERT … SELECT`` per table joins them to the pools and builds the strings (e-mail,
phone) inside DuckDB. Nothing is inserted row by row.

Determinism: the pools depend on the seed only, and chunk *k* of a run draws from
``numpy.random.default_rng([seed, k])`` with a fixed chunk size, so the same seed and count give the
same rows. Dates are relative to :data:`DEMO_TODAY` (not the clock) for the same reason; pass
``today=`` for fresher dates.

Existing data: by default new addresses are *appended* after ``max(id)`` (contacts after their
``max(id)``), so a second run adds more. ``replace=True`` first deletes all addresses and contacts;
the new ids still continue after the old ones, because the transfer log and the outbox keep naming
old ids and must never point at a different record.
Each chunk of :data:`CHUNK_ROWS` addresses commits on its own, so memory stays bounded, other
processes get the file between chunks, and an interrupted load leaves whole chunks only.

On PostgreSQL the same SELECTs run in a private DuckDB (a file in a temporary folder) and the finished rows
go in by COPY (``PgTx.copy_frame``); the search words are gathered there too and copied once at the end, in
word order, with address_words' indexes built again afterwards (~35 s for 1,000,000 addresses here).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd

from .errors import ValidationError

if TYPE_CHECKING:
    from .store import Tx

__all__ = ["CHUNK_ROWS", "DEMO_TODAY", "DEMO_USERS", "MAX_ADDRESSES", "Progress", "frames", "generate"]

CHUNK_ROWS = 250_000
MAX_ADDRESSES = 20_000_000
DEMO_TODAY = date(2026, 11, 1)
DEMO_DOMAIN = "contoso.example"  # the sandbox tenant's domain

# name, display name, role. The built-in ``admin`` stays as it is.
DEMO_USERS: tuple[tuple[str, str, str], ...] = (
    ("anna", "Anna Berger", "sales"),
    ("ben", "Ben Hartmann", "sales"),
    ("tom", "Tom Krause", "teams_admin"),
    ("petra", "Petra Lorenz", "privacy_officer"),
    ("kai", "Kai Brandt", "campaign_manager"),
    ("vera", "Vera Engel", "viewer"),
)

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` (addresses) at the start and after every committed chunk."""

COUNTRIES = ("DE", "AT", "CH")
LOCALES = ("de_DE", "de_AT", "de_CH")
COUNTRY_WEIGHTS = (0.70, 0.15, 0.15)
DIAL = ("49", "43", "41")
TLD = ("de", "at", "ch")

# Big cities with real postal codes and area codes; they carry much of the population, so a record
# table filtered on "Berlin" or "Wien" finds plenty. (name, postal codes, area code, weight)
_MAJOR_CITIES: tuple[tuple[tuple[str, tuple[str, ...], str, float], ...], ...] = (
    (
        ("Berlin", ("10115", "10178", "10243", "10405", "10587", "10711", "12043", "13353"), "30", 8.0),
        ("Hamburg", ("20095", "20144", "20253", "22041", "22765"), "40", 5.0),
        ("München", ("80331", "80469", "80636", "81369", "81677"), "89", 4.5),
        ("Köln", ("50667", "50733", "50823", "51063"), "221", 3.0),
        ("Frankfurt am Main", ("60311", "60316", "60486", "65929"), "69", 2.4),
        ("Stuttgart", ("70173", "70182", "70372", "70597"), "711", 2.0),
        ("Düsseldorf", ("40210", "40477", "40545"), "211", 1.9),
        ("Leipzig", ("04103", "04109", "04277"), "341", 1.6),
        ("Dortmund", ("44135", "44137", "44263"), "231", 1.5),
        ("Essen", ("45127", "45130", "45276"), "201", 1.5),
        ("Bremen", ("28195", "28209", "28357"), "421", 1.4),
        ("Dresden", ("01067", "01097", "01307"), "351", 1.4),
        ("Hannover", ("30159", "30161", "30519"), "511", 1.3),
        ("Nürnberg", ("90402", "90409", "90461"), "911", 1.3),
    ),
    (
        ("Wien", ("1010", "1020", "1030", "1040", "1050", "1060", "1070", "1080", "1090", "1100", "1120",
                  "1150", "1200", "1210", "1220"), "1", 20.0),
        ("Graz", ("8010", "8020", "8045"), "316", 3.3),
        ("Linz", ("4020", "4030", "4040"), "732", 2.3),
        ("Salzburg", ("5020", "5026"), "662", 1.8),
        ("Innsbruck", ("6020", "6063"), "512", 1.5),
        ("Klagenfurt am Wörthersee", ("9020",), "463", 1.2),
        ("Villach", ("9500",), "4242", 0.8),
    ),
    (
        ("Zürich", ("8001", "8002", "8003", "8004", "8005", "8006", "8008", "8032", "8050"), "44", 5.0),
        ("Genf", ("1201", "1202", "1203", "1205", "1207"), "22", 2.4),
        ("Basel", ("4001", "4051", "4052", "4055", "4057"), "61", 2.0),
        ("Bern", ("3011", "3012", "3013", "3014", "3018"), "31", 1.6),
        ("Lausanne", ("1003", "1004", "1005", "1007"), "21", 1.6),
        ("Winterthur", ("8400", "8404", "8406"), "52", 1.3),
        ("Luzern", ("6003", "6004", "6005"), "41", 1.0),
        ("St. Gallen", ("9000", "9008"), "71", 0.9),
        ("Lugano", ("6900",), "91", 0.8),
    ),
)
_MOBILE_PREFIXES = (
    ("151", "152", "160", "162", "170", "171", "172", "175", "176", "177", "178", "179"),
    ("650", "660", "664", "676", "680", "681", "688", "699"),
    ("76", "77", "78", "79"),
)
_FREEMAIL = (
    ("web.de", "gmx.de", "t-online.de", "gmail.com", "outlook.de", "posteo.de", "freenet.de"),
    ("gmx.at", "aon.at", "chello.at", "gmail.com", "outlook.com", "a1.net"),
    ("bluewin.ch", "gmx.ch", "gmail.com", "hispeed.ch", "outlook.com", "sunrise.ch"),
)
_COMPANY_MAILBOX = ("info", "kontakt", "office", "mail", "zentrale")
# Titles per country with the probability a person holds one (Austria loves its Magister).
_TITLES = (
    (("Dr.", 0.06), ("Prof. Dr.", 0.008), ("Dipl.-Ing.", 0.02), ("Dr.-Ing.", 0.006)),
    (("Dr.", 0.05), ("Mag.", 0.06), ("Dipl.-Ing.", 0.03), ("Ing.", 0.03), ("Prof.", 0.005)),
    (("Dr.", 0.06), ("Prof. Dr.", 0.006), ("lic. iur.", 0.005)),
)
_DEPARTMENTS = (
    ("Geschäftsführung", 0.10), ("Vertrieb", 0.22), ("Einkauf", 0.16), ("Marketing", 0.10), ("IT", 0.10),
    ("Buchhaltung", 0.08), ("Personal", 0.06), ("Produktion", 0.06), ("Kundenservice", 0.08),
    ("Logistik", 0.04),
)
_SALUTATIONS = ("Herr", "Frau", "Divers", "Firma")
# code, weight, subjects, notes. Codes are the contact types seeded by migration 1.
_CONTACT_TYPES: tuple[tuple[str, float, tuple[str, ...], tuple[str, ...]], ...] = (
    ("TEL", 0.40, (
        "Telefonat: Terminabstimmung", "Rückruf wegen Angebot", "Nachfrage zum Liefertermin",
        "Erstgespräch", "Reklamation telefonisch aufgenommen", "Telefonat: Preisverhandlung",
        "Rückfrage zur Rechnung", "Kurzes Update zum Projekt",
    ), (
        "Bittet um Rückruf nächste Woche.", "Interesse an der Premium-Variante.",
        "Entscheidung fällt im nächsten Quartal.", "Ansprechpartner ist im Urlaub, später erneut anrufen.",
        "Angebot soll per E-Mail folgen.", "Zufrieden mit der letzten Lieferung.",
    )),
    ("EM", 0.35, (
        "Angebot versendet", "Auftragsbestätigung", "Unterlagen nachgereicht", "Einladung zum Webinar",
        "Antwort auf Anfrage", "Newsletter-Abmeldung bestätigt", "Rechnungskopie gesendet",
        "Terminbestätigung",
    ), (
        "PDF im Anhang.", "Antwort steht noch aus.", "Kopie an die Geschäftsführung.",
        "Preisliste 2026 beigefügt.", "Bitte bis Monatsende zurückmelden.", "Lesebestätigung erhalten.",
    )),
    ("BR", 0.08, (
        "Vertrag per Post", "Mahnung", "Weihnachtskarte", "Kündigungsbestätigung", "Katalog versendet",
        "Jubiläumsschreiben", "Preisänderung angekündigt", "Vertragsverlängerung",
    ), (
        "Einschreiben mit Rückschein.", "Unterschriebenes Exemplar zurück erwartet.", "Standardbrief.",
        "Mit persönlicher Widmung.", "Zweite Mahnstufe.", "Versand über die Poststelle.",
    )),
    ("BE", 0.07, (
        "Besuch vor Ort", "Messegespräch", "Produktvorführung", "Jahresgespräch", "Werksbesichtigung",
        "Kennenlerntermin", "Schulung beim Kunden", "Projekt-Kick-off",
    ), (
        "Protokoll liegt im Projektordner.", "Folgetermin vereinbart.", "Mit zwei Kollegen aus dem Einkauf.",
        "Muster übergeben.", "Sehr positives Gespräch.", "Anfahrt: Parkplatz im Hof.",
    )),
    ("NO", 0.10, (
        "Notiz", "Interne Notiz: Zahlungsverhalten", "Wechsel des Ansprechpartners", "Bonitätsprüfung",
        "Adresse geprüft", "Hinweis für den Vertrieb", "Wiedervorlage", "Potenzialeinschätzung",
    ), (
        "Nur intern.", "Zahlt zuverlässig.", "Neuer Ansprechpartner ab dem nächsten Monat.",
        "A-Kunde.", "B-Kunde.", "Bitte nicht vor 10 Uhr anrufen.",
    )),
)
_CONTACT_SUBJECTS = 8
_CONTACT_NOTES = 6
# How many contact persons a company has, and how likely a main address is a company.
_COMPANY_SHARE = 0.45
_CONTACT_PERSONS_P = (0.15, 0.25, 0.25, 0.15, 0.10, 0.06, 0.04)
# Mean contacts (history entries) per address: company main, contact person, private person.
_CONTACTS_MEAN = (3.0, 1.2, 1.0)
_OWNERS = (("anna", 0.42), ("ben", 0.38), ("kai", 0.10), ("admin", 0.10))
_EDITORS = (("anna", 0.35), ("ben", 0.30), ("kai", 0.10), ("tom", 0.05), ("admin", 0.20))
_POOL_SIZE = 3000


# -- pools ---------------------------------------------------------------------------------------------

class _Strings:
    """Every string the generated rows can contain, interned once: rows hold their indices."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, items: Sequence[str]) -> np.ndarray:
        out = np.empty(len(items), dtype=np.int64)
        for k, item in enumerate(items):
            i = self._index.get(item)
            if i is None:
                i = self._index[item] = len(self.values)
                self.values.append(item)
            out[k] = i
        return out

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"i": np.arange(len(self.values), dtype=np.int64),
                             "s": pd.array(self.values, dtype=object)})


@dataclass
class _Country:
    male: np.ndarray          # string ids of male first names
    male_slug: np.ndarray     # … and their e-mail spelling
    female: np.ndarray
    female_slug: np.ndarray
    last: np.ndarray
    last_slug: np.ndarray
    streets: np.ndarray
    companies: np.ndarray
    domains: np.ndarray       # e-mail domain of each company
    city_p: np.ndarray        # probability of each city
    city_area: np.ndarray     # area code string id per city
    city_codes_start: np.ndarray  # postal codes of city c: codes[start[c]:start[c]+count[c]]
    city_codes_count: np.ndarray
    codes: np.ndarray         # postal code string ids
    code_city: np.ndarray     # city string id of each postal code
    titles: np.ndarray
    title_p: np.ndarray
    mobile: np.ndarray
    freemail: np.ndarray


@dataclass
class _Pools:
    strings: _Strings
    countries: list[_Country]
    country_ids: np.ndarray
    salutations: np.ndarray
    departments: np.ndarray
    department_p: np.ndarray
    mailboxes: np.ndarray
    owners: np.ndarray
    owner_p: np.ndarray
    editors: np.ndarray
    editor_p: np.ndarray
    type_ids: np.ndarray
    type_p: np.ndarray
    subjects: np.ndarray      # [type, k] → string id
    notes: np.ndarray


_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})
_LEGAL_FORMS = re.compile(
    r"\b(gmbh|ag|kg|og|ohg|kgaa|se|ug|e\.?\s?g\.?|e\.?\s?v\.?|gbr|mbh|co|cie|partner|& ?co\.?|sàrl|sa|ltd)\b\.?",
)


def _slug(text: str, sep: str = "") -> str:
    """ASCII e-mail spelling: Jürgen → juergen, Müller & Söhne GmbH → mueller-soehne (with sep '-')."""
    text = unicodedata.normalize("NFKD", text.translate(_TRANSLIT).lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    if sep:
        text = _LEGAL_FORMS.sub(" ", text)
    words = re.findall(r"[a-z0-9]+", text)
    return sep.join(words) if sep else "".join(words)


def _unique(make: Callable[[], str], n: int) -> list[str]:
    """Up to ``n`` distinct values of ``make()``, in first-seen order; stops once the source runs dry."""
    seen: dict[str, None] = {}
    stale = 0
    while len(seen) < n and stale < 200:
        before = len(seen)
        seen.setdefault(make(), None)
        stale = 0 if len(seen) > before else stale + 1
    return list(seen)


@lru_cache(maxsize=4)
def _pools(seed: int) -> _Pools:
    from faker import Faker

    strings = _Strings()
    rng = np.random.default_rng([seed, 7_777_777])
    countries = []
    for ci, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 31 + ci)
        male = _unique(fake.first_name_male, _POOL_SIZE // 3)
        female = _unique(fake.first_name_female, _POOL_SIZE // 3)
        last = [x for x in _unique(fake.last_name, _POOL_SIZE // 2) if " " not in x]  # no "Koch II"
        streets = _unique(fake.street_name, _POOL_SIZE)
        companies = _unique(fake.company, _POOL_SIZE)
        domains = [f"{_slug(c, '-') or 'firma'}.{TLD[ci]}" for c in companies]

        # Cities: the big ones with real codes, then Faker's list, each with invented but unique codes.
        majors = _MAJOR_CITIES[ci]
        major_names = {m[0] for m in majors}
        provider = fake.provider("faker.providers.address")
        towns = [c for c in dict.fromkeys(getattr(provider, "cities", ()) or _unique(fake.city, 300))
                 if c not in major_names]
        taken = {code for m in majors for code in m[1]}
        digits = 5 if ci == 0 else 4
        low, high = (1067, 99999) if ci == 0 else (1000, 9999)
        town_codes: list[list[str]] = []
        for _ in towns:
            k = 1 + int(rng.random() < 0.25)
            codes = []
            while len(codes) < k:
                code = f"{int(rng.integers(low, high + 1)):0{digits}d}"
                if code not in taken:
                    taken.add(code)
                    codes.append(code)
            town_codes.append(codes)
        names = [m[0] for m in majors] + towns
        all_codes = [list(m[1]) for m in majors] + town_codes
        # Towns follow a Zipf-like tail; the majors keep their fixed weights.
        tail = 1.0 / (np.arange(len(towns)) + 8.0)
        tail = tail / tail.sum() * 40.0
        weights = np.concatenate([[m[3] for m in majors], rng.permutation(tail)])
        area = [m[2] for m in majors] + [
            str(int(rng.integers(200, 999))) if ci != 2 else str(int(rng.choice([24, 26, 27, 32, 33, 34, 43,
                                                                                   52, 55, 56, 62, 81])))
            for _ in towns
        ]
        if ci == 0:  # German towns mostly have four-digit area codes
            area = area[: len(majors)] + [a + str(int(rng.integers(0, 10))) if rng.random() < 0.7 else a
                                          for a in area[len(majors):]]
        counts = np.array([len(c) for c in all_codes], dtype=np.int64)
        flat_codes = [code for cs in all_codes for code in cs]
        flat_city = [names[i] for i, cs in enumerate(all_codes) for _ in cs]
        titles = _TITLES[ci]
        title_p = np.array([p for _, p in titles])
        countries.append(_Country(
            male=strings.add(male), male_slug=strings.add([_slug(x) for x in male]),
            female=strings.add(female), female_slug=strings.add([_slug(x) for x in female]),
            last=strings.add(last), last_slug=strings.add([_slug(x) for x in last]),
            streets=strings.add(streets), companies=strings.add(companies), domains=strings.add(domains),
            city_p=weights / weights.sum(), city_area=strings.add(area),
            city_codes_start=np.concatenate([[0], np.cumsum(counts)[:-1]]), city_codes_count=counts,
            codes=strings.add(flat_codes), code_city=strings.add(flat_city),
            titles=strings.add([t for t, _ in titles]),
            title_p=np.append(title_p, 1.0 - title_p.sum()),
            mobile=strings.add(_MOBILE_PREFIXES[ci]), freemail=strings.add(_FREEMAIL[ci]),
        ))
    return _Pools(
        strings=strings, countries=countries, country_ids=strings.add(COUNTRIES),
        salutations=strings.add(_SALUTATIONS),
        departments=strings.add([d for d, _ in _DEPARTMENTS]),
        department_p=_norm([p for _, p in _DEPARTMENTS]),
        mailboxes=strings.add(_COMPANY_MAILBOX),
        owners=strings.add([u for u, _ in _OWNERS]), owner_p=_norm([p for _, p in _OWNERS]),
        editors=strings.add([u for u, _ in _EDITORS]), editor_p=_norm([p for _, p in _EDITORS]),
        type_ids=strings.add([t[0] for t in _CONTACT_TYPES]), type_p=_norm([t[1] for t in _CONTACT_TYPES]),
        subjects=np.stack([strings.add(t[2]) for t in _CONTACT_TYPES]),
        notes=np.stack([strings.add(t[3]) for t in _CONTACT_TYPES]),
    )


def _norm(weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


# -- one chunk as integer frames ----------------------------------------------------------------------

_NONE = -1  # a string id that matches nothing: the column becomes NULL
_SECONDS_PER_DAY = 86_400
_YEARS_BACK = 8


def _business_times(rng: np.random.Generator, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Random office-hour timestamps (epoch seconds) on weekdays between ``start`` and ``end``."""
    t = start + (rng.random(len(start)) * np.maximum(end - start, 0)).astype(np.int64)
    day = t // _SECONDS_PER_DAY
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    day = day - np.maximum(weekday - 4, 0)  # Saturday/Sunday → the Friday before
    secs = rng.integers(7 * 3600 + 30 * 60, 18 * 3600, len(t))
    return np.clip(day * _SECONDS_PER_DAY + secs, start, end)


def _chunk(pools: _Pools, seed: int, k: int, n: int, today: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Chunk ``k`` of ``n`` addresses as integer frames; ids are 1-based within the chunk."""
    rng = np.random.default_rng([seed, k])
    # Naive local times in epoch seconds (no time zone involved): the day before ``today``, 18:00.
    end = (today - date(1970, 1, 1)).days * _SECONDS_PER_DAY - 6 * 3600

    # Groups: a company with its contact persons, or a private person. Draw more than enough groups,
    # then cut the last group so the chunk holds exactly n rows.
    is_company = rng.random(n) < _COMPANY_SHARE
    subs = rng.choice(len(_CONTACT_PERSONS_P), n, p=_CONTACT_PERSONS_P)
    sizes = np.where(is_company, 1 + subs, 1)
    cum = np.cumsum(sizes)
    g = int(np.searchsorted(cum, n)) + 1
    sizes, is_company = sizes[:g].copy(), is_company[:g]
    sizes[-1] -= int(cum[g - 1]) - n
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    group = np.repeat(np.arange(g), sizes)
    pos = np.arange(n) - starts[group]
    is_main = pos == 0
    row_company = is_company[group]
    is_person = ~(is_main & row_company)
    rel_id = np.arange(1, n + 1, dtype=np.int64)
    parent = np.where(is_main, 0, starts[group] + 1)

    # Per group: country, place, owner, creation.
    g_country = rng.choice(3, g, p=COUNTRY_WEIGHTS)
    g_city = np.empty(g, dtype=np.int64)
    g_code = np.empty(g, dtype=np.int64)
    g_code_city = np.empty(g, dtype=np.int64)
    g_area = np.empty(g, dtype=np.int64)
    g_street = np.empty(g, dtype=np.int64)
    g_company = np.full(g, _NONE, dtype=np.int64)
    g_domain = np.full(g, _NONE, dtype=np.int64)
    for ci, c in enumerate(pools.countries):
        m = g_country == ci
        cnt = int(m.sum())
        city = rng.choice(len(c.city_p), cnt, p=c.city_p)
        pick = c.city_codes_start[city] + (rng.random(cnt) * c.city_codes_count[city]).astype(np.int64)
        g_city[m] = city
        g_code[m] = c.codes[pick]
        g_code_city[m] = c.code_city[pick]
        g_area[m] = c.city_area[city]
        g_street[m] = c.streets[rng.integers(0, len(c.streets), cnt)]
        comp = rng.integers(0, len(c.companies), cnt)
        g_company[m] = np.where(is_company[m], c.companies[comp], _NONE)
        g_domain[m] = np.where(is_company[m], c.domains[comp], _NONE)
    g_house = rng.integers(1, 180, g)
    g_house_suffix = np.where(rng.random(g) < 0.06, rng.integers(1, 4, g), 0)  # 12a, 12b, 12c
    g_sub = rng.integers(100_000, 10_000_000, g)  # switchboard / landline number
    g_owner = pools.owners[rng.choice(len(pools.owners), g, p=pools.owner_p)]
    first_day = end - _YEARS_BACK * 365 * _SECONDS_PER_DAY
    g_created = _business_times(rng, np.full(g, first_day), np.full(g, end))

    country = g_country[group]
    # Per row: persons get a gender, name, maybe a title; contact persons a department.
    gender = rng.choice(3, n, p=(0.49, 0.49, 0.02))
    first = np.full(n, _NONE, dtype=np.int64)
    first_slug = np.full(n, _NONE, dtype=np.int64)
    last = np.full(n, _NONE, dtype=np.int64)
    last_slug = np.full(n, _NONE, dtype=np.int64)
    title = np.full(n, _NONE, dtype=np.int64)
    area = g_area[group].copy()
    mail_domain = g_domain[group].copy()
    for ci, c in enumerate(pools.countries):
        m = (country == ci) & is_person
        cnt = int(m.sum())
        female = rng.random(cnt) < 0.5
        fem = np.where(gender[m] == 1, True, np.where(gender[m] == 0, False, female))
        mi = rng.integers(0, len(c.male), cnt)
        fi = rng.integers(0, len(c.female), cnt)
        first[m] = np.where(fem, c.female[fi], c.male[mi])
        first_slug[m] = np.where(fem, c.female_slug[fi], c.male_slug[mi])
        li = rng.integers(0, len(c.last), cnt)
        last[m] = c.last[li]
        last_slug[m] = c.last_slug[li]
        t = rng.choice(len(c.title_p), cnt, p=c.title_p)
        title[m] = np.where(t < len(c.titles), c.titles[np.minimum(t, len(c.titles) - 1)], _NONE)
        # Private persons: a third use a mobile number, and a free-mail address.
        private = m & ~row_company
        pc = int(private.sum())
        area[private] = np.where(rng.random(pc) < 0.35, c.mobile[rng.integers(0, len(c.mobile), pc)],
                                 area[private])
        mail_domain[private] = c.freemail[rng.integers(0, len(c.freemail), pc)]
    salutation = np.where(is_person, pools.salutations[gender], pools.salutations[3])
    department = np.where(row_company & ~is_main,
                          pools.departments[rng.choice(len(pools.departments), n, p=pools.department_p)], _NONE)

    # Phone: a company's switchboard ends in -0, its contact persons have extensions; in Switzerland
    # direct lines are usual, and private persons have their own number. phone_kind 0 = none.
    sub = np.where(row_company & (country != 2), g_sub[group], rng.integers(1_000_000, 10_000_000, n))
    ext = np.where(is_main, 0, rng.integers(10, 400, n))
    phone_kind = np.where(rng.random(n) < 0.06, 0, np.where(row_company & (country != 2), 2, 1))
    # E-mail: 1 mailbox@company, 2 first.last@domain, 3 f.last@domain, 4 first.last<NN>@freemail, 0 none.
    r = rng.random(n)
    email_kind = np.select(
        [is_main & row_company, row_company, ~row_company],
        [1, np.where(r < 0.75, 2, 3), np.where(r < 0.45, 2, 4)],
    )
    email_kind = np.where(rng.random(n) < 0.05, 0, email_kind)
    mailbox = pools.mailboxes[rng.integers(0, len(pools.mailboxes), n)]
    email_num = rng.integers(1, 99, n)

    # Sub-addresses arrive after their company; some records were edited later by someone.
    g_start = g_created[group]
    created = np.where(is_main, g_start, _business_times(
        rng, g_start, np.minimum(g_start + 400 * _SECONDS_PER_DAY, end)))
    edited = rng.random(n) < 0.6
    modified = np.where(edited, _business_times(rng, created, np.full(n, end)), created)
    created_by = pools.editors[rng.choice(len(pools.editors), n, p=pools.editor_p)]
    modified_by = np.where(edited, pools.editors[rng.choice(len(pools.editors), n, p=pools.editor_p)], created_by)

    addresses = pd.DataFrame({
        "rel_id": rel_id, "parent": parent, "is_company": (is_main & row_company),
        "company": g_company[group], "salutation": salutation, "title": title,
        "first": first, "last": last, "first_slug": first_slug, "last_slug": last_slug,
        "department": department, "street": g_street[group], "house": g_house[group],
        "house_suffix": g_house_suffix[group], "postal_code": g_code[group], "city": g_code_city[group],
        "country": pools.country_ids[country], "country_ix": country, "area": area, "sub": sub, "ext": ext,
        "phone_kind": phone_kind, "email_kind": email_kind, "mailbox": mailbox, "mail_domain": mail_domain,
        "email_num": email_num, "owner": g_owner[group], "created_by": created_by,
        "created_at": created.astype("datetime64[s]"), "modified_by": modified_by,
        "modified_at": modified.astype("datetime64[s]"),
    })

    # Contact history: a Poisson number per address, between its creation and today, oldest first.
    kind = np.where(is_main & row_company, 0, np.where(row_company, 1, 2))
    per = np.minimum(rng.poisson(np.asarray(_CONTACTS_MEAN)[kind]), 25)
    addr = np.repeat(np.arange(n), per)
    m = len(addr)
    at = _business_times(rng, created[addr], np.full(m, end))
    order = np.lexsort((at, addr))
    addr, at = addr[order], at[order]
    ctype = rng.choice(len(pools.type_ids), m, p=pools.type_p)
    by_owner = rng.random(m) < 0.7
    user = np.where(by_owner, g_owner[group][addr], pools.editors[rng.choice(len(pools.editors), m,
                                                                               p=pools.editor_p)])
    contacts = pd.DataFrame({
        "rel_id": np.arange(1, m + 1, dtype=np.int64), "addr": rel_id[addr],
        "happened_at": at.astype("datetime64[s]"), "type_code": pools.type_ids[ctype],
        "subject": pools.subjects[ctype, rng.integers(0, _CONTACT_SUBJECTS, m)],
        "notes": np.where(rng.random(m) < 0.35, _NONE, pools.notes[ctype, rng.integers(0, _CONTACT_NOTES, m)]),
        "user_name": user,
    })
    return addresses, contacts


# -- the SQL that turns integer frames into rows ------------------------------------------------------

_ADDRESS_SELECT = """
SELECT a.rel_id + $base AS id,
       CASE WHEN a.parent > 0 THEN a.parent + $base END AS parent_id,
       CASE WHEN a.is_company THEN 'company' ELSE 'person' END AS kind,
       co.s AS company, sa.s AS salutation, ti.s AS title, fn.s AS first_name, ln.s AS last_name,
       de.s AS department,
       st.s || ' ' || a.house || CASE a.house_suffix WHEN 1 THEN 'a' WHEN 2 THEN 'b' WHEN 3 THEN 'c' ELSE '' END
           AS street,
       pc.s AS postal_code, ci.s AS city, cy.s AS country,
       CASE a.phone_kind
           WHEN 0 THEN NULL
           WHEN 2 THEN '+' || CASE a.country_ix WHEN 0 THEN '49' ELSE '43' END || ' ' || ar.s || ' '
                       || a.sub || '-' || a.ext
           ELSE '+' || CASE a.country_ix WHEN 0 THEN '49' WHEN 1 THEN '43' ELSE '41' END || ' ' || ar.s || ' '
                || CASE a.country_ix WHEN 2 THEN printf('%03d %02d %02d', a.sub // 10000 % 1000,
                                                        a.sub // 100 % 100, a.sub % 100)
                                     ELSE CAST(a.sub AS VARCHAR) END
       END AS phone,
       CASE a.email_kind
           WHEN 1 THEN mb.s || '@' || dm.s
           WHEN 2 THEN fs.s || '.' || ls.s || '@' || dm.s
           WHEN 3 THEN left(fs.s, 1) || '.' || ls.s || '@' || dm.s
           WHEN 4 THEN fs.s || '.' || ls.s || a.email_num || '@' || dm.s
       END AS email,
       ow.s AS owner, cb.s AS created_by, a.created_at, mb2.s AS modified_by, a.modified_at
FROM {a} a
LEFT JOIN {s} co ON co.i = a.company
LEFT JOIN {s} sa ON sa.i = a.salutation
LEFT JOIN {s} ti ON ti.i = a.title
LEFT JOIN {s} fn ON fn.i = a.first
LEFT JOIN {s} ln ON ln.i = a.last
LEFT JOIN {s} fs ON fs.i = a.first_slug
LEFT JOIN {s} ls ON ls.i = a.last_slug
LEFT JOIN {s} de ON de.i = a.department
LEFT JOIN {s} st ON st.i = a.street
LEFT JOIN {s} pc ON pc.i = a.postal_code
LEFT JOIN {s} ci ON ci.i = a.city
LEFT JOIN {s} cy ON cy.i = a.country
LEFT JOIN {s} ar ON ar.i = a.area
LEFT JOIN {s} mb ON mb.i = a.mailbox
LEFT JOIN {s} dm ON dm.i = a.mail_domain
LEFT JOIN {s} ow ON ow.i = a.owner
LEFT JOIN {s} cb ON cb.i = a.created_by
LEFT JOIN {s} mb2 ON mb2.i = a.modified_by
"""

_CONTACT_SELECT = """
SELECT c.rel_id + $cbase AS id, c.addr + $base AS address_id, c.happened_at, ty.s AS type_code,
       su.s AS subject, no.s AS notes, us.s AS user_name, 'demo' AS source
FROM {c} c
LEFT JOIN {s} ty ON ty.i = c.type_code
LEFT JOIN {s} su ON su.i = c.subject
LEFT JOIN {s} no ON no.i = c.notes
LEFT JOIN {s} us ON us.i = c.user_name
"""

_ADDRESS_COLUMNS = (
    "id, parent_id, kind, company, salutation, title, first_name, last_name, department, street, postal_code, "
    "city, country, phone, email, owner, created_by, created_at, modified_by, modified_at"
)
_CONTACT_COLUMNS = "id, address_id, happened_at, type_code, subject, notes, user_name, source"
_NAMES = {"a": "_crmkit_demo_a", "c": "_crmkit_demo_c", "s": "_crmkit_demo_s"}


def _chunks(addresses: int) -> list[int]:
    full, rest = divmod(addresses, CHUNK_ROWS)
    return [CHUNK_ROWS] * full + ([rest] if rest else [])


def _check(addresses: Any, seed: Any) -> None:
    if isinstance(addresses, bool) or not isinstance(addresses, int | np.integer) or not (
        0 <= addresses <= MAX_ADDRESSES
    ):
        raise ValidationError(f"addresses must be a whole number from 0 to {MAX_ADDRESSES:,}, not {addresses!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValidationError(f"seed must be a whole number ≥ 0, not {seed!r}.")


def frames(
    addresses: int, *, seed: int = 42, first_id: int = 1, first_contact_id: int = 1, today: date = DEMO_TODAY,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The demo addresses and contacts :func:`generate` would write, as DataFrames, without a store.

    Meant for tests and notebooks; for large counts use :func:`generate`, which streams chunks.
    """
    _check(addresses, seed)
    pools = _pools(int(seed))
    con = duckdb.connect(":memory:")
    try:
        con.register(_NAMES["s"], pools.strings.frame())
        out_a, out_c = [], []
        base, cbase = first_id - 1, first_contact_id - 1
        for k, n in enumerate(_chunks(addresses) or [0]):
            a, c = _frames_of_chunk(pools, int(seed), k, n, today)
            con.register(_NAMES["a"], a)
            con.register(_NAMES["c"], c)
            params = {"base": base, "cbase": cbase}
            out_a.append(con.execute(_ADDRESS_SELECT.format(**_NAMES) + " ORDER BY id", {"base": base}).df())
            out_c.append(con.execute(_CONTACT_SELECT.format(**_NAMES) + " ORDER BY id", params).df())
            base += n
            cbase += len(c)
        return (pd.concat(out_a, ignore_index=True), pd.concat(out_c, ignore_index=True))
    finally:
        con.close()


def _frames_of_chunk(pools: _Pools, seed: int, k: int, n: int, today: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    if n:
        return _chunk(pools, seed, k, n, today)
    a, c = _chunk(pools, seed, k, 1, today)  # the same columns, no rows
    return a.iloc[:0], c.iloc[:0]


# -- writing into a store --------------------------------------------------------------------------------

def generate(
    crm_or_store: Any, addresses: int, *, seed: int = 42, progress: Progress | None = None,
    replace: bool = False, today: date = DEMO_TODAY,
) -> dict[str, Any]:
    """Write ``addresses`` demo addresses (main and sub-addresses), their contact history and the demo users.

    Args:
        crm_or_store: a :class:`crmkit.CRM` session (its user needs ``system.admin``) or a
            :class:`crmkit.Store` (trusted code; acts as the built-in ``admin``).
        addresses: how many address rows to add, sub-addresses included (0 only adds the users).
        seed: the same seed and count give the same rows.
        progress: ``progress(done, total)`` after each committed chunk of :data:`CHUNK_ROWS` addresses.
        replace: delete all addresses and contacts first (ids are not reused); otherwise append.
        today: the day the generated history ends (default :data:`DEMO_TODAY`, for determinism).

    Returns:
        Counts: ``addresses``, ``companies``, ``persons``, ``sub_addresses``, ``contacts``,
        ``users_added``, ``first_id``, ``last_id``, ``seconds``.

    Raises:
        PermissionDenied: the session user lacks ``system.admin``; nothing was written.
        ValidationError: a bad count or seed.
        StoreError: the database cannot be written.
    """
    from .session import Session
    from .store import Store

    started = time.perf_counter()
    if isinstance(crm_or_store, Session):  # a CRM is a Session
        crm_or_store.require("system.admin")
        store, actor = crm_or_store.store, crm_or_store.user.name
    elif isinstance(crm_or_store, Store):
        store, actor = crm_or_store, "admin"
    else:
        raise ValidationError(f"generate() takes a CRM session or a Store, not {type(crm_or_store).__name__}.")
    _check(addresses, seed)
    seed, addresses = int(seed), int(addresses)
    pools = _pools(seed)
    strings = pools.strings.frame()
    sizes = _chunks(addresses) or [0]
    summary: dict[str, Any] = {"addresses": 0, "companies": 0, "persons": 0, "sub_addresses": 0, "contacts": 0,
                               "users_added": [], "first_id": None, "last_id": None}
    if progress is not None:
        progress(0, addresses)
    # On PostgreSQL the strings are built where the integer frames are (a private DuckDB running the same
    # SELECTs) and the finished rows go in by COPY: DuckDB's own functions (printf, //) and its DataFrame
    # scans are not PostgreSQL's, and COPY is PostgreSQL's bulk path. Its database file lives in a temporary
    # folder, so the search words gathered for the end stay on disk, not in memory.
    render, folder = None, None
    if store.dialect == "postgresql":
        folder = tempfile.TemporaryDirectory(prefix="crmkit-demo-")
        render = duckdb.connect(os.path.join(folder.name, "render.duckdb"))
        render.register(_NAMES["s"], strings)
        render.execute(f"CREATE TABLE {_WORDS} (word VARCHAR, address_id BIGINT)")
    try:
        summary = _generate_chunks(store, render, sizes, pools, seed, today, replace, actor, addresses, strings,
                                   summary, progress)
        if addresses and render is not None:
            store.write(lambda tx: _copy_words(tx, render, replace))
            _vacuum(store)
    finally:
        if render is not None:
            render.close()
        if folder is not None:
            folder.cleanup()
    if addresses and render is None:
        from .addresses import rebuild_search_index

        store.write(rebuild_search_index)  # once, in word order, instead of indexing chunk by chunk
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


_WORDS = "_crmkit_demo_words"


def _copy_chunk(tx: Tx, render: duckdb.DuckDBPyConnection, a: pd.DataFrame, c: pd.DataFrame,
                params: dict[str, int]) -> None:
    """PostgreSQL: one chunk's addresses and contacts, built in ``render``, by COPY; its search words are
    kept in ``render`` for :func:`_copy_words`.

    The words come from DuckDB's words_sql (PostgreSQL's matches it word for word): DuckDB finds the distinct
    words of 250,000 addresses in well under a second, PostgreSQL's DISTINCT over them took ~8 s.
    """
    from .addresses import words_sql

    rows = "_crmkit_demo_rows"
    render.register(_NAMES["a"], a)
    render.register(_NAMES["c"], c)
    try:
        render.execute(f"CREATE OR REPLACE TEMP TABLE {rows} AS " + _ADDRESS_SELECT.format(**_NAMES),
                       {"base": params["base"]})
        tx.copy_frame("addresses", render.table(rows))  # type: ignore[attr-defined]
        tx.copy_frame("contacts", render.sql(_CONTACT_SELECT.format(**_NAMES),  # type: ignore[attr-defined]
                                             params=params))
        # a retried chunk (a conflict) gathers its words once
        render.execute(f"DELETE FROM {_WORDS} WHERE address_id > ?", [params["base"]])
        render.execute(f"INSERT INTO {_WORDS} {words_sql(table=rows)}")
    finally:
        render.execute(f"DROP TABLE IF EXISTS {rows}")
        render.unregister(_NAMES["a"])
        render.unregister(_NAMES["c"])


def _vacuum(store: Any) -> None:
    """PostgreSQL: VACUUM (ANALYZE) the addresses, so the record table's index-only scans work at once.

    Right after a bulk load no page is marked all-visible: the planner then costs an index-only scan on
    (city, id) as a heap scan and walks the primary key instead (120 ms for a deep Berlin page at 1,000,000
    addresses instead of 4 ms) until autovacuum comes by. VACUUM cannot run in a transaction, so this is its
    own autocommit connection; without ownership PostgreSQL skips the table with a warning. Best effort:
    the load itself is committed already.
    """
    import psycopg

    try:
        with psycopg.connect(store.backend.url, autocommit=True, application_name="crmkit-demo-data") as con:
            con.execute("VACUUM (ANALYZE) addresses")  # the words' prefix scans read the heap anyway
    except psycopg.Error:
        pass  # autovacuum does the same later


def _copy_words(tx: Tx, render: duckdb.DuckDBPyConnection, replace: bool) -> None:
    """PostgreSQL: the gathered search words into address_words in one transaction.

    Keeping address_words' two btree indexes up to date row by row cost ~30 s at 1,000,000 addresses
    (7.4 million words); built once after the COPY they take ~12 s. So when this login owns the table, the
    indexes are dropped and built again from their own definitions (pg_indexes) in this transaction: a
    failure rolls the drop back, and searches in other sessions wait for the commit instead of missing
    the index. Without ownership (a database role of a CRM user) the rows go in with the indexes in place.
    """
    owner = tx.one("SELECT pg_has_role(tableowner, 'USAGE') FROM pg_tables "
                   "WHERE schemaname = current_schema() AND tablename = 'address_words'")
    indexes = tx.rows("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                      "AND tablename = 'address_words' ORDER BY indexname") if owner else []
    for name, _ in indexes:
        tx.execute(f'DROP INDEX "{name}"')
    if replace:
        tx.execute("DELETE FROM address_words")
    # In word order (DuckDB sorts bytes, as the text_pattern_ops index does), so a prefix's rows sit together: the
    # search "berlin gmbh" at 1,000,000 addresses read 68,000 heap pages in address order, 1,400 in word order.
    tx.copy_frame("address_words", render.sql(  # type: ignore[attr-defined]
        f"SELECT word, address_id FROM {_WORDS} ORDER BY word, address_id"))
    tx.execute("ANALYZE addresses")  # the planner's row estimates right after a bulk load (no owner: a warning)
    tx.execute("ANALYZE address_words")
    for _, definition in indexes:
        tx.execute(definition)


def _generate_chunks(
    store: Any, render: duckdb.DuckDBPyConnection | None, sizes: list[int], pools: _Pools, seed: int, today: date,
    replace: bool, actor: str, addresses: int, strings: pd.DataFrame, summary: dict[str, Any],
    progress: Progress | None,
) -> dict[str, Any]:
    from .addresses import write_new

    done = 0
    for k, n in enumerate(sizes):
        a, c = _frames_of_chunk(pools, seed, k, n, today)

        def run(tx: Tx, k: int = k, n: int = n, a: pd.DataFrame = a, c: pd.DataFrame = c) -> int:
            # rows(), not one(): DuckDB refuses register() while a fetchone() result is still open.
            (base, cbase), = tx.rows(
                "SELECT (SELECT coalesce(max(id), 0) FROM addresses), (SELECT coalesce(max(id), 0) FROM contacts)"
            )
            if k == 0:
                if replace:  # ids stay taken: the transfer log and outbox may still name the old ones
                    tx.execute("DELETE FROM contacts")
                    tx.execute("DELETE FROM addresses")
                added = _add_users(tx)
                tx.execute(
                    "INSERT INTO audit (changed_at, user_name, scope, key, old_value, new_value) "
                    "VALUES (?, ?, 'demo_data', 'generate', NULL, ?)",
                    [datetime.now().replace(microsecond=0), actor,
                     json.dumps({"addresses": addresses, "seed": seed, "replace": replace, "users_added": added})],
                )
                summary["users_added"] = added
            params = {"base": base, "cbase": cbase}
            if render is not None:
                _copy_chunk(tx, render, a, c, params)
                return int(base)
            tx.register(_NAMES["s"], strings)
            tx.register(_NAMES["a"], a)
            tx.register(_NAMES["c"], c)
            try:
                tx.execute(f"INSERT INTO addresses ({_ADDRESS_COLUMNS}) " + _ADDRESS_SELECT.format(**_NAMES),
                           {"base": base})
                tx.execute(f"INSERT INTO contacts ({_CONTACT_COLUMNS}) " + _CONTACT_SELECT.format(**_NAMES), params)
            finally:
                for name in _NAMES.values():
                    tx.unregister(name)
            return int(base)

        base = write_new(store, run)  # a chunk numbers its rows after max(id): retried on PostgreSQL's id race
        if n:
            if summary["first_id"] is None:
                summary["first_id"] = base + 1
            summary["last_id"] = base + n
            companies = int(a["is_company"].sum())
            subs = int((a["parent"] > 0).sum())
            summary["addresses"] += n
            summary["companies"] += companies
            summary["sub_addresses"] += subs
            summary["persons"] += n - companies
            summary["contacts"] += len(c)
            done += n
            if progress is not None:
                progress(done, addresses)
    return summary


def _add_users(tx: Tx) -> list[str]:
    """Create the demo users that do not exist yet (an existing user keeps its roles)."""
    existing = {r[0] for r in tx.rows("SELECT name FROM users")}
    added = []
    for name, display, role in DEMO_USERS:
        if name in existing:
            continue
        first, last = display.split(" ", 1)
        tx.execute("INSERT INTO users (name, display_name, email) VALUES (?, ?, ?)",
                   [name, display, f"{_slug(first)}.{_slug(last)}@{DEMO_DOMAIN}"])
        tx.execute("INSERT INTO user_roles VALUES (?, ?)", [name, role])
        added.append(name)
    return added
