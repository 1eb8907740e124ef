"""Opt-in CORS for the machine interfaces (``/dicomweb``, ``/wado``, ``/api``).

A zero-footprint viewer such as OHIF served from another origin calls DICOMweb with a bearer
token. Browsers only let it read the answers when the node names its origin, so the allow-list
(``PAIR_CORS_ORIGINS``) is explicit: exact origins, no wildcard, and no credentials (cookies are
never sent cross-origin; the portal's session cookie stays same-origin). Headers are added to
every answer of those paths, errors included, so the viewer can show the node's message instead
of an opaque network error. Portal pages never get CORS headers.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CORS_PATHS = ("/dicomweb", "/wado", "/api")
ALLOW_METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = ("authorization", "accept", "content-type")
EXPOSE_HEADERS = "Warning, Content-Type, Content-Length, Content-Location, Location"
MAX_AGE_S = "600"


def _applies(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in CORS_PATHS)


class CorsMiddleware:
    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        self.app = app
        self.origins = frozenset(o.lower() for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.origins or not _applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin", "")
        allowed = origin.lower() in self.origins
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, allowed, headers)(scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out["access-control-allow-origin"] = origin
                out["access-control-expose-headers"] = EXPOSE_HEADERS
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, with_cors)

    @staticmethod
    def _preflight(origin: str, allowed: bool, headers: Headers) -> PlainTextResponse:
        if not allowed:
            return PlainTextResponse(
                f"Origin {origin or '(none)'} is not in this node's PAIR_CORS_ORIGINS.",
                status_code=403,
                headers={"Vary": "Origin"},
            )
        asked = {
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        }
        refused = sorted(asked - set(ALLOW_HEADERS))
        if refused:
            return PlainTextResponse(
                f"Request header(s) {', '.join(refused)} are not allowed cross-origin; "
                f"allowed: {', '.join(ALLOW_HEADERS)}.",
                status_code=403,
                headers={"Vary": "Origin"},
            )
        return PlainTextResponse(
            "",
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ", ".join(ALLOW_HEADERS),
                "Access-Control-Max-Age": MAX_AGE_S,
                "Vary": "Origin",
            },
        )
