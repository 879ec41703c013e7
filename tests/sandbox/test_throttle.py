"""Teams throttling for POST chat message: 1 request/s per chat, 20 requests/s per app per tenant."""

from __future__ import annotations

import threading
import time

import pytest

from crmkit.sandbox import SANDBOX_DEFAULT_UPN
from tests.support.sandbox import one_on_one_chat

from .shapes import GRAPH_ERROR, assert_shape

pytestmark = pytest.mark.sandbox


def _chats(sandbox_admin, g, n: int) -> list[str]:
    others = [u["userPrincipalName"] for u in sandbox_admin.admin.get("/_sandbox/users").json()["value"]
              if u["userPrincipalName"] != SANDBOX_DEFAULT_UPN][:n]
    assert len(others) == n
    ids = []
    for upn in others:
        ids.append(one_on_one_chat(g, upn))
    return ids


def _hammer(sandbox_admin, token: str, chat_ids: list[str], seconds: float) -> tuple[int, list]:
    """Post as fast as possible into each chat (one thread per chat) until the deadline."""
    accepted = 0
    throttled: list = []
    lock = threading.Lock()
    start = threading.Event()
    deadline = [0.0]

    g = sandbox_admin.graph(token)  # one client, shared by all threads (httpx.Client is thread-safe)

    def worker(chat_id: str) -> None:
        nonlocal accepted
        start.wait()
        i = 0
        while time.monotonic() < deadline[0]:
            r = g.post(f"chats/{chat_id}/messages", json={"body": {"content": f"hammer {i}"}})
            i += 1
            with lock:
                if r.status_code == 201:
                    accepted += 1
                elif r.status_code == 429:
                    throttled.append(r)
                else:
                    raise AssertionError(r.text)
            if r.status_code == 429:
                # Still far faster than Retry-After allows, but leaves CPU for the server on
                # small, busy machines so the measurement is about the limiter, not the host.
                time.sleep(0.01)

    threads = [threading.Thread(target=worker, args=(c,)) for c in chat_ids]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + seconds
    start.set()
    for t in threads:
        t.join()
    return accepted, throttled


def _server_times(sandbox_admin) -> list[float]:
    """Acceptance times as the sandbox recorded them (message ids are epoch milliseconds)."""
    return sorted(int(m["id"]) / 1000 for m in sandbox_admin.admin.get("/_sandbox/messages").json()["value"])


def _observed_rate(times: list[float], seconds: int) -> float:
    # Count from the first acceptance over whole seconds, on the server's clock (the client's
    # clock would also count requests still queued at its deadline), leaving the last second of
    # hammering out so every counted second was saturated.
    t0 = times[0]
    return sum(1 for t in times if t < t0 + seconds) / seconds


def _max_in_any_window(times: list[float], window: float = 1.0) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _check_429(r) -> None:
    assert_shape(r.json(), GRAPH_ERROR)
    assert r.json()["error"]["code"] == "TooManyRequests"
    assert int(r.headers["Retry-After"]) >= 1


def test_one_chat_gets_one_post_per_second(sandbox_admin):
    token = sandbox_admin.token()
    (chat,) = _chats(sandbox_admin, sandbox_admin.graph(token), 1)
    seconds = 4.0
    accepted, throttled = _hammer(sandbox_admin, token, [chat], seconds)
    times = _server_times(sandbox_admin)
    assert len(times) == accepted
    rate = _observed_rate(times, 3)
    assert abs(rate - 1.0) <= 0.1, (times, len(throttled))
    # No two posts closer than 0.9 s: the limit within 10%. (The timestamp is taken just after the
    # throttle check, so two admitted posts can be stamped a few ms under a full second apart.)
    assert _max_in_any_window(times, window=0.9) == 1
    assert len(throttled) > 20
    _check_429(throttled[0])


def test_app_gets_twenty_posts_per_second_across_chats(sandbox_admin):
    token = sandbox_admin.token()
    chats = _chats(sandbox_admin, sandbox_admin.graph(token), 40)
    seconds = 3.0
    accepted, throttled = _hammer(sandbox_admin, token, chats, seconds)
    times = _server_times(sandbox_admin)
    assert len(times) == accepted
    rate = _observed_rate(times, 2)
    assert abs(rate - 20.0) <= 2.0, (rate, accepted, len(throttled))
    assert _max_in_any_window(times) <= 22  # within 10%: timestamps are taken just after the check
    _check_429(throttled[-1])


def test_limits_are_configurable(sandbox_admin):
    assert sandbox_admin.put("limits", {"chat_post_per_app_per_s": 10, "chat_post_per_chat_per_s": 5}) == {
        "enabled": True, "chat_post_per_app_per_s": 10.0, "chat_post_per_chat_per_s": 5.0,
        "channel_post_per_app_per_s": 50.0, "channel_post_per_channel_per_s": 1.0, "window_s": 1.0}
    token = sandbox_admin.token()
    chats = _chats(sandbox_admin, sandbox_admin.graph(token), 4)
    _hammer(sandbox_admin, token, chats, 3.0)
    times = _server_times(sandbox_admin)
    assert abs(_observed_rate(times, 2) - 10.0) <= 1.0, times
    assert _max_in_any_window(times) <= 11
