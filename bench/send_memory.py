"""Peak memory of a 100,000-record Teams send through the sandbox tenant.

Setup: ``crmkit demo-data --addresses 100000`` into a fresh file; a sandbox tenant in a subprocess
with raised limits (``--chat-rps-per-app``/``--chat-rps-per-chat`` 10,000) and crmkit's pacing
raised to match (``CRMKIT_TEAMS_TENANT_RPS``/``CRMKIT_TEAMS_CHAT_RPS``); the admin signed in to
Teams through the sandbox's device-code page.

A **child process** (so nothing of the harness counts) calls the real
``crm.teams.send(<all 100,000 ids>, to=[one colleague], …)`` — per-record Adaptive Cards, one
message per record, so 100,000 outbox rows. Planning and enqueueing the whole send is measured in
full. Delivering 100,000 messages into Teams would take far longer than a benchmark should (one
recipient means one chat, and a chat takes its messages one at a time), so the child delivers the
first ``DELIVER`` messages, then sets the send's cancel event (the UI's Cancel): the rest of the
batch is marked cancelled, exactly as a user's cancel does. The delivered subset gives a rate.

Figures: peak RSS of the child (``VmHWM`` from ``/proc/self/status``, cross-checked by psutil sampling
every 50 ms), its RSS before the send (imports, session, sign-in), at the first delivered message (planning and
enqueueing done) and at the end. Goal: peak ≤ 500 MB.

Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries it across ``fork``/``exec``, so a child of a
large harness process reports the parent's peak (measured: a child of an 800 MB parent reported
814 MB, its ``VmHWM`` 13 MB). It is still recorded, for comparison.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .common import Context, Result, say

RECORDS = 100_000
DELIVER = 200
LIMIT_RPS = 10_000
ROOT = Path(__file__).resolve().parent.parent


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes, inherited across exec


def _hwm_mb() -> float:
    """This process's peak resident set size (``VmHWM``: its own address space since exec)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(db: str, records: int, deliver: int) -> dict[str, Any]:
    """Runs in the child process; the environment carries the sandbox URL, CRMKIT_HOME and the pacing."""
    import psutil

    import crmkit
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation

    sys.path.insert(0, str(ROOT / "tests"))
    from support.sandbox import sign_in  # the device-code flow as a browser posts it

    proc = psutil.Process()
    sampled = {"peak": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            sampled["peak"] = max(sampled["peak"], proc.memory_info().rss / 2**20)
            stop.wait(0.05)

    crm = crmkit.open(db, "admin")
    activation.enable(crm)
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    ids = [int(i) for i in crm.store.df("SELECT id FROM addresses ORDER BY id LIMIT ?", [records])["id"]]
    to = [u["userPrincipalName"] for u in crm.teams.graph().iter_users("", top=20)
          if u["userPrincipalName"] != SANDBOX_DEFAULT_UPN][:1]
    out: dict[str, Any] = {"records": len(ids), "recipients": len(to), "rss_before_mb": proc.memory_info().rss / 2**20,
                           "hwm_before_mb": _hwm_mb(), "maxrss_before_mb": _maxrss_mb()}
    threading.Thread(target=sample, daemon=True).start()
    cancel = threading.Event()
    marks: dict[str, float] = {}
    started = time.perf_counter()

    def progress(p: Any) -> None:
        if "first" not in marks:
            marks["first"] = time.perf_counter()
            out["rss_at_first_delivery_mb"] = proc.memory_info().rss / 2**20
            out["hwm_at_first_delivery_mb"] = _hwm_mb()
        if p.sent >= deliver and not cancel.is_set():
            marks["delivered"] = time.perf_counter()
            out["delivered"] = p.sent
            cancel.set()

    result = crm.teams.send(ids, to=to, subject="Bench", message="Bitte ansehen", progress=progress,
                            cancel_event=cancel)
    out["seconds_total"] = time.perf_counter() - started
    stop.set()
    out["seconds_to_first_delivery"] = marks.get("first", time.perf_counter()) - started
    if "delivered" in marks:
        out["delivery_rate"] = (out["delivered"] - 1) / (marks["delivered"] - marks["first"])
    out["status_counts"] = {str(k): int(v) for k, v in result["status"].value_counts().items()}
    out["rss_end_mb"] = proc.memory_info().rss / 2**20
    out["sampled_peak_mb"] = sampled["peak"]
    out["maxrss_mb"] = _maxrss_mb()
    out["hwm_mb"] = _hwm_mb()
    crm.teams.close()
    crm.store.close()
    return out


def run(ctx: Context) -> list[Result]:
    from crmkit.sandbox.process import SandboxProcess

    records = min(RECORDS, ctx.addresses)
    deliver = min(DELIVER, max(10, records // 10))
    db = ctx.workdir / "send-memory.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    env["PYTHONPATH"] = str(ROOT)
    say(f"send_memory: demo data, {records:,} addresses …")
    subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(db), "demo-data", "--addresses", str(records),
                    "--quiet"], check=True, env=env, stdout=subprocess.DEVNULL)
    with (ctx.workdir / "send-memory-sandbox.log").open("w") as log:
        sandbox = SandboxProcess(ctx.workdir / "send-memory-sandbox", log=log, extra=[
            "--reset", "--device-code-interval", "1", "--chat-rps-per-app", str(LIMIT_RPS),
            "--chat-rps-per-chat", str(LIMIT_RPS)])
        try:
            child_env = {**env, "CRMKIT_SANDBOX_URL": sandbox.url, "CRMKIT_HOME": str(ctx.workdir / "send-home"),
                         "CRMKIT_TEAMS_TENANT_RPS": str(LIMIT_RPS), "CRMKIT_TEAMS_CHAT_RPS": str(LIMIT_RPS)}
            say(f"send_memory: child sends {records:,} records, delivers {deliver:,}, cancels the rest …")
            done = subprocess.run([sys.executable, "-m", "bench.send_memory", str(db), str(records), str(deliver)],
                                  env=child_env, cwd=ROOT, capture_output=True, text=True, check=False)
        finally:
            sandbox.stop()
    if done.returncode != 0:
        raise RuntimeError(f"send_memory child failed ({done.returncode}): {done.stderr[-3000:]}")
    m = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"send_memory: {json.dumps(m)}")
    peak = m["hwm_mb"]
    statuses = ", ".join(f"{n:,} {s}" for s, n in sorted(m["status_counts"].items()))
    rate = m.get("delivery_rate")
    return [
        Result(f"send of {m['records']:,} records (card per record, 1 recipient): peak RSS of the sending process",
               round(peak, 1), "MB", "≤ 500 MB", peak <= 500,
               f"child process VmHWM {peak:.0f} MB (psutil 50 ms sampling {m['sampled_peak_mb']:.0f} MB; ru_maxrss "
               f"{m['maxrss_mb']:.0f} MB, which Linux inherits from the harness across exec); RSS "
               f"before the send {m['rss_before_mb']:.0f} MB, when the first message was delivered (all "
               f"{m['records']:,} planned and in the outbox) {m['rss_at_first_delivery_mb']:.0f} MB, at the end "
               f"{m['rss_end_mb']:.0f} MB. Planning + enqueueing all {m['records']:,} took "
               f"{m['seconds_to_first_delivery']:.1f} s; then {m.get('delivered', 0):,} messages were delivered "
               f"through the sandbox (limits raised to {LIMIT_RPS:,}/s) at {rate or float('nan'):.1f} msg/s and the "
               f"rest cancelled with the send's cancel event (outcomes: {statuses}); {m['seconds_total']:.1f} s in "
               "all. One run (it takes minutes). Full delivery of 100,000 was not run: one chat takes one message at a "
               "time.",
               samples=[round(peak, 1)]),
    ]


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
