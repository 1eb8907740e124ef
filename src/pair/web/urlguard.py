"""Refuse a NUL byte anywhere in a request's URL, before any route sees it.

No identifier, UID or search text PAIR knows contains NUL, and PostgreSQL cannot even compare
a value holding one (SQLite can): ``%00`` in a path or query would otherwise be a 500 on one
database and an empty answer on the other. One check here covers every route.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pair.core.errors import BadRequest

_MESSAGE = "The URL contains a NUL byte (%00), which no PAIR value can hold."


def _has_nul(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    raw_path: bytes = scope.get("raw_path") or b""
    return (
        b"%00" in query or b"\x00" in query or b"%00" in raw_path or "\x00" in scope.get("path", "")
    )


class NulGuard:
    """ASGI middleware: a 400 for any HTTP request whose path or query holds a NUL byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _has_nul(scope):
            error = BadRequest(_MESSAGE)
            response = JSONResponse(error.to_dict(), status_code=error.http_status)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
