"""The transfer-log monitor with nothing logged says so once (the chart used to repeat the table's line)."""

from __future__ import annotations

import re

import pytest

import crmkit
from crmkit.widgets.privacy import TransferLogMonitor

pytestmark = pytest.mark.widgets


def _text(monitor: TransferLogMonitor) -> str:
    """What the user reads: every HTML part of the monitor, tags dropped."""
    parts = [monitor.count.value, monitor.chart.value, monitor.table.value, monitor.error.value]
    return re.sub(r"<[^>]+>", " ", " ".join(parts))


@pytest.mark.parametrize(("lang", "line"), [("de", "Keine Weitergaben gefunden."), ("en", "No transfers found.")])
def test_an_empty_log_says_so_once(crm: crmkit.CRM, lang: str, line: str) -> None:
    monitor = TransferLogMonitor(crm, lang)
    assert monitor.frame.empty
    assert _text(monitor).count(line) == 1, _text(monitor)
    assert monitor.chart.layout.display == "none"  # no empty chart box either
    monitor.address.value = "7"  # a filter that finds nothing: still once
    assert _text(monitor).count(line) == 1
