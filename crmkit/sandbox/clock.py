"""The tenant's clock, which tests may set to disagree with the client's."""

from __future__ import annotations

import datetime as dt
import email.utils
import time

__all__ = ["SandboxClock"]


class SandboxClock:
    """The tenant's clock: real time plus ``offset_s`` (admin API ``/_sandbox/clock``).

    It stamps chat messages and the ``Date`` header of every response, so tests can give the
    sandbox a clock that disagrees with the client's, as a real server's may. Tokens keep real time:
    the identity platform is a service (and a clock) of its own.
    """

    def __init__(self) -> None:
        self.offset_s = 0.0

    def time(self) -> float:
        return time.time() + self.offset_s

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.time(), dt.UTC)

    def http_date(self) -> str:
        """The ``Date`` header value (RFC 9110 IMF-fixdate: whole seconds, truncated)."""
        return email.utils.formatdate(int(self.time()), usegmt=True)

