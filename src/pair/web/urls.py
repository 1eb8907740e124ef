"""The node's public base URL as a client sees it, also behind a reverse proxy.

DICOMweb answers carry absolute URLs (RetrieveURL, BulkDataURI). Behind a proxy that
terminates TLS on another host name, ``request.base_url`` is the node's inner address, which
the viewer cannot reach; the proxy says what the client used in ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and ``X-Forwarded-Prefix``. Those headers are believed only from the
addresses in ``PAIR_FORWARDED_ALLOW_IPS``: anyone else could make the node hand out links to a
host of their choosing.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

TRUSTED_KEY = "pair.forwarded_trusted"

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~\-]+)*$")


def _first(value: str | None) -> str:
    """The client-side value: the first of a comma-separated chain of proxies."""
    return (value or "").split(",")[0].strip()


def public_base_url(request: Request) -> str:
    """``scheme://host[:port][/prefix]`` without a trailing slash."""
    base = str(request.base_url).rstrip("/")
    if not request.scope.get(TRUSTED_KEY):
        return base
    proto = _first(request.headers.get("x-forwarded-proto")).lower()
    host = _first(request.headers.get("x-forwarded-host"))
    prefix = _first(request.headers.get("x-forwarded-prefix")).rstrip("/")
    if not (proto or host or prefix):
        return base
    scheme, _, rest = base.partition("://")
    inner_host, _, inner_path = rest.partition("/")
    if proto in ("http", "https"):
        scheme = proto
    if host and _HOST.match(host):
        inner_host = host
    path = f"/{inner_path}" if inner_path else ""
    if prefix and _PREFIX.match(prefix):
        path = prefix + path
    return f"{scheme}://{inner_host}{path}"


class ForwardedHeaders:
    """Outermost: believe a proxy's ``X-Forwarded-*`` only from ``PAIR_FORWARDED_ALLOW_IPS``.

    The client address and scheme are rewritten by uvicorn's own proxy-header middleware with
    the same list (``pair serve`` turns uvicorn's built-in copy off, so one setting governs
    both and in-process test clients behave like the server); the raw peer's trust is kept in
    the scope for ``public_base_url``.
    """

    def __init__(self, app: ASGIApp, trusted: list[str]) -> None:
        self.trusted = frozenset(trusted)
        # uvicorn types its middleware with its own ASGI protocol types: same interface
        self.app: Any = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted))  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client") or ("", 0)
            scope[TRUSTED_KEY] = peer[0] in self.trusted
        await self.app(scope, receive, send)
