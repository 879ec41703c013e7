"""The resilience suite at soak size: ``python -m bench --soak [--soak-factor N]``.

The same tests ``make test`` runs, with their sizes and time limits multiplied by ``CRMKIT_SOAK``
(:mod:`tests.support.soak`): the exactly-once send through two SIGKILLs under injected faults
(2,000 messages × N), the campaign worker SIGKILLed mid-way (60 runs × N), the planner SIGKILLed
mid-way, and four processes writing one DuckDB file (25 rounds × N each). Each test's outcome and
wall time is a result row; a failed test fails the run. Figures a test measures on the way
(:func:`tests.support.soak.figure`, e.g. how many list pages the longest reconciliation read) are
rows of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .common import Context, Result, say

ROOT = Path(__file__).resolve().parent.parent
TESTS = {
    "tests/teams/test_exactly_once.py": "exactly once: {n:,} messages, sender SIGKILLed twice, 10 % faults",
    "tests/resilience/test_kill_campaign.py": "campaign worker SIGKILLed mid-way: {runs:,} runs",
    "tests/teams/test_kill_planning.py": "planner SIGKILLed after two of three chunks",
    "tests/core/test_concurrency.py": "four processes writing one DuckDB file: {rounds:,} rounds each",
    "tests/resilience/test_pg_workers.py": "four workers on PostgreSQL, one SIGKILLed: {pg_messages:,} messages",
}


def run(ctx: Context) -> list[Result]:
    factor = int(ctx.shared.get("soak_factor", 5))
    junit = ctx.workdir / "soak.xml"
    figures = ctx.workdir / "figures.jsonl"
    env = {**os.environ, "CRMKIT_SOAK": str(factor), "CRMKIT_SOAK_FIGURES": str(figures)}
    say(f"soak: resilience tests at {factor}× their make-test size …")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
         f"--timeout={600 * factor}", *TESTS],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    (ctx.workdir / "soak.log").write_text(proc.stdout, encoding="utf-8")
    say(proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else f"pytest exited {proc.returncode}")
    sizes = {"n": 2_000 * factor, "runs": 60 * factor, "rounds": 25 * factor, "pg_messages": 1_000 * factor}
    results = []
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 -- written by our own pytest run
        path = case.get("classname", "").replace(".", "/") + ".py"
        label = next((text for test, text in TESTS.items() if path.endswith(test.removeprefix("tests/"))), path)
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        failed, skipped = problem is not None, case.find("skipped") is not None
        why = ""
        if problem is not None:  # the assertion or error line, for the table's note
            lines = (problem.get("message") or problem.text or "").strip().splitlines()
            why = lines[0][:300] if lines else ""
            say(f"soak: FAILED {case.get('name')}:\n{(problem.text or '')[-3000:]}")
        results.append(Result(
            f"soak ×{factor}: {label.format(**sizes)} ({case.get('name')})", round(float(case.get("time", 0)), 1),
            "s", "passes", None if skipped else not failed,
            note="skipped" if skipped else (f"FAILED: {why}" if failed else ""),
        ))
    results += _figures(figures, factor)
    if proc.returncode != 0 and not any(r.met is False for r in results):
        results.append(Result(f"soak ×{factor}: pytest run", float(proc.returncode), "exit code", "0", False,
                              note=proc.stdout[-2000:]))
    return results


def _figures(path: Path, factor: int) -> list[Result]:
    """Rows for what the tests measured (see :func:`tests.support.soak.figure`)."""
    if not path.exists():
        return []
    got = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        got[(item["test"], item["name"])] = item["value"]
    rows = []
    exactly_once = "test_two_thousand_messages_exactly_once_through_kills_and_faults"
    if (exactly_once, "read_back_pages_max") in got:
        histogram = got.get((exactly_once, "read_back_pages_histogram"), {})
        bound = got.get((exactly_once, "read_back_pages_bound"), 10)
        deepest = got[(exactly_once, "read_back_pages_max")]
        reached = ", ".join(f"page {p}: {n:,}" for p, n in histogram.items())
        rows.append(Result(
            f"soak ×{factor}: exactly once: list pages of the longest reconciliation read-back",
            float(deepest), "pages", f"≤ {bound} (the window, not the chat)", deepest <= bound,
            note=f"{got.get((exactly_once, 'read_backs'), 0):,} read-backs, "
                 f"{got.get((exactly_once, 'read_backs_unfiltered'), 0):,} of them without a date window; pages "
                 f"served ({reached}); a chat ended with {400 * factor:,} messages ({-(-400 * factor // 50)} pages)",
        ))
    return rows
