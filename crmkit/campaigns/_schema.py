"""Values of campaign actions and runs. Their tables are made by migration 5 in crmkit/migrations.py.

All ``*_at`` columns of runs, actions and the worker lease are naive UTC, so a worker on another
machine (or in another time zone) compares them correctly.
"""

from __future__ import annotations

__all__ = ["RUN_STATES", "TIMINGS"]

TIMINGS = ("immediately", "delay", "at")
# due: waits for due_at; retry: failed for a passing reason, waits for next_attempt_at;
# running: claimed by one process; done / failed / skipped: final.
RUN_STATES = ("due", "retry", "running", "done", "failed", "skipped")
