"""Per-CRM-user token caches on disk, through msal-extensions.

Encrypted where the OS offers it (DPAPI on Windows, Keychain on macOS, libsecret on Linux
desktops). A headless Linux server has no keyring, so the cache falls back to a plain JSON file
that only the OS user can read: mode 0600 inside the 0700 ``CRMKIT_HOME``. msal-extensions
creates new files 0600 but keeps the mode of an existing file, so the file is created (or
tightened) here first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from msal_extensions import FilePersistence, PersistedTokenCache, build_encrypted_persistence
from msal_extensions.persistence import BasePersistence, PersistenceNotFound

__all__ = ["CacheFile", "cache_file", "open_cache"]

log = logging.getLogger("crmkit.auth")


@dataclass(frozen=True)
class CacheFile:
    """Where one token cache lives and whether it is encrypted at rest."""

    path: Path
    encrypted: bool


def cache_key(store_path: str, owner: str) -> str:
    """A file-name-safe, stable key for (database, CRM user or "campaign")."""
    digest = hashlib.sha256(f"{store_path}\0{owner}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", owner)[:32] or "user"
    return f"{slug}-{digest}"


def _private_file(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.parent.stat().st_mode) & 0o077:
        path.parent.chmod(0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)


def _persistence(path: Path, *, allow_encrypted: bool) -> tuple[BasePersistence, bool]:
    if allow_encrypted:
        try:
            p = build_encrypted_persistence(str(path))
            try:
                p.load()
            except PersistenceNotFound:
                pass
            return p, True
        except Exception as exc:  # any keyring failure means "not available here"
            log.info("No OS keyring for the token cache (%s); using a 0600 file.", type(exc).__name__)
    _private_file(path)
    return FilePersistence(str(path)), False


_caches: dict[Path, tuple[PersistedTokenCache, CacheFile]] = {}
_lock = threading.Lock()


def cache_file(folder: Path, key: str) -> Path:
    return folder / "token-caches" / f"{key}.json"


def open_cache(path: Path, *, allow_encrypted: bool = True) -> tuple[PersistedTokenCache, CacheFile]:
    """The process-wide cache object for ``path`` (one per file, so MSAL apps can share it)."""
    with _lock:
        hit = _caches.get(path)
        if hit is None:
            persistence, encrypted = _persistence(path, allow_encrypted=allow_encrypted)
            hit = (PersistedTokenCache(persistence), CacheFile(path, encrypted))
            _caches[path] = hit
        return hit


def forget_caches() -> None:
    """Drop the process-wide cache objects (tests simulate a fresh process with this)."""
    with _lock:
        _caches.clear()
