"""Schema of campaigns, reaction actions and their runs (migration 5).

All ``*_at`` columns of runs, actions and the worker lease are naive UTC, so a worker on another
machine (or in another time zone) compares them correctly. Only small BIGINT indexes: every
index is loaded on every ATTACH.
"""

from __future__ import annotations

__all__ = ["CAMPAIGNS_MIGRATION", "RUN_STATES", "TIMINGS"]

TIMINGS = ("immediately", "delay", "at")
# due: waits for due_at; retry: failed for a passing reason, waits for next_attempt_at;
# running: claimed by one process; done / failed / skipped: final.
RUN_STATES = ("due", "retry", "running", "done", "failed", "skipped")

CAMPAIGNS_MIGRATION: list[str] = [
    "CREATE SEQUENCE campaigns_seq",
    """CREATE TABLE campaigns (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaigns_seq'),
        name VARCHAR NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL,
        modified_at TIMESTAMP NOT NULL,
        modified_by VARCHAR NOT NULL)""",
    "CREATE SEQUENCE campaign_activities_seq",
    """CREATE TABLE campaign_activities (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_activities_seq'),
        campaign_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        description VARCHAR,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL)""",
    """CREATE TABLE campaign_participants (
        activity_id BIGINT NOT NULL,
        address_id BIGINT NOT NULL,
        added_at TIMESTAMP NOT NULL,
        added_by VARCHAR NOT NULL,
        PRIMARY KEY (activity_id, address_id))""",
    "CREATE SEQUENCE campaign_reactions_seq",
    """CREATE TABLE campaign_reactions (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_reactions_seq'),
        activity_id BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL)""",
    "CREATE SEQUENCE campaign_actions_seq",
    """CREATE TABLE campaign_actions (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_actions_seq'),
        reaction_id BIGINT NOT NULL,
        kind VARCHAR NOT NULL CHECK (kind IN ('teams_message')),
        description VARCHAR NOT NULL,
        active BOOLEAN NOT NULL,
        recipients JSON NOT NULL,
        subject VARCHAR NOT NULL,
        message VARCHAR NOT NULL,
        timing VARCHAR NOT NULL CHECK (timing IN ('immediately', 'delay', 'at')),
        delay_seconds BIGINT,
        run_at TIMESTAMP,
        record_contact BOOLEAN NOT NULL,
        include_record BOOLEAN NOT NULL,
        record_format VARCHAR NOT NULL,
        chat VARCHAR NOT NULL,
        importance VARCHAR NOT NULL,
        skip_blocked BOOLEAN NOT NULL,
        purpose VARCHAR,
        language VARCHAR,
        created_at TIMESTAMP NOT NULL,
        created_by VARCHAR NOT NULL,
        modified_at TIMESTAMP NOT NULL,
        modified_by VARCHAR NOT NULL)""",
    # History: one row per reaction recorded for an address. (reaction, address) is unique, so
    # recording the same reaction again is a no-op and cannot create runs twice.
    "CREATE SEQUENCE campaign_recorded_seq",
    """CREATE TABLE campaign_recorded_reactions (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_recorded_seq'),
        activity_id BIGINT NOT NULL,
        reaction_id BIGINT NOT NULL,
        address_id BIGINT NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        recorded_by VARCHAR NOT NULL,
        notes VARCHAR)""",
    "CREATE UNIQUE INDEX campaign_recorded_key ON campaign_recorded_reactions (reaction_id, address_id)",
    "CREATE SEQUENCE campaign_runs_seq",
    """CREATE TABLE campaign_runs (
        id BIGINT PRIMARY KEY DEFAULT nextval('campaign_runs_seq'),
        action_id BIGINT NOT NULL,
        recorded_reaction_id BIGINT NOT NULL,
        address_id BIGINT NOT NULL,
        status VARCHAR NOT NULL CHECK (status IN ('due', 'retry', 'running', 'done', 'failed', 'skipped')),
        created_at TIMESTAMP NOT NULL,
        due_at TIMESTAMP NOT NULL,
        next_attempt_at TIMESTAMP,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by VARCHAR,
        claim_pid INTEGER,
        claim_host VARCHAR,
        claim_expires_at TIMESTAMP,
        batch_id VARCHAR,
        error VARCHAR,
        finished_at TIMESTAMP)""",
    "CREATE UNIQUE INDEX campaign_runs_key ON campaign_runs (action_id, recorded_reaction_id)",
    """CREATE TABLE campaign_worker_lease (
        name VARCHAR PRIMARY KEY,
        holder VARCHAR NOT NULL,
        pid INTEGER NOT NULL,
        host VARCHAR NOT NULL,
        acquired_at TIMESTAMP NOT NULL,
        heartbeat_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP NOT NULL)""",
]
