"""A closed dashboard page takes its kernel with it; the shutdown endpoint still checks XSRF.

Voila's page sends ``POST /voila/api/shutdown/<kernel>`` with the ``_xsrf`` cookie's value on
``beforeunload``. Voila never set that cookie on a dashboard page, so every such request was refused
(403, voila#1458) and each visit left its kernel (~220 MB over 1,000,000 addresses) until culling.
Kernels are counted as the Voila process's ``ipykernel`` children; the idle baseline is the
preheated pool alone.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crmkit.voila_launch import (
    DASHBOARDS,
    dashboard_url,
    free_port,
    idle_kernel_count,
    kernel_ids,
    server_url,
    start_voila,
    stop_voila,
    wait_until_up,
)

from .conftest import build_demo_db

pytestmark = pytest.mark.browser

WIDGETS_UP = 120_000  # ms; kernel start + page execution on a busy 2-core box
BACK_WITHIN_S = 10.0  # the bound: kernels back to the idle baseline within 10 s of the close
NO_UNLOAD_WITHIN_S = 30.0  # a page that vanished without unload: CrmkitKernelManager.page_gone_after + slack


def _wait_for_count(proc: Any, want: int, timeout: float) -> tuple[int, float]:
    """Poll the kernel count until it equals ``want``; return (last count, seconds waited)."""
    started = time.monotonic()
    count = len(kernel_ids(proc))
    while count != want and time.monotonic() - started < timeout:
        time.sleep(0.2)
        count = len(kernel_ids(proc))
    return count, time.monotonic() - started


@pytest.fixture
def voila(tmp_path: Path, output_dir: Path) -> Iterator[tuple[Any, int, int]]:
    """A Voila of its own (the session server's kernel count is other tests' business), pool filled."""
    db = build_demo_db(tmp_path / "crm.duckdb", n=200)
    port = free_port()
    with (output_dir / "voila-kernel-shutdown.log").open("wb") as log:
        proc = start_voila(port, {"CRMKIT_DB": str(db.path), "CRMKIT_USER": "admin",
                                  "CRMKIT_HOME": str(tmp_path / "home")}, log=log)
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            baseline = idle_kernel_count()
            count, _ = _wait_for_count(proc, baseline, timeout=120)
            assert count == baseline, f"the pool did not fill: {count} kernels, expected {baseline}"
            time.sleep(1.0)  # the pool's renders settle
            yield proc, port, baseline
        finally:
            stop_voila(proc)


def _open_addresses(page: Any, port: int) -> None:
    page.goto(dashboard_url(port, "addresses.ipynb"), wait_until="commit")
    page.locator(".crmkit-row").first.wait_for(state="visible", timeout=WIDGETS_UP)


def test_closing_a_page_shuts_its_kernel_down(voila: tuple[Any, int, int], browser: Any) -> None:
    proc, port, baseline = voila
    context = browser.new_context(locale="de-DE")
    try:
        page = context.new_page()
        _open_addresses(page, port)
        # The visit took a pool kernel and the pool refills: one kernel more than idle.
        count, _ = _wait_for_count(proc, baseline + 1, timeout=60)
        assert count == baseline + 1
        assert any(c["name"] == "_xsrf" for c in context.cookies()), "the page got no _xsrf cookie"
        page.close(run_before_unload=True)
        count, waited = _wait_for_count(proc, baseline, timeout=BACK_WITHIN_S)
        assert count == baseline, f"{count} kernels {waited:.1f} s after the close, idle baseline {baseline}"
    finally:
        context.close()


def test_a_page_gone_without_unload_loses_its_kernel_soon(voila: tuple[Any, int, int], browser: Any) -> None:
    proc, port, baseline = voila
    context = browser.new_context(locale="de-DE")
    try:
        page = context.new_page()
        _open_addresses(page, port)
        count, _ = _wait_for_count(proc, baseline + 1, timeout=60)
        assert count == baseline + 1
        page.close(run_before_unload=False)  # a crashed tab, a killed browser: no beforeunload, no beacon
        count, waited = _wait_for_count(proc, baseline, timeout=NO_UNLOAD_WITHIN_S)
        assert count == baseline, f"{count} kernels {waited:.1f} s after the close, idle baseline {baseline}"
    finally:
        context.close()


def _post_shutdown(port: int, kernel: str, cookie: str | None, form: bytes | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/voila/api/shutdown/{kernel}", data=form or b"",
                                     method="POST")
    if form is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if cookie is not None:
        request.add_header("Cookie", cookie)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_shutdown_still_needs_the_pages_xsrf_token(voila: tuple[Any, int, int], browser: Any) -> None:
    proc, port, baseline = voila
    context = browser.new_context(locale="de-DE")
    try:
        page = context.new_page()
        _open_addresses(page, port)
        _wait_for_count(proc, baseline + 1, timeout=60)
        ids = set(kernel_ids(proc))
        kernel = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
        assert kernel in ids
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        assert "_xsrf" in cookies, "the page got no _xsrf cookie"
        token = cookies["_xsrf"]
        for kernel_id in (kernel, *sorted(ids - {kernel})):  # the page's kernel and the pool's
            # No token, no cookie: refused.
            assert _post_shutdown(port, kernel_id, None, None) == 403
            # A token in the form but no cookie (another site's page cannot read or set ours): refused.
            assert _post_shutdown(port, kernel_id, None, f"_xsrf={token}".encode()) == 403
            # The cookie but no token in the form (what a cross-site form post carries): refused.
            assert _post_shutdown(port, kernel_id, f"_xsrf={token}", b"x=1") == 403
            # A made-up token with a made-up cookie: refused.
            assert _post_shutdown(port, kernel_id, "_xsrf=2|aa|bb|1", b"_xsrf=2|aa|bb|1") == 403
        assert set(kernel_ids(proc)) == ids, "a refused request shut a kernel down"
        # The page's own token and cookie, as its unload beacon sends them: accepted, the kernel goes.
        assert _post_shutdown(port, kernel, f"_xsrf={token}", f"_xsrf={token}".encode()) == 204
        count, waited = _wait_for_count(proc, baseline, timeout=BACK_WITHIN_S)
        assert count == baseline, f"{count} kernels {waited:.1f} s after the shutdown, idle baseline {baseline}"
        page.close(run_before_unload=False)
    finally:
        context.close()


def _get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=120) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_max_kernels_ends_pageless_kernels_and_refuses_beyond(tmp_path: Path, output_dir: Path, browser: Any) -> None:
    """At ``max_kernels`` a visit first ends a kernel no page holds (a GET without a browser leaves one that never
    connects); when every kernel left is an open page's, the visit is refused (503) instead of adding one."""
    folder = tmp_path / "dashboards"
    folder.mkdir()
    for nb in DASHBOARDS.glob("*.ipynb"):
        shutil.copy(nb, folder / nb.name)
    config = json.loads((DASHBOARDS / "voila.json").read_text(encoding="utf-8"))
    baseline = idle_kernel_count(DASHBOARDS)
    config.setdefault("PageKernelManager", {})["max_kernels"] = baseline + 1
    (folder / "voila.json").write_text(json.dumps(config), encoding="utf-8")
    db = build_demo_db(tmp_path / "crm.duckdb", n=200)
    port = free_port()
    with (output_dir / "voila-max-kernels.log").open("wb") as log:
        proc = start_voila(port, {"CRMKIT_DB": str(db.path), "CRMKIT_USER": "admin",
                                  "CRMKIT_HOME": str(tmp_path / "home")}, dashboards_dir=folder, log=log)
        context = browser.new_context(locale="de-DE")
        try:
            wait_until_up(server_url(port), timeout=90, proc=proc)
            assert _wait_for_count(proc, baseline, timeout=120)[0] == baseline
            assert _get(dashboard_url(port, "addresses.ipynb")) == 200  # no browser: its kernel never connects
            assert _wait_for_count(proc, baseline + 1, timeout=60)[0] == baseline + 1
            pageless = set(kernel_ids(proc))
            time.sleep(12)  # idle longer than page_gone_after: it qualifies
            page = context.new_page()
            _open_addresses(page, port)
            # Within seconds, not at culling time (cull_idle_timeout): the visit itself made room.
            count, _ = _wait_for_count(proc, baseline + 1, timeout=5)
            assert count == baseline + 1, f"{count} kernels: the pageless one was not ended to make room"
            mine = page.evaluate("JSON.parse(document.getElementById('jupyter-config-data').textContent).kernelId")
            assert mine in pageless  # the visit took a pool kernel ...
            assert len(pageless - set(kernel_ids(proc))) == 1  # ... and the pageless kernel is gone
            # Every kernel is the pool's or an open page's: a second visitor is refused, nothing is started.
            before = set(kernel_ids(proc))
            assert _get(dashboard_url(port, "addresses.ipynb")) == 503
            time.sleep(2)
            assert set(kernel_ids(proc)) == before
        finally:
            context.close()
            stop_voila(proc)
