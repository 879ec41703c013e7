"""Store.read_session(): a burst of reads shares one read-only attachment of the file, writes still
work inside it, and the file is released when the block ends (issue 12, item 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

import crmkit

pytestmark = pytest.mark.core


def test_reads_in_a_session_attach_once_and_release_the_file(db_path: Path) -> None:
    crm = crmkit.open(db_path)
    store = crm.store
    before = store.file_attaches
    with store.read_session():
        for _ in range(5):
            assert store.one("SELECT count(*) FROM system_settings") is not None
        with store.read_session():  # nested: still the same attachment
            store.one("SELECT 1")
        assert store.file_attaches == before + 1
        crm.set_setting("ui.default_language", "en")  # a write inside: attaches writable on its own
        assert crm.setting("ui.default_language") == "en"  # and the next read sees it
    assert store.file_attaches == before + 3
    # Released: a second process-like store can write the file right away.
    other = crmkit.open(db_path)
    other.set_setting("ui.default_language", "de")
    assert crm.setting("ui.default_language") == "de"
    other.store.close()
    crm.store.close()
