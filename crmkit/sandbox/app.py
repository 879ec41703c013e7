"""Starlette application factory for the sandbox tenant."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import admin, graph, graph_channels, graph_drive, identity, views  # noqa: F401 (graph_drive joins its routes to graph's)
from .core import IdentitySettings, Sandbox
from .faults import FaultConfig, SandboxMiddleware
from .throttle import Limits


async def _not_found(request: Request, exc: Exception) -> Response:
    graph_answer = graph.unknown_version(request)
    if graph_answer is not None:
        return graph_answer
    if "text/html" in request.headers.get("accept", ""):  # a browser: a page, never raw JSON
        return views.not_found_page(request)
    return JSONResponse({"error": "not_found", "error_description": f"No sandbox endpoint at {request.url.path}"},
                        status_code=404)


def create_app(
    state_path: str | os.PathLike[str],
    *,
    limits: Limits | None = None,
    faults: FaultConfig | None = None,
    settings: IdentitySettings | None = None,
) -> Any:
    """Build the sandbox ASGI app.  ``state_path`` is a directory (DuckDB file + signing key).

    The returned object is an ASGI app; ``.sandbox`` gives the :class:`Sandbox` runtime.
    """
    sb = Sandbox(Path(state_path), limits=limits, faults=faults, settings=settings)
    # Order matters: fixed paths first, then Graph, then the per-tenant identity patterns.
    app = Starlette(
        # graph_channels: its admin hooks here; its Graph routes joined graph's table when it was imported
        routes=[*admin.routes, *graph_channels.admin_routes, *views.routes, *graph.routes, *identity.routes],
        exception_handlers={404: _not_found},
    )
    app.state.sandbox = sb
    wrapped = SandboxMiddleware(app, sb)
    wrapped.sandbox = sb  # type: ignore[attr-defined]
    return wrapped
