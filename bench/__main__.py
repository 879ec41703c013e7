"""Run every benchmark module and write ``bench/results/results.json`` and ``results.md``.

A benchmark module has ``run(ctx: Context) -> list[Result]``; add new ones to :data:`BENCHES`.

    python -m bench                   # all, at full size (1,000,000 addresses)
    python -m bench store --addresses 50000 --out /tmp/bench   # a quick look; keeps the committed results
    python -m bench --quick                 # smoke test of every module at small sizes (writes to a temp folder)
    python -m bench --soak --soak-factor 5  # the resilience tests at 5x their make-test size (soak.json/.md)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from .common import Context, Result

# module names inside bench/
BENCHES = ["store", "graph_send", "dashboard", "dashboard_load", "privacy_log", "privacy_log_pg", "send_memory",
           "table_paging", "store_pg", "dashboard_sessions_pg", "workers_pg", "hub_dashboard",
           "replies_poll", "file_send"]
SOAK = "soak"  # run only with --soak (it takes long, and is a pass/fail run rather than figures)

RESULTS = Path(__file__).resolve().parent / "results"


def _machine() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "when": datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
    }


def _markdown(results: list[Result], machine: dict[str, object], stem: str = "results") -> str:
    lines = [
        "# crmkit benchmarks" if stem == "results" else "# crmkit resilience soak",
        "",
        f"Run {machine['when']} on {machine['cpus']} CPUs (load average at start "
        f"{machine['load_average_at_start']}, at end {machine.get('load_average_at_end')}; other jobs shared "
        f"the machine when the load exceeds the CPU count), Python {machine['python']}, DuckDB {machine['duckdb']}, "
        f"pandas {machine['pandas']}. Produced by `python -m bench{' --soak' if stem == 'soak' else ''}`; raw "
        f"figures in `{stem}.json`.",
        "",
        "| benchmark | figure | goal | met? |",
        "|---|---|---|---|",
    ]
    for r in results:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.benchmark} | {r.figure_text()} | {r.goal or '—'} | {met} |")
    notes = [f"- **{r.benchmark}**: {r.note}" for r in results if r.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmark modules to run (default: all of {BENCHES})")
    parser.add_argument("--addresses", type=int, default=1_000_000, help="size of the demo database")
    parser.add_argument("--runs", type=int, default=40, help="timed runs per query (≥ 30 for p95)")
    parser.add_argument("--out", type=Path, default=None, help="where results.json/.md go (default bench/results)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: small sizes, few runs; results go to a temp folder unless --out is given")
    parser.add_argument("--soak", action="store_true",
                        help="instead: the resilience tests (kills, faults, concurrent writers) at soak size")
    parser.add_argument("--soak-factor", type=int, default=5, help="with --soak: how many times larger (default 5)")
    args = parser.parse_args(argv)
    if args.soak_factor < 1:
        parser.error("--soak-factor is a whole number ≥ 1")
    if args.quick:
        args.addresses = min(args.addresses, 20_000)
        args.runs = min(args.runs, 5)
    if args.out is None:
        args.out = Path(tempfile.mkdtemp(prefix="crmkit-bench-quick-")) if args.quick else RESULTS
    names = [SOAK] if args.soak else (args.names or BENCHES)
    unknown = set(names) - {*BENCHES, SOAK}
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; known: {BENCHES}")
    machine = _machine()
    machine["quick"] = args.quick
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crmkit-bench-") as tmp:
        ctx = Context(workdir=Path(tmp), addresses=args.addresses, runs=args.runs, quick=args.quick,
                      shared={"soak_factor": args.soak_factor})
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            print(f"== bench.{name}", file=sys.stderr, flush=True)
            results += module.run(ctx)
    machine["seconds_total"] = round(time.perf_counter() - started, 1)
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "soak" if args.soak else "results"
    (args.out / f"{stem}.json").write_text(
        json.dumps({"machine": machine, "results": [r.as_dict() for r in results]}, indent=2, ensure_ascii=False)
        + "\n", encoding="utf-8",
    )
    md = _markdown(results, machine, stem)
    (args.out / f"{stem}.md").write_text(md, encoding="utf-8")
    print(md)
    print(f"results written to {args.out}", file=sys.stderr)
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
