"""Which URLs stay on this machine: the browser tier lets a page load only these."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["is_loopback_url"]


def is_loopback_url(url: str) -> bool:
    """True for a URL without a network host (data:, blob:, about:) or one on the loopback range.

    >>> is_loopback_url("http://127.0.0.1:8866/voila/static/x.css"), is_loopback_url("https://cdn.example/x.css")
    (True, False)
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss"):
        return True
    host = (parts.hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")
