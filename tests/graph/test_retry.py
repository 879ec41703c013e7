"""Retry maths: Retry-After parsing and backoff, apart from any send loop."""

from __future__ import annotations

import email.utils
import random

import pytest

from crmkit.graph import RetryPolicy, parse_retry_after

pytestmark = pytest.mark.core

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), (" 12 ", 12.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0), (None, None), ("", None),
     ("soon", None), ("nan", None), ("inf", None)],
)
def test_parse_retry_after_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP date counts from now; one in the past means retry now."""
    future = email.utils.formatdate(NOW + 42, usegmt=True)
    past = email.utils.formatdate(NOW - 42, usegmt=True)
    assert parse_retry_after(future, now=NOW) == pytest.approx(42, abs=1)
    assert parse_retry_after(past, now=NOW) == 0.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=8.0, rng=random.Random(7))
    for attempt, step in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (12, 8.0)]:
        delays = [policy.backoff(attempt) for _ in range(200)]
        assert min(delays) >= step / 2
        assert max(delays) <= step
        assert len({round(d, 6) for d in delays}) > 100  # really jittered


def test_delay_honours_retry_after_and_limits() -> None:
    policy = RetryPolicy(max_retries=3, max_retry_after=60)
    assert policy.delay(1, 429, "7") == 7.0
    assert policy.delay(1, 503, None) is not None  # backoff
    assert policy.delay(1, 500, "1") is None  # not a retried status
    assert policy.delay(1, 404, None) is None
    assert policy.delay(4, 429, "1") is None  # budget spent
    assert policy.delay(1, 429, "3600") is None  # longer than we are willing to wait


def test_policy_rejects_negative_bounds() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        RetryPolicy(max_retries=-1)
