"""The reply poll's Graph requests per minute for 1,000 watched chats (issue 17 part 3).

Setup: a fresh DuckDB CRM, a sandbox tenant in a subprocess, the admin signed in to Teams through the sandbox's
device-code page, replies filed (``teams.file_replies`` on). 1,000 group chats are made in the sandbox (its limits
raised for the setup only) and the outbox holds one delivered crmkit message in each (rows written through
``teams.outbox.add_messages``, then marked sent with their chat and message id, as delivery leaves them); ten of
the chats get a real crmkit message and a colleague's reply to it. A **child process** then runs two passes of
``crm.teams.file_replies()`` at Teams' default limits and crmkit's default pacing (20 GETs/s per tenant, 1/s per
chat, in the sandbox as at Microsoft): the first files the ten replies, the second is the steady state (nothing
new: one request per chat). The figure is the steady state's requests per minute with a pass every 60 s (passes
back to back when one takes longer), next to :func:`crmkit.teams.replies.poll_cost`'s estimate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .common import Context, Result, say

CHATS = 1_000
REPLIES = 10
INTERVAL_S = 60.0
ROOT = Path(__file__).resolve().parent.parent


def _child(db: str, chats: int) -> dict[str, Any]:
    import crmkit
    from crmkit.graph import RateLimiter
    from crmkit.sandbox import SANDBOX_DEFAULT_UPN
    from crmkit.teams import activation
    from crmkit.teams.outbox import OutboxMessage, add_messages, create_batch, utcnow
    from crmkit.teams.replies import poll_cost

    sys.path.insert(0, str(ROOT / "tests"))
    from support.sandbox import SandboxAdmin, sign_in

    admin = SandboxAdmin(os.environ["CRMKIT_SANDBOX_URL"])
    crm = crmkit.open(db, "admin")
    activation.enable(crm)
    crm.set_setting("teams.file_replies", True)
    address = crm.add_address(company="Bench Antworten GmbH", city="Berlin", country="DE")
    sign_in(crm, SANDBOX_DEFAULT_UPN)
    me = crm.teams.graph().me()
    people = [u for u in admin.get("users")["value"] if u.get("accountEnabled", True)
              and u.get("userType", "Member") == "Member" and u["id"] != me["id"]
              and not u["userPrincipalName"].startswith(("admin@", "mfa.only@", "disabled.user@"))][:2]

    limits = admin.get("limits")
    admin.put("limits", {"chat_post_per_app_per_s": 1000, "chat_post_per_chat_per_s": 100})
    setup = crm.teams.m365.graph(limiter=RateLimiter(500, 100))
    started = time.perf_counter()
    chat_ids: list[str] = []
    for start in range(0, chats, 50):
        made = setup.submit(_make_chats(setup.aio, [me["id"], *[p["id"] for p in people]],
                                        range(start, min(chats, start + 50)))).result()
        chat_ids.extend(made)
    posted = {c: setup.post_message(c, {"body": {"content": f"Bench {uuid.uuid4().hex}"}})["id"]
              for c in chat_ids[:REPLIES]}
    setup.close()
    admin.put("limits", limits)  # the passes run at Teams' default limits
    setup_s = time.perf_counter() - started
    messages = [OutboxMessage(payload={"body": {"content": "bench"}}, marker=uuid.uuid4().hex, chat_kind="group",
                              members=[me["id"], *[p["id"] for p in people]],
                              recipients=[{"id": p["id"], "name": p["displayName"]} for p in people],
                              address_ids=[address], field_names={str(address): ["company"]}) for _ in chat_ids]

    def write(tx: Any) -> None:
        batch = create_batch(tx, user="admin", account=SANDBOX_DEFAULT_UPN, channel="teams_manual", trigger="manual",
                             purpose=None, subject="Bench", options={}, record_contact=False)
        add_messages(tx, batch, messages)
        for m, chat in zip(messages, chat_ids, strict=True):
            tx.execute("UPDATE outbox SET status = 'sent', chat_id = ?, message_id = ?, first_attempt_at = ?, "
                       "finished_at = current_timestamp WHERE id = ?",
                       [chat, posted.get(chat, str(1_000_000 + len(chat))), utcnow(), m.id])

    crm.store.write(write)
    for chat, message in posted.items():
        r = admin.admin.post(f"/_sandbox/chats/{chat}/replies",
                             json={"from": people[0]["userPrincipalName"], "reply_to": message, "content": "Danke"})
        r.raise_for_status()

    out: dict[str, Any] = {"chats": len(chat_ids), "setup_s": setup_s}
    for label in ("first", "steady"):
        started = time.perf_counter()
        filed = crm.teams.file_replies()
        out[f"{label}_s"] = time.perf_counter() - started
        out[f"{label}_requests"] = int(filed.attrs["requests"])
        out[f"{label}_filed"] = len(filed)
        out[f"{label}_failed"] = len(filed.attrs["failed"])
    estimate = poll_cost(len(chat_ids), INTERVAL_S)
    out["estimate_per_minute"] = estimate.per_minute
    out["estimate_pass_s"] = estimate.pass_s
    crm.teams.close()
    crm.store.close()
    admin.close()
    return out


async def _make_chats(aio: Any, members: list[str], numbers: range) -> list[str]:
    import asyncio

    chats = await asyncio.gather(*(aio.create_group_chat(members, topic=f"Bench {i:04d}") for i in numbers))
    return [str(c["id"]) for c in chats]


def run(ctx: Context) -> list[Result]:
    from crmkit.sandbox.process import SandboxProcess

    chats = 50 if ctx.quick else CHATS
    db = ctx.workdir / "replies-poll.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    env["PYTHONPATH"] = str(ROOT)
    with (ctx.workdir / "replies-poll-sandbox.log").open("w") as log:
        sandbox = SandboxProcess(ctx.workdir / "replies-poll-sandbox", log=log,
                                 extra=["--reset", "--device-code-interval", "1"])
        try:
            child_env = {**env, "CRMKIT_SANDBOX_URL": sandbox.url, "CRMKIT_HOME": str(ctx.workdir / "replies-home")}
            say(f"replies_poll: {chats:,} chats watched, two reply passes at Teams' default limits …")
            done = subprocess.run([sys.executable, "-m", "bench.replies_poll", str(db), str(chats)],
                                  env=child_env, cwd=ROOT, capture_output=True, text=True, check=False)
        finally:
            sandbox.stop()
    if done.returncode != 0:
        raise RuntimeError(f"replies_poll child failed ({done.returncode}): {done.stderr[-3000:]}")
    m = json.loads(done.stdout.strip().splitlines()[-1])
    say(f"replies_poll: {json.dumps(m)}")
    per_minute = m["steady_requests"] * 60 / max(INTERVAL_S, m["steady_s"])
    per_second = m["steady_requests"] / m["steady_s"]
    return [
        Result(f"reply poll: Graph requests per minute for {m['chats']:,} watched chats (a pass every 60 s)",
               round(per_minute), "req/min", "≤ 1,200 (Teams: 20 GETs of chat messages/s per app and tenant)",
               per_minute <= 1200 and per_second <= 20,
               f"measured: the steady pass (nothing new) made {m['steady_requests']:,} requests in "
               f"{m['steady_s']:.1f} s ({per_second:.1f}/s), filed {m['steady_filed']}, {m['steady_failed']} chats "
               f"unread; the first pass {m['first_requests']:,} requests in {m['first_s']:.1f} s, filed "
               f"{m['first_filed']} replies. poll_cost's estimate: {m['estimate_per_minute']:,.0f}/min, a pass "
               f">= {m['estimate_pass_s']:.1f} s. Setup ({m['chats']:,} group chats, limits raised) "
               f"{m['setup_s']:.1f} s, not counted. One run.",
               samples=[round(m["steady_s"], 2)]),
    ]


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]))))
