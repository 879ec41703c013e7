"""What benchmark modules share: the run context, a result row, timing helpers."""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Context:
    workdir: Path          # a temporary folder, removed after the run
    addresses: int         # size of the demo database
    runs: int              # timed runs per query
    quick: bool = False    # smoke test: modules may shrink their sizes and repeats
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. the demo database path, for later modules


@dataclass
class Result:
    benchmark: str
    value: float
    unit: str
    goal: str = ""
    met: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)

    def figure_text(self) -> str:
        if self.unit == "×":
            return f"{self.value:.2f}×" if self.value < 10 else f"{self.value:,.0f}×"
        if self.unit == "ms" and self.value < 10:
            return f"{self.value:.2f} ms"
        return f"{self.value:,.1f} {self.unit}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed(fn: Callable[[], Any], runs: int, warmup: int = 0) -> list[float]:
    """Wall times of ``runs`` calls in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
