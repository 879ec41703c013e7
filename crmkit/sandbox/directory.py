"""The seeded organisation of the sandbox tenant (deterministic, so ids are stable across runs)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from . import (
    SANDBOX_ADMIN_UPN,
    SANDBOX_DEFAULT_UPN,
    SANDBOX_DISABLED_UPN,
    SANDBOX_DOMAIN,
    SANDBOX_GUEST_UPN,
    SANDBOX_MFA_UPN,
    SANDBOX_TENANT_ID,
)

_NAMESPACE = uuid.UUID(SANDBOX_TENANT_ID)

# Properties a Graph client may $select on users (subset of microsoft.graph.user).
USER_PROPERTIES: tuple[str, ...] = (
    "id", "displayName", "givenName", "surname", "mail", "userPrincipalName", "jobTitle",
    "department", "officeLocation", "businessPhones", "mobilePhone", "preferredLanguage",
    "accountEnabled", "userType", "companyName", "city", "country", "usageLocation",
)
# What GET /users and GET /me return without $select (documented default set).
DEFAULT_USER_PROPERTIES: tuple[str, ...] = (
    "businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
    "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id",
)
# User.ReadBasic.All only exposes these.
BASIC_USER_PROPERTIES: frozenset[str] = frozenset(
    {"displayName", "givenName", "id", "mail", "surname", "userPrincipalName"}
)


@dataclass(frozen=True)
class SandboxUser:
    id: str
    userPrincipalName: str
    displayName: str
    givenName: str | None
    surname: str | None
    mail: str | None
    jobTitle: str | None
    department: str | None
    officeLocation: str | None
    businessPhones: tuple[str, ...] = ()
    mobilePhone: str | None = None
    preferredLanguage: str | None = "en-US"
    accountEnabled: bool = True
    userType: str = "Member"
    companyName: str | None = "Contoso"
    city: str | None = None
    country: str | None = None
    usageLocation: str | None = None
    # Sandbox-only behaviour, never shown through Graph.
    mfa_required: bool = False
    admin_roles: tuple[str, ...] = field(default=())

    def graph(self, props: tuple[str, ...] | list[str] = DEFAULT_USER_PROPERTIES) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in props:
            v = getattr(self, p)
            out[p] = list(v) if isinstance(v, tuple) else v
        return out

    @property
    def can_admin_consent(self) -> bool:
        return bool({"Global Administrator", "Privileged Role Administrator"} & set(self.admin_roles))


def user_id_for(upn: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, upn.lower()))


_OFFICES = {
    "Berlin": ("Berlin", "Germany", "DE", "+49 30 5550"),
    "Munich": ("Munich", "Germany", "DE", "+49 89 5550"),
    "Vienna": ("Vienna", "Austria", "AT", "+43 1 5550"),
    "Zurich": ("Zurich", "Switzerland", "CH", "+41 44 555"),
    "London": ("London", "United Kingdom", "GB", "+44 20 5550"),
}

# (given, surname, department, title, office).  Invented people; any resemblance is chance.
_PEOPLE: tuple[tuple[str, str, str, str, str], ...] = (
    ("Anna", "Schmidt", "Sales", "Account Executive", "Berlin"),
    ("Jonas", "Becker", "Sales", "Sales Director", "Berlin"),
    ("Lea", "Hoffmann", "Sales", "Account Executive", "Munich"),
    ("Paul", "Wagner", "Sales", "Inside Sales Representative", "Munich"),
    ("Marie", "Fischer", "Sales", "Key Account Manager", "Vienna"),
    ("Lukas", "Weber", "Sales", "Account Executive", "Zurich"),
    ("Sophie", "Meyer", "Sales", "Sales Operations Analyst", "Berlin"),
    ("Felix", "Schulz", "Sales", "Business Development Manager", "London"),
    ("Emma", "Koch", "Sales", "Account Executive", "London"),
    ("Noah", "Richter", "Sales", "Regional Sales Manager", "Vienna"),
    ("Mia", "Klein", "Marketing", "Marketing Director", "Berlin"),
    ("Elias", "Wolf", "Marketing", "Content Strategist", "Berlin"),
    ("Hannah", "Neumann", "Marketing", "Campaign Manager", "Munich"),
    ("Ben", "Schwarz", "Marketing", "Marketing Analyst", "London"),
    ("Lena", "Zimmermann", "Marketing", "Event Manager", "Zurich"),
    ("Leon", "Braun", "Marketing", "Product Marketing Manager", "Berlin"),
    ("Clara", "Krüger", "Finance", "Chief Financial Officer", "Berlin"),
    ("Finn", "Hofmann", "Finance", "Controller", "Munich"),
    ("Ida", "Hartmann", "Finance", "Accountant", "Vienna"),
    ("Max", "Lange", "Finance", "Financial Analyst", "Berlin"),
    ("Ella", "Schmitt", "Finance", "Accounts Receivable Specialist", "Zurich"),
    ("Henry", "Walker", "Finance", "Treasury Manager", "London"),
    ("Greta", "Krause", "Engineering", "VP Engineering", "Berlin"),
    ("Theo", "Lehmann", "Engineering", "Software Engineer", "Berlin"),
    ("Frieda", "Köhler", "Engineering", "Senior Software Engineer", "Munich"),
    ("Oskar", "Herrmann", "Engineering", "Site Reliability Engineer", "Munich"),
    ("Mila", "König", "Engineering", "Data Engineer", "Vienna"),
    ("Emil", "Walter", "Engineering", "Software Engineer", "Zurich"),
    ("Luisa", "Mayer", "Engineering", "QA Engineer", "Berlin"),
    ("Anton", "Huber", "Engineering", "Engineering Manager", "Vienna"),
    ("Nora", "Kaiser", "Engineering", "Security Engineer", "London"),
    ("Karl", "Fuchs", "Engineering", "Software Engineer", "Berlin"),
    ("Amelie", "Peters", "Customer Success", "Head of Customer Success", "Berlin"),
    ("Jakob", "Lang", "Customer Success", "Customer Success Manager", "Munich"),
    ("Charlotte", "Scholz", "Customer Success", "Support Engineer", "Berlin"),
    ("David", "Möller", "Customer Success", "Customer Success Manager", "London"),
    ("Johanna", "Weiß", "Customer Success", "Onboarding Specialist", "Vienna"),
    ("Moritz", "Jung", "Customer Success", "Support Engineer", "Zurich"),
    ("Laura", "Hahn", "Human Resources", "HR Director", "Berlin"),
    ("Simon", "Schubert", "Human Resources", "Recruiter", "Munich"),
    ("Julia", "Vogel", "Human Resources", "HR Business Partner", "Vienna"),
    ("Tim", "Friedrich", "Human Resources", "Payroll Specialist", "Berlin"),
    ("Sarah", "Keller", "Legal", "General Counsel", "Zurich"),
    ("Jan", "Günther", "Legal", "Legal Counsel", "Berlin"),
    ("Katharina", "Frank", "Legal", "Compliance Officer", "London"),
    ("Tobias", "Berger", "Operations", "Chief Operating Officer", "Berlin"),
    ("Lisa", "Winkler", "Operations", "Office Manager", "Munich"),
    ("Niklas", "Roth", "Operations", "IT Administrator", "Berlin"),
    ("Eva", "Beck", "Operations", "Procurement Manager", "Vienna"),
    ("Fabian", "Lorenz", "Operations", "Facilities Coordinator", "Zurich"),
    ("Alina", "Baumann", "Operations", "Project Manager", "London"),
    ("Sebastian", "Franke", "Sales", "Account Executive", "Berlin"),
    ("Wanda", "Albrecht", "Marketing", "Social Media Manager", "Berlin"),
    ("Walter", "Schuster", "Finance", "Accountant", "Munich"),
    ("Olivia", "Simon", "Customer Success", "Customer Success Manager", "London"),
    ("Ruby", "Evans", "Sales", "Account Executive", "London"),
)


def _ascii(s: str) -> str:
    return (
        s.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss").replace(" ", "")
    )


def _member(i: int, given: str, surname: str, dept: str, title: str, office: str, **kw: Any) -> SandboxUser:
    city, country, usage, phone_prefix = _OFFICES[office]
    upn = kw.pop("upn", None) or f"{_ascii(given)}.{_ascii(surname)}@{SANDBOX_DOMAIN}"
    return SandboxUser(
        id=user_id_for(upn),
        userPrincipalName=upn,
        displayName=kw.pop("displayName", f"{given} {surname}"),
        givenName=given,
        surname=surname,
        mail=kw.pop("mail", upn),
        jobTitle=title,
        department=dept,
        officeLocation=f"{office} {1 + i % 5}.{10 + i:02d}",
        businessPhones=(f"{phone_prefix} {1000 + i}",),
        mobilePhone=f"+49 170 555 {2000 + i}" if i % 3 else None,
        preferredLanguage="de-DE" if country in ("Germany", "Austria") else "en-US",
        city=city,
        country=country,
        usageLocation=usage,
        **kw,
    )


def seed_users() -> list[SandboxUser]:
    """The full directory, special users included.  Deterministic."""
    users = [_member(i, *p) for i, p in enumerate(_PEOPLE)]
    n = len(users)
    users.append(
        _member(
            n, "Sandbox", "Admin", "Operations", "IT Director", "Berlin", upn=SANDBOX_ADMIN_UPN,
            displayName="Sandbox Admin",
            admin_roles=("Global Administrator", "Privileged Role Administrator"),
        )
    )
    users.append(
        _member(
            n + 1, "Mika", "Strong", "Finance", "Payments Officer", "Munich", upn=SANDBOX_MFA_UPN,
            displayName="Mika Strong (MFA only)", mfa_required=True,
        )
    )
    users.append(
        _member(
            n + 2, "Dana", "Former", "Sales", "Account Executive (left)", "Vienna", upn=SANDBOX_DISABLED_UPN,
            displayName="Dana Former (disabled)", accountEnabled=False,
        )
    )
    guest = _member(
        n + 3, "Kim", "Berg", "Partner", "Reseller Contact", "London", upn=SANDBOX_GUEST_UPN,
        displayName="Kim Berg (Partner)", mail="kim.berg@partner.example", userType="Guest",
        companyName="Partner Example",
    )
    users.append(guest)
    assert any(u.userPrincipalName == SANDBOX_DEFAULT_UPN for u in users)
    return users
