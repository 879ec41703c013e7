"""Turn a Graph error response into crmkit's typed errors.

Graph's error body is ``{"error": {"code", "message", "innerError": {"request-id", ...}}}``, but
``code`` may be empty or contain spaces (Dev Proxy), ``innerError`` may nest, and proxies send
HTML. So parsing is lenient and never raises; the status and the ``request-id`` header are always
kept.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from ..errors import GraphError, GraphThrottled
from ._retry import parse_retry_after

__all__ = ["GraphNotFound", "GraphUnauthorized", "error_from_parts", "error_from_response"]


class GraphUnauthorized(GraphError):
    """401, or the 403 Teams sends for an expired token, still failing after one token refresh."""


class GraphNotFound(GraphError):
    """404: the user, chat or message does not exist (or is not visible to the signed-in user)."""


_HINTS = {
    401: "the token was rejected even after a refresh; sign in again.",
    403: "the signed-in account lacks a permission (or admin consent) for this call.",
    404: "it does not exist or is not visible to the signed-in account.",
    413: "the message is too large for Teams (about 28 KB per post).",
    429: "Microsoft Graph kept throttling beyond the retry budget; try again later.",
}


def _inner_request_id(inner: Any) -> str | None:
    # innerError can nest (innerError.innerError...); take the first request-id found.
    depth = 0
    while isinstance(inner, dict) and depth < 5:
        rid = inner.get("request-id") or inner.get("requestId")
        if rid:
            return str(rid)
        inner = inner.get("innerError") or inner.get("innererror")
        depth += 1
    return None


def error_from_parts(
    status: int, headers: httpx.Headers | dict[str, str], body: Any, *, what: str = "Microsoft Graph"
) -> GraphError:
    """Build the typed error from a status, headers and a decoded (or raw) body."""
    headers = httpx.Headers(headers)
    code: str | None = None
    message: str | None = None
    request_id = headers.get("request-id") or headers.get("x-ms-request-id")
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or "") or None
        message = str(err.get("message") or "") or None
        request_id = request_id or _inner_request_id(err.get("innerError") or err.get("innererror"))
    elif isinstance(err, str):  # some gateways send {"error": "text"}
        code = err
    text = f"{what} answered {status}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    hint = _HINTS.get(status)
    if hint:
        text += f" ({hint})"
    if request_id:
        text += f" [request-id {request_id}]"
    kw: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
    if status == 429:
        return GraphThrottled(text, retry_after=parse_retry_after(headers.get("retry-after")), **kw)
    if status == 401:
        return GraphUnauthorized(text, **kw)
    if status == 404:
        return GraphNotFound(text, **kw)
    return GraphError(text, **kw)


def error_from_response(response: httpx.Response, *, what: str = "Microsoft Graph") -> GraphError:
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        body = None
    return error_from_parts(response.status_code, response.headers, body, what=what)
