"""Whole-database snapshots (to prove a refused operation wrote nothing) and an offline Teams directory."""

from __future__ import annotations

from typing import Any

from crmkit.graph import GraphNotFound

# The session registry is bookkeeping of who has the CRM open (touched when a session opens or is
# seen), not data an operation changes; every other table is compared.
VOLATILE_TABLES = frozenset({"sessions"})


def db_snapshot(store: Any, *, skip: frozenset[str] = VOLATILE_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the store, sorted, keyed by table name (DuckDB or PostgreSQL)."""
    def run(tx: Any) -> dict[str, list[tuple[Any, ...]]]:
        names = [r[0] for r in tx.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
            "AND table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")]
        # sorted here: ORDER BY ALL is DuckDB's only
        return {n: sorted(tx.rows(f'SELECT * FROM "{n}"'), key=repr) for n in names if n not in skip}

    return store.read(run)


def snapshot_diff(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """Human-readable differences (table: +added/-removed rows), for assertion messages."""
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, []), after.get(name, [])
        if old != new:
            added = [r for r in new if r not in old][:3]
            removed = [r for r in old if r not in new][:3]
            out.append(f"{name}: +{added} -{removed}")
    return out


# Object ids are GUIDs, as in Entra: a recipient named by anything else is refused by its form.
ME = {"id": "0a5c0000-0000-4000-8000-000000000001", "displayName": "Anna Schmidt",
      "userPrincipalName": "anna.schmidt@contoso.example", "mail": "anna.schmidt@contoso.example"}
BERND_ID = "0b3e0000-0000-4000-8000-000000000002"
PEOPLE = {
    "bernd.weber@contoso.example": {"id": BERND_ID, "displayName": "Bernd Weber",
                                    "userPrincipalName": "bernd.weber@contoso.example",
                                    "mail": "b.weber@contoso.example", "accountEnabled": True},
    "disabled.user@contoso.example": {"id": "0d15ab1e-0000-4000-8000-000000000003", "displayName": "Disabled User",
                                      "userPrincipalName": "disabled.user@contoso.example",
                                      "mail": "disabled.user@contoso.example", "accountEnabled": False},
    ME["userPrincipalName"]: {**ME, "accountEnabled": True},
}


class FakeDirectoryGraph:
    """Just enough of GraphClient for planning a send offline: /me, /users/{id}, the people search."""

    def me(self) -> dict[str, Any]:
        return dict(ME)

    def get_user(self, key: str, *, select: Any = None) -> dict[str, Any]:
        for person in PEOPLE.values():
            if key.lower() in (person["id"], person["userPrincipalName"]):
                return dict(person)
        raise GraphNotFound(f"Resource {key!r} does not exist.", status=404, code="Request_ResourceNotFound")

    def find_user_by_mail(self, mail: str, *, select: Any = None) -> dict[str, Any] | None:
        return next((dict(p) for p in PEOPLE.values() if p["mail"] == mail.lower()), None)

    def search_users(self, text: str = "", *, top: int = 25, next_link: str | None = None) -> Any:
        from crmkit.graph._client import UserPage

        hits = [p for p in PEOPLE.values() if p["displayName"].lower().startswith(text.lower())]
        return UserPage(users=hits[:top], next_link=None, count=len(hits))

    def close(self) -> None:
        pass


class _Account:
    username = ME["userPrincipalName"]
    display_name = ME["displayName"]


class _Accounts:
    def teams_account(self) -> _Account:
        return _Account()


class _Campaign:
    def graph(self, **_kw: Any) -> FakeDirectoryGraph:
        return FakeDirectoryGraph()

    def info(self) -> _Account:
        return _Account()


class FakeM365:
    """A Microsoft365 stand-in whose Graph is :class:`FakeDirectoryGraph` (nothing leaves the process),
    for the user's Teams account and for the campaign account alike."""

    def __init__(self) -> None:
        self.accounts = _Accounts()
        self.campaign = _Campaign()

    def graph(self, **_kw: Any) -> FakeDirectoryGraph:
        return FakeDirectoryGraph()

    def close(self) -> None:
        pass


def offline_teams(crm: Any) -> Any:
    """Give ``crm`` a Teams service that plans against :class:`FakeM365`; returns the service."""
    from crmkit.teams.send import TeamsService

    crm._teams = TeamsService(crm, m365=FakeM365())  # type: ignore[arg-type]
    return crm._teams


def offline_campaigns(crm: Any) -> Any:
    """``Campaigns(crm)`` whose campaign account reads :class:`FakeDirectoryGraph` (saving an action
    resolves its recipients there); nothing is delivered through it."""
    from crmkit.campaigns import Campaigns
    from crmkit.teams.send import TeamsService

    return Campaigns(crm, teams=TeamsService(crm, m365=FakeM365(), sender="campaign"))  # type: ignore[arg-type]
