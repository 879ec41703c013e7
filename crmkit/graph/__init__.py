"""Microsoft Graph for crmkit: an httpx client with retries, typed errors and Teams pacing.

- :class:`GraphClient`: blocking calls for notebooks, dashboards and scripts (runs on a private
  event loop thread, so it works inside Jupyter's running loop).
- :class:`AsyncGraph`: the same calls as coroutines, for code already on that loop.
- :class:`RetryPolicy` / :func:`parse_retry_after`: 429/503/504 with ``Retry-After`` (seconds or
  HTTP date), else capped exponential backoff with jitter.
- :class:`RateLimiter`: Teams' 20/s per tenant and 1/s per chat, interleaving chats.
- :class:`ServerClock`: Graph's clock relative to ours, from the ``Date`` header of every response.
- :func:`share_file` / :func:`upload_file` / :func:`resume_upload` / :func:`invite_readers`: a file to the
  signed-in user's OneDrive (simple upload or an upload session), shared for a chat message (``_drive``).
"""

from ._client import DEFAULT_GRAPH_URL, AsyncGraph, SendOutcome, TokenProvider, UserPage, search_expression
from ._clock import ServerClock
from ._drive import (
    FRAGMENT_SIZE,
    SIMPLE_UPLOAD_MAX,
    SharedFile,
    UploadSession,
    cancel_upload,
    find_file,
    invite_readers,
    resume_upload,
    share_file,
    upload_file,
)
from ._errors import GraphNotFound, GraphUnauthorized, error_from_response
from ._limits import TEAMS_CHAT_RATE, TEAMS_TENANT_RATE, RateLimiter
from ._loop import LoopThread, background_loop
from ._retry import RETRY_STATUSES, RetryPolicy, parse_retry_after
from ._sync import GraphClient

__all__ = [
    "DEFAULT_GRAPH_URL",
    "FRAGMENT_SIZE",
    "RETRY_STATUSES",
    "SIMPLE_UPLOAD_MAX",
    "TEAMS_CHAT_RATE",
    "TEAMS_TENANT_RATE",
    "AsyncGraph",
    "GraphClient",
    "GraphNotFound",
    "GraphUnauthorized",
    "LoopThread",
    "RateLimiter",
    "RetryPolicy",
    "SendOutcome",
    "ServerClock",
    "SharedFile",
    "TokenProvider",
    "UploadSession",
    "UserPage",
    "background_loop",
    "cancel_upload",
    "error_from_response",
    "find_file",
    "invite_readers",
    "parse_retry_after",
    "resume_upload",
    "search_expression",
    "share_file",
    "upload_file",
]
