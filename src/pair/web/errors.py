"""The one place where errors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pair.core.errors import PairError, TooManyRequests, Unauthorized

log = logging.getLogger("pair.web")


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith(
        ("/api", "/dicomweb")
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PairError)
    async def pair_error(request: Request, exc: PairError) -> Response:
        renderer = getattr(request.app.state, "html_error_renderer", None)
        response: Response
        if renderer is not None and _wants_html(request):
            response = renderer(request, exc.http_status, exc.message)
        else:
            headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
            response = JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(
            {"error": "invalid", "message": "Request validation failed.", "details": details},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        renderer = getattr(request.app.state, "html_error_renderer", None)
        if renderer is not None and _wants_html(request):
            return renderer(request, exc.status_code, str(exc.detail))  # type: ignore[no-any-return]
        return JSONResponse(
            {"error": "http_error", "message": str(exc.detail)}, status_code=exc.status_code
        )

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        """The client closed the connection before its request body was complete (an aborted
        upload): nothing was stored and nobody reads an answer; one line, not a traceback."""
        client = request.client.host if request.client else "-"
        route = request.scope.get("route")  # the template: a study UID in the path stays out
        path = getattr(route, "path", request.url.path)
        log.warning("Client %s disconnected during %s %s", client, request.method, path)
        return Response(status_code=400)

    app.add_middleware(UnhandledErrors)


class UnhandledErrors:
    """Answer an unexpected exception with a 500 JSON body *inside* the app.

    Starlette's outermost ServerErrorMiddleware answers too, but then re-raises, and uvicorn
    closes the connection of any request whose app raised: the client's next request on that
    keep-alive connection fails with a reset. Here the exception ends with the response.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # a streamed body broke half-way: only closing can tell the client
                raise
            log.exception("Unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = JSONResponse(
                {"error": "internal", "message": "Internal server error; see the server log."},
                status_code=500,
            )
            await response(scope, receive, send)
