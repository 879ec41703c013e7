"""One private asyncio event loop in a daemon thread, shared by crmkit's async HTTP work.

Jupyter (and Voila) already run an event loop in the main thread, so ``asyncio.run`` raises
there, and calling it repeatedly closes the loop a cached ``httpx.AsyncClient`` is bound to.
Running crmkit's coroutines on its own long-lived loop avoids both: synchronous callers block on
a ``concurrent.futures.Future``; async callers (a notebook cell with ``await``) wrap it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread", "background_loop"]

T = TypeVar("T")


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self, name: str = "crmkit-graph") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop from any thread."""
        if not self.loop.is_running() and self.loop.is_closed():
            coro.close()
            raise RuntimeError("crmkit's background event loop is closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it finishes (not from the loop's own thread)."""
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "A blocking crmkit Graph call was made from its own event loop; await the async "
                "client (client.aio) there instead."
            )
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)


_shared: LoopThread | None = None
_lock = threading.Lock()


def background_loop() -> LoopThread:
    """The process-wide loop thread, started on first use."""
    global _shared
    with _lock:
        if _shared is None or not _shared.thread.is_alive():
            _shared = LoopThread()
        return _shared
