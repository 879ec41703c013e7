"""Is the process that left some state behind still running? Only provable on the same machine.

Sessions, campaign-run claims and staged outbox rows record the host and pid that made them; when
that process is gone, what it left can be taken over or cleaned up.
"""

from __future__ import annotations

import os
import socket

__all__ = ["HOST", "pid_alive", "process_gone"]

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this machine (a zombie, killed but not yet reaped, counts as gone)."""
    if os.name != "posix":
        return True  # signal 0 is no probe on Windows: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_gone(host: str | None, pid: int | None) -> bool:
    """True only when (host, pid) is known dead: same host and no such live process."""
    return host == HOST and pid is not None and pid != os.getpid() and not pid_alive(pid)
