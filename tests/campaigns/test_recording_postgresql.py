"""Recording reactions on PostgreSQL, where many sessions write at once: two sessions recording the same
reaction for the same address at the same moment create its history row and its runs once, neither sees an
error, and each is told what it recorded."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support.dbstate import offline_campaigns

import crmkit
from crmkit.campaigns import RecordResult
from crmkit.store import Store

pytestmark = pytest.mark.postgres

BERND = "bernd.weber@contoso.example"  # in the offline directory


def test_two_sessions_recording_the_same_reaction_at_once_create_its_runs_once(pg_database_url: str) -> None:
    crm = crmkit.open(pg_database_url)
    crm.add_address(company="Müller GmbH", city="Berlin")
    crm.add_address(company="Keller AG", city="Wien")
    camp = offline_campaigns(crm)
    aid = camp.add_activity(camp.add_campaign("Frühjahr"), "Mailing")
    camp.add_participants(aid, [1, 2])
    rid = camp.add_reaction(aid, "Interesse")
    camp.add_teams_action(rid, "Vertrieb informieren", recipients=[BERND], timing="delay", delay=60)

    a_recorded, b_recording = threading.Event(), threading.Event()

    def a_waits(sql: str, _params: Any) -> None:  # A has written its history row (not committed) and waits for B
        if sql.startswith("INSERT INTO campaign_runs"):
            a_recorded.set()
            b_recording.wait(30)

    def b_goes(sql: str, _params: Any) -> None:  # B has read (its snapshot predates A's commit) and now writes
        if sql.startswith("INSERT INTO campaign_recorded_reactions"):
            b_recording.set()

    sessions = [offline_campaigns(crmkit.CRM(Store(pg_database_url, tracer=t), "admin")) for t in (a_waits, b_goes)]
    results: dict[str, RecordResult | BaseException] = {}

    def record(name: str, session: Any, addresses: list[int]) -> None:
        try:
            results[name] = session.record_reaction(rid, addresses, deliver=False)
        except BaseException as exc:  # the assertion shows it
            results[name] = exc

    a = threading.Thread(target=record, args=("a", sessions[0], [1]))
    a.start()
    assert a_recorded.wait(30)
    b = threading.Thread(target=record, args=("b", sessions[1], [2, 1]))  # 2 is new, 1 is A's
    b.start()
    a.join(60)
    b.join(60)
    assert isinstance(results["a"], RecordResult) and isinstance(results["b"], RecordResult), results
    assert (results["a"].new, results["a"].already, len(results["a"].runs)) == ([1], [], 1)
    assert (results["b"].new, results["b"].already, len(results["b"].runs)) == ([2], [1], 1)
    assert results["b"].recorded[1] == results["a"].recorded[1]
    assert crm.store.one("SELECT count(*) FROM campaign_recorded_reactions") == 2
    assert sorted(camp.runs()["address_id"]) == [1, 2]
