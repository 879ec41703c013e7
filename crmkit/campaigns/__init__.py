"""Campaigns and their reaction actions: "Send message in Microsoft Teams" when a reaction is recorded.

>>> from crmkit.campaigns import Campaigns          # doctest: +SKIP
>>> camp = Campaigns(crm)
>>> cid = camp.add_campaign("Frühjahrsmailing")
>>> aid = camp.add_activity(cid, "Mailing März")
>>> camp.add_participants(aid, [1, 2, 3])
>>> rid = camp.add_reaction(aid, "Interesse")
>>> camp.add_teams_action(rid, "Vertrieb informieren", recipients=["ben@contoso.example"],
...                       message="{company} hat Interesse.", record_contact=True)  # recipients resolved now
>>> camp.record_reaction(rid, [1, 2, 3])   # immediate actions go out now, delayed ones via `crmkit worker`
"""

from ._runner import Claimer, RunOutcome, claim_runs, retry_delay
from ._schema import RUN_STATES, TIMINGS
from ._service import ACTION_DEFAULTS, ACTIVITY_KINDS, Campaigns, RecordResult, TeamsAction
from ._template import PLACEHOLDERS, check_template, render_message, render_subject, template_fields

__all__ = [
    "ACTION_DEFAULTS",
    "ACTIVITY_KINDS",
    "PLACEHOLDERS",
    "RUN_STATES",
    "TIMINGS",
    "Campaigns",
    "Claimer",
    "RecordResult",
    "RunOutcome",
    "TeamsAction",
    "check_template",
    "claim_runs",
    "render_message",
    "render_subject",
    "retry_delay",
    "template_fields",
]
