"""What the kernel does to build the settings dashboard, counted: store reads, DuckDB file attaches,
DuckDB connections, widget models, and the build's wall time (median of several builds).

Run: ``python -m bench.settings_profile [--runs N] [--db PATH]``. Without ``--db`` it makes a demo
database (``crmkit demo-data --addresses 1000``) in a temporary folder. Everything runs in this
process, the way the dashboard's ``settings_dashboard()`` cell runs in a Voila kernel (without the
kernel's comm messages to the browser). The counts are the stable measure on a loaded machine; the
time is for the trend. Not a goal row of ``python -m bench`` (that is ``bench/dashboard.py``, the
browser's time to interactive).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _demo_db(folder: Path) -> Path:
    db = folder / "crm.duckdb"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    subprocess.run([sys.executable, "-m", "crmkit.cli", "--db", str(db), "demo-data", "--addresses", "1000",
                    "--quiet"], check=True, env={**clean, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return db


def count_build(db: str | os.PathLike[str], user: str = "admin") -> dict[str, Any]:
    """Build the settings dashboard once against ``db`` as ``user`` and count what it did."""
    import duckdb
    from ipywidgets.widgets.widget import _instances

    from crmkit import store as store_mod
    from crmkit.widgets import settings_app

    counts: Counter[str] = Counter()
    real_connect = duckdb.connect
    real_attached = store_mod.Store._attached

    def connect(*args: Any, **kwargs: Any) -> Any:
        counts["duckdb_connections"] += 1
        return real_connect(*args, **kwargs)

    def attached(self: Any, read_only: bool) -> Any:
        counts["store_reads" if read_only else "store_writes"] += 1
        return real_attached(self, read_only)

    before = set(_instances)
    os.environ["CRMKIT_DB"] = os.fspath(db)
    os.environ["CRMKIT_USER"] = user
    duckdb.connect = connect  # type: ignore[assignment]
    store_mod.duckdb.connect = connect  # type: ignore[attr-defined]
    store_mod.Store._attached = attached  # type: ignore[method-assign]
    attaches = 0
    try:
        started = time.perf_counter()
        app = settings_app.settings_dashboard()
        elapsed = (time.perf_counter() - started) * 1000
        crm = getattr(app, "crm", None)
        if crm is not None:
            attaches = getattr(crm.store, "file_attaches", -1)
    finally:
        duckdb.connect = real_connect  # type: ignore[assignment]
        store_mod.duckdb.connect = real_connect  # type: ignore[attr-defined]
        store_mod.Store._attached = real_attached  # type: ignore[method-assign]
    models = len(set(_instances) - before)
    result = {"ms": elapsed, "widget_models": models, "file_attaches": attaches, **counts}
    app.close()
    if crm is not None:
        crm.store.close()
    for model in list(set(_instances) - before):
        _instances[model].close()
    return result


def kernel_builds(db: str | os.PathLike[str], runs: int, user: str = "admin") -> list[dict[str, float]]:
    """Build the dashboard the way a Voila kernel does: a fresh ipykernel per build, the import cell
    run first (Voila's preheat), then the ``settings_dashboard()`` cell timed from execute request
    to idle; counts the widget messages (comm_open + comm_msg) the kernel sent on iopub."""
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "CRMKIT_DB": os.fspath(db), "CRMKIT_USER": user, "PYTHONPATH": str(ROOT)}
    out = []
    for _ in range(runs):
        km, kc = start_new_kernel(kernel_name="python3", env=env)
        try:
            kc.execute_interactive("from crmkit.widgets.settings_app import settings_dashboard", timeout=120)
            messages: Counter[str] = Counter()

            def hook(msg: dict[str, Any], messages: Counter[str] = messages) -> None:
                messages[msg["msg_type"]] += 1

            started = time.perf_counter()
            reply = kc.execute_interactive("settings_dashboard()", timeout=120, output_hook=hook)
            elapsed = (time.perf_counter() - started) * 1000
            if reply["content"]["status"] != "ok":
                raise RuntimeError(f"the dashboard cell failed: {reply['content']}")
            out.append({"ms": elapsed, "comm_open": messages["comm_open"], "comm_msg": messages["comm_msg"],
                        "iopub": sum(messages.values())})
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--db", help="an existing crmkit database (default: a new demo database)")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--kernel", type=int, default=0, metavar="N",
                        help="also build it N times in a fresh ipykernel each and count the widget messages")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crmkit-settings-profile-") as tmp:
        db = Path(args.db) if args.db else _demo_db(Path(tmp))
        os.environ["CRMKIT_HOME"] = str(Path(tmp) / "home")
        count_build(db, args.user)  # warm-up: imports, first-use caches
        runs = [count_build(db, args.user) for _ in range(args.runs)]
        kernel = kernel_builds(db, args.kernel, args.user) if args.kernel else []
    last = runs[-1]
    times = [r["ms"] for r in runs]
    print(f"settings dashboard build as {args.user}, {args.runs} runs (load {os.getloadavg()[0]:.2f}):")
    for key in ("store_reads", "store_writes", "file_attaches", "duckdb_connections", "widget_models"):
        print(f"  {key}: {last.get(key, 0)}")
    print(f"  build time: median {statistics.median(times):.1f} ms (min {min(times):.1f}, max {max(times):.1f})")
    if kernel:
        k_times = [k["ms"] for k in kernel]
        print(f"in a fresh kernel, {len(kernel)} runs: comm_open {kernel[-1]['comm_open']}, comm_msg "
              f"{kernel[-1]['comm_msg']}, iopub messages {kernel[-1]['iopub']}; cell time median "
              f"{statistics.median(k_times):.1f} ms (min {min(k_times):.1f}, max {max(k_times):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
