"""Bulk Teams sends: crmkit's paced Graph client against the sandbox's Teams limits.

Setup: a sandbox tenant in a subprocess with Teams' documented limits (20 chat-message POSTs/s
per app per tenant, 1/s per chat) and 300 ms added latency on every Graph call (a realistic
Graph response time); 40 one-on-one chats; 600 messages spread round-robin over them.

(a) crmkit's client (``GraphClient.send_many``: per-chat queues, tenant-wide pacing at 95 % of
    the limit, retries honouring Retry-After). Goal: ≥ 90 % of 20/s, i.e. ≥ 18 msg/s, with zero
    429 responses (no faults are injected).
(b) Baseline in the same run: the same 600 messages, one request at a time (send, wait for the
    answer, next), as a simple loop would do.

Rates are messages / wall seconds from the first send to the last answer, and, as a cross-check,
on the server's clock (first to last stored message).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from crmkit.graph import GraphClient, RateLimiter, RetryPolicy
from crmkit.http import make_async_http_client
from crmkit.sandbox import GRAPH_BASE, SANDBOX_DEFAULT_UPN

from .common import Context, Result, say

MESSAGES = 600
CHATS = 40
LATENCY_MS = 300
LIMIT = 20.0
ROOT = Path(__file__).resolve().parent.parent


class _Sandbox:
    def __init__(self, workdir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
        self._log = (workdir / "sandbox.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crmkit.sandbox", "--port", "0", "--no-https",  # crmkit uses http; 8766 stays free
             "--state", str(workdir / "sandbox-state"), "--reset"],
            stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT, env=env,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        first = lines.get(timeout=60)
        self.url = first.split("=", 1)[1]
        self.admin = httpx.Client(base_url=self.url, timeout=60)
        self.admin.get("/_sandbox/health").raise_for_status()

    def put(self, what: str, data: dict[str, Any]) -> None:
        self.admin.put(f"/_sandbox/{what}", json=data).raise_for_status()

    def get(self, what: str) -> Any:
        r = self.admin.get(f"/_sandbox/{what}")
        r.raise_for_status()
        return r.json()

    def token(self) -> str:
        r = self.admin.post("/_sandbox/token", json={"upn": SANDBOX_DEFAULT_UPN, "lifetime_s": 3600})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def stop(self) -> None:
        self.admin.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _server_rate(messages: list[dict[str, Any]]) -> float:
    stamps = sorted(int(m["id"]) for m in messages)  # sandbox message ids are epoch milliseconds
    span = (stamps[-1] - stamps[0]) / 1000
    return (len(stamps) - 1) / span if span > 0 else float("nan")


def _count(counters: dict[str, int], status: str) -> int:
    return sum(n for k, n in counters.items() if k.startswith("POST /v1.0") and k.split()[-1] == status)


def _baseline(graph: GraphClient, messages: list[tuple[str, dict[str, Any]]]) -> None:
    """One request at a time: post, wait for the answer, post the next (no pacing needed or used)."""

    async def loop() -> None:
        for chat_id, body in messages:
            await graph.aio.json("POST", f"/chats/{chat_id}/messages", json=body)

    graph._run(loop())


def run(ctx: Context) -> list[Result]:
    sandbox = _Sandbox(ctx.workdir)
    token = sandbox.token()
    try:
        def client(limiter: RateLimiter | None = None) -> GraphClient:
            return GraphClient(lambda force: token, base_url=GRAPH_BASE, http=make_async_http_client(sandbox.url),
                               retry=RetryPolicy(max_retries=8), limiter=limiter)

        setup = client()
        me = setup.me()
        others = [u["id"] for u in setup.iter_users("", top=100) if u["id"] != me["id"]][:CHATS]
        chats = [setup.get_or_create_chat(me["id"], other)["id"] for other in others]
        setup.close()
        assert len(chats) == CHATS, f"the sandbox directory has only {len(chats) + 1} users"
        messages = [(chats[i % CHATS], {"body": {"contentType": "html", "content": f"<p>record {i}</p>"}})
                    for i in range(MESSAGES)]
        sandbox.put("faults", {"latency_ms": LATENCY_MS, "paths": ["/v1.0/"]})

        # (a) crmkit's paced client
        sandbox.admin.delete("/_sandbox/counters")
        paced = client()
        say(f"graph_send: {MESSAGES} messages over {CHATS} chats, {LATENCY_MS} ms latency, paced client …")
        started = time.perf_counter()
        outcomes = paced.send_many(messages)
        paced_s = time.perf_counter() - started
        failed = sum(not o.ok for o in outcomes)
        paced_429 = _count(sandbox.get("counters"), "429")
        client_429 = paced.stats.get("status_429", 0)
        paced.close()
        stored = sandbox.get("messages")["value"]
        paced_server = _server_rate(stored)
        paced_rate = MESSAGES / paced_s

        # (b) baseline: one at a time
        sandbox.admin.post("/_sandbox/reset").raise_for_status()
        token = sandbox.token()
        sandbox.put("faults", {"latency_ms": LATENCY_MS, "paths": ["/v1.0/"]})
        setup = client()
        me = setup.me()
        chats = [setup.get_or_create_chat(me["id"], other)["id"] for other in others]
        setup.close()
        messages = [(chats[i % CHATS], body) for i, (_, body) in enumerate(messages)]
        sandbox.admin.delete("/_sandbox/counters")
        base = client()
        say(f"graph_send: baseline, {MESSAGES} messages one at a time (≈ {MESSAGES * LATENCY_MS / 1000:.0f} s) …")
        started = time.perf_counter()
        _baseline(base, messages)
        base_s = time.perf_counter() - started
        base.close()
        base_429 = _count(sandbox.get("counters"), "429")
        base_rate = MESSAGES / base_s
        base_server = _server_rate(sandbox.get("messages")["value"])
    finally:
        sandbox.stop()

    share = paced_rate / LIMIT
    setup_note = (f"{MESSAGES} msgs over {CHATS} chats, +{LATENCY_MS} ms per Graph call, sandbox limits "
                  f"{LIMIT:.0f}/s per tenant and 1/s per chat, no faults.")
    return [
        Result("graph_send: paced client, msgs/s", round(paced_rate, 2), "msg/s", "≥ 18 msg/s (90 % of 20/s)",
               paced_rate >= 0.9 * LIMIT and failed == 0,
               f"{setup_note} {paced_s:.1f} s wall; server clock {paced_server:.2f} msg/s; {failed} failed."),
        Result("graph_send: paced client, share of the 20/s limit", round(100 * share, 1), "%", "≥ 90 %",
               share >= 0.9),
        Result("graph_send: paced client, 429 responses", paced_429, "responses", "0",
               paced_429 == 0 and client_429 == 0,
               f"counted by the sandbox ({paced_429}) and by the client ({client_429})."),
        Result("graph_send: baseline one at a time, msgs/s", round(base_rate, 2), "msg/s", "", None,
               f"{base_s:.1f} s wall; server clock {base_server:.2f} msg/s; {base_429} × 429. "
               f"The paced client is {paced_rate / base_rate:.1f}× faster."),
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for r in run(Context(workdir=Path(tmp), addresses=0, runs=0)):
            print(r.benchmark, r.figure_text(), r.goal, r.met, r.note)
