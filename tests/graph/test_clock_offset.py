"""The Graph client's estimate of the server clock, from the ``Date`` header of every response."""

from __future__ import annotations

import email.utils

import pytest

from crmkit.graph import ServerClock


def _date(t: float) -> str:
    return email.utils.formatdate(t, usegmt=True)  # whole seconds, truncated, as servers send it


@pytest.mark.core
def test_no_date_seen_means_no_estimate() -> None:
    clock = ServerClock()
    assert clock.bounds() is None and clock.offset() is None
    clock.observe(None, 100.0, 100.1)
    clock.observe("not a date", 100.0, 100.1)
    clock.observe("", 100.0, 100.1)
    assert clock.bounds() is None and clock.samples == 0


@pytest.mark.core
@pytest.mark.parametrize("skew", [0.0, 42.3, -600.7, 3599.99])
def test_bounds_hold_the_true_offset_within_about_a_second(skew: float) -> None:
    clock = ServerClock()
    t = 1_700_000_000.0
    for i in range(40):
        sent = t + i * 0.37
        served = sent + 0.004 + (i % 3) * 0.002  # the server stamps its Date while handling the request
        clock.observe(_date(served + skew), sent, served + 0.003)
    bounds = clock.bounds()
    assert bounds is not None
    lo, hi = bounds
    assert lo <= skew <= hi
    assert hi - lo <= 1.1  # Date's one-second resolution plus the round trip
    assert abs(clock.offset() - skew) <= 0.6  # type: ignore[operator]


@pytest.mark.core
def test_a_few_outlying_dates_do_not_move_the_estimate() -> None:
    clock = ServerClock()
    t = 1_700_000_000.0
    for i in range(30):
        sent = t + i
        clock.observe(_date(sent + 0.01 + 5.0), sent, sent + 0.02)
    for i in range(5):  # a front end whose clock is an hour ahead, another with a stale cached Date
        clock.observe(_date(t + 40 + i + 3600), t + 40 + i, t + 40.02 + i)
        clock.observe(_date(t + 45 + i - 60), t + 45 + i, t + 45.02 + i)
    lo, hi = clock.bounds()  # type: ignore[misc]
    assert 4.0 <= lo <= 5.0 <= hi <= 6.1


@pytest.mark.core
def test_only_recent_responses_count() -> None:
    clock = ServerClock(window=16)
    t = 1_700_000_000.0
    for i in range(16):
        clock.observe(_date(t + i + 300), t + i, t + i + 0.01)
    for i in range(16, 32):  # the server's clock was corrected
        clock.observe(_date(t + i + 0.2), t + i, t + i + 0.01)
    lo, hi = clock.bounds()  # type: ignore[misc]
    assert lo <= 0.2 <= hi and hi < 2


@pytest.mark.sandbox
@pytest.mark.parametrize("skew", [90, -600])
def test_estimate_from_a_sandbox_with_a_skewed_clock(sandbox_admin, skew: int) -> None:
    sandbox_admin.put("clock", {"offset_s": skew})
    try:
        graph = sandbox_admin.graph_client()
        assert graph.aio.clock.bounds() is None  # nothing seen yet
        for _ in range(8):
            graph.me()
        lo, hi = graph.aio.clock.bounds()
        assert lo <= skew <= hi, (lo, hi)
        assert hi - lo <= 1.5
        assert graph.aio.clock.samples == 8
    finally:
        sandbox_admin.put("clock", {"offset_s": 0})
