"""A session records what kind of process opened it: a real Jupyter kernel is a notebook, one Voila
started is a dashboard, a plain Python process a script (issue 12: the »must reopen« list)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from jupyter_client.manager import start_new_kernel

import crmkit

pytestmark = pytest.mark.core


def _kernel_opens(db: str, env: dict[str, str]) -> None:
    km, kc = start_new_kernel(kernel_name="python3", env=env)
    try:
        reply = kc.execute_interactive(f"import crmkit; crm = crmkit.open({db!r}); crm.store.close()",
                                       timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_kernels_record_notebook_or_dashboard_and_python_records_script(db_location: str) -> None:
    db_path = db_location  # the kernels and the script open the same CRM by name (a file, or a PostgreSQL URL)
    crmkit.open(db_path).store.close()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CRMKIT_", "VOILA_"))}
    _kernel_opens(db_path, base)
    _kernel_opens(db_path, {**base, "VOILA_PREHEAT": "False", "SERVER_SOFTWARE": "voila/0.5"})
    subprocess.run([sys.executable, "-c", f"import crmkit; crmkit.open({db_path!r}).store.close()"],
                   check=True, env=base, timeout=60)
    crm = crmkit.open(db_path)
    kinds = crm.store.read(lambda tx: [r[0] for r in tx.rows("SELECT kind FROM sessions ORDER BY id")])
    assert kinds == ["script", "notebook", "dashboard", "script", "script"]
