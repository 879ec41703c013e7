"""10,000 records to one colleague, three ways side by side (issue 17 part 4): one message per record, a digest,
and one file (an Excel workbook shared in OneDrive, one message with the file attached).

Setup: ``crmkit demo-data --addresses 10000`` into a fresh file; a sandbox tenant in a subprocess with its
default limits (Teams: 1 message per second per chat) and crmkit's default pacing; the admin signed in to Teams
through the sandbox's device-code page. A **child process** runs the real ``crm.teams.send`` calls.

- **one file**: ``send(<10,000 ids>, as_file=True)`` measured end to end (plan: the workbook from the display
  format; stage; upload; invite; post; 10,000 transfer-log rows). Goal ≤ 30 s.
- **one message per record**: ``PER_RECORD`` records sent for real at Teams' pace, the rate measured and
  extrapolated to 10,000 (all of them would take close to three hours).
- **digest**: the 10,000 planned as digests (``plan``: the number of messages under Teams' size limit), the time
  estimated as that many messages at the per-record run's measured rate (one chat, one message at a time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import Context, Result, say

RECORDS = 10_000
PER_RECORD = 15
GOAL_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


def _child(db: str, records: int, per_record: int) -> dict[str, Any]:
    import crmkit
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation
    from crmkit.teams.options import SendOptions

    sys.path.insert(0, str(ROOT / "tests"))
    from support.sandbox import sign_in  # the device-code flow as a browser posts it

    crm = crmkit.open(db, "admin")
    activation.enable(crm)
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    ids = [int(i) for i in crm.store.df("SELECT id FROM addresses ORDER BY id LIMIT ?", [records])["id"]]
    to = [u["userPrincipalName"] for u in crm.teams.graph().iter_users("", top=20)
          if u["userPrincipalName"] != SANDBOX_DEFAULT_UPN][:1]
    out: dict[str, Any] = {"records": len(ids)}

    started = time.perf_counter()
    plan = crm.teams.plan(ids, to, "Bench Datei", options=SendOptions(as_file=True))
    out["file_plan_s"] = time.perf_counter() - started
    started = time.perf_counter()
    result = crm.teams.send(ids, to=to, subject="Bench Datei", message="10.000 Adressen", as_file=True)
    out["file_s"] = time.perf_counter() - started
    out["file_status"] = {str(k): int(v) for k, v in result["status"].value_counts().items()}
    out["file_messages"] = int(result["message_id"].nunique())
    out["file_bytes"] = int(plan.messages[0].payload["_crmkit_file"]["size"])
    out["file_log_rows"] = int(crm.store.one("SELECT count(*) FROM transfer_log WHERE file_id IS NOT NULL"))

    started = time.perf_counter()
    digest = crm.teams.plan(ids, to, "Bench Sammel", options=SendOptions(mode="digest"))
    out["digest_plan_s"] = time.perf_counter() - started
    out["digest_messages"] = len(digest.messages)

    started = time.perf_counter()
    small = crm.teams.send(ids[:per_record], to=to, subject="Bench je Datensatz")
    out["per_record_s"] = time.perf_counter() - started
    out["per_record_sent"] = int(small["status"].eq("sent").sum())
    crm.teams.close()
    crm.store.close()
    return out


def run(ctx: Context) -> list[Result]:
    from crmkit.sandbox.process import SandboxProcess

    records = min(RECORDS, ctx.addresses) if ctx.quick else RECORDS
    per_record = 5 if ctx.quick else PER_RECORD
    db = ctx.workdir / "file-send.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    env["PYTHONPATH"] = str(ROOT)
    say(f"file_send: demo data, {records:,} addresses …")
    subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(db), "demo-data", "--addresses", str(records),
                    "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    with (ctx.workdir / "file-send-sandbox.log").open("w") as log:
        sandbox = SandboxProcess(ctx.workdir / "file-send-sandbox", log=log,
                                 extra=["--reset", "--device-code-interval", "1"])
        try:
            child_env = {**env, "CRMKIT_SANDBOX_URL": sandbox.url, "CRMKIT_HOME": str(ctx.workdir / "file-home")}
            say(f"file_send: child sends {records:,} records as one file, plans a digest, sends {per_record} "
                "per record …")
            done = subprocess.run([sys.executable, "-m", "bench.file_send", str(db), str(records), str(per_record)],
                                  env=child_env, cwd=ROOT, capture_output=True, text=True, check=False)
        finally:
            sandbox.stop()
    if done.returncode != 0:
        raise RuntimeError(f"file_send child failed ({done.returncode}): {done.stderr[-3000:]}")
    m = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"file_send: {json.dumps(m)}")
    n = m["records"]
    rate = m["per_record_sent"] / m["per_record_s"]  # messages per second into one chat, measured
    per_record_s = n / rate
    digest_s = m["digest_messages"] / rate
    return [
        Result(f"{n:,} records to one colleague: one file (workbook shared in OneDrive, one message)",
               round(m["file_s"], 1), "s", f"≤ {GOAL_S:.0f} s", m["file_s"] <= GOAL_S,
               f"measured end to end: {m['file_messages']} message, outcomes {m['file_status']}, "
               f"{m['file_log_rows']:,} transfer-log rows with the file id, workbook {m['file_bytes'] / 1024:,.0f} KB "
               f"(a simple upload: under 4 MiB); planning alone (policy, workbook) {m['file_plan_s']:.1f} s. One run.",
               samples=[round(m["file_s"], 2)]),
        Result(f"{n:,} records to one colleague: one message per record (estimate)", round(per_record_s), "s",
               note=f"estimated: {m['per_record_sent']} messages sent for real in {m['per_record_s']:.1f} s "
                    f"({rate:.2f}/s into one chat, Teams' 1/s per chat paced by crmkit), extrapolated to {n:,} "
                    f"messages ({per_record_s / 3600:.1f} h)."),
        Result(f"{n:,} records to one colleague: digest (estimate)", round(digest_s), "s",
               note=f"estimated: the digest plans as {m['digest_messages']:,} messages under Teams' size limit "
                    f"(planned for real in {m['digest_plan_s']:.1f} s), at the per-record run's {rate:.2f}/s."),
    ]


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
