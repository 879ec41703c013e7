"""The transfer log of a campaign send names who recorded the reaction, not the worker's user.

A reaction recorded by kai (a campaign manager) whose delayed action is run by ``crmkit worker`` as
another CRM user (admin), in another process: the log row is kai's, sent from the campaign account;
the log view shows an empty purpose as empty and the trigger in the user's language.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from support.sandbox import SandboxAdmin

import crmkit
from crmkit import privacy
from crmkit.campaigns import Campaigns
from crmkit.i18n import t
from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from crmkit.widgets.privacy import TransferLogMonitor

from .conftest import Setup, start_worker


def _cells(view: TransferLogMonitor, column: str) -> list[str]:
    """The text of one column of the log view's table (found by its translated heading), per row."""
    html = view.table.value
    heads = re.findall(r"<th>(.*?)</th>", html)
    label = t(f"transfer_log.col.{column}", view.lang)
    assert label in heads, f"the log view has no column {label!r}: {heads}"
    rows = re.findall(r"<tr>((?:<td>.*?</td>)+)</tr>", html)
    return [re.findall(r"<td>(.*?)</td>", row)[heads.index(label)] for row in rows]


@pytest.mark.sandbox
def test_worker_run_logs_the_recording_user_and_the_campaign_account(
    setup: Setup, fast_crm_tenant: SandboxAdmin, tmp_path: Path,
) -> None:
    setup.set_campaign_account()
    setup.crm.add_user("kai", "Kai Brandt", roles=["campaign_manager"])
    setup.action(timing="delay", delay=1)  # no purpose: the policy only logs
    kai = crmkit.open(setup.db, "kai")
    kai_campaigns = Campaigns(kai)
    try:
        assert kai_campaigns.record_reaction(setup.reaction, [1]).outcomes == []
    finally:
        kai_campaigns.close()
    time.sleep(1.2)
    worker = start_worker(setup.db, tmp_path / "worker.log", "--once", "--user", "admin")
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
    assert "runs: 1 done" in out, out

    log = privacy.transfer_log(setup.crm)
    assert len(log) == 1
    row = log.iloc[0]
    assert (row["user_name"], row["ms_account"], row["trigger"], row["outcome"]) == (
        "kai", SANDBOX_DEFAULT_UPN, "campaign", "sent")
    assert row["purpose"] is None  # an empty purpose reads as nothing, not NaN
    assert privacy.transfer_log(setup.crm, user="kai")["id"].tolist() == log["id"].tolist()
    kai = dict(setup.crm.users()[["name", "display_name"]].itertuples(index=False))["kai"]
    assert kai != "kai"
    for lang in ("de", "en"):  # the log view names both: who recorded it (by name), and the account it went out as
        view = TransferLogMonitor(setup.crm, lang)
        assert (_cells(view, "user_name"), _cells(view, "ms_account"), _cells(view, "purpose")) == (
            [kai], [SANDBOX_DEFAULT_UPN], [""]), view.table.value
        assert _cells(view, "trigger") == [t("transfer_log.trigger.campaign", lang)]


@pytest.mark.widgets
def test_log_view_shows_empty_purpose_empty_and_translated_triggers(crm: crmkit.CRM) -> None:
    for company in ("A GmbH", "B AG", "C KG"):
        crm.add_address(company=company)
    base = {"channel": "teams_manual", "fields": ["company"], "outcome": "sent", "recipient_id": "u-1",
            "recipient_name": "Bernd Weber"}
    crm.store.write(lambda tx: privacy.log_transfers(tx, [
        privacy.new_record(crm, address_id=1, trigger="manual", purpose="Angebot", message_key="m1", **base),
        privacy.new_record(crm, address_id=2, trigger="manual", message_key="m2", **base),
        privacy.new_record(crm, address_id=3, **{**base, "channel": "teams_campaign"}, trigger="campaign",
                           message_key="m3"),
    ]))
    for lang in ("de", "en"):
        view = TransferLogMonitor(crm, lang)
        purposes = dict(zip(_cells(view, "address_id"), _cells(view, "purpose"), strict=True))
        assert purposes == {"1": "Angebot", "2": "", "3": ""}, (lang, view.table.value)
        assert "nan" not in view.table.value.lower().replace("nanny", "")
        triggers = dict(zip(_cells(view, "address_id"), _cells(view, "trigger"), strict=True))
        assert triggers == {"1": t("transfer_log.trigger.manual", lang), "2": t("transfer_log.trigger.manual", lang),
                            "3": t("transfer_log.trigger.campaign", lang)}, (lang, triggers)
        assert not {"manual", "campaign"} & set(triggers.values())
    assert t("transfer_log.trigger.campaign", "de") != t("transfer_log.trigger.campaign", "en")
