"""ASGI middleware for server-side portal sessions, and flash messages kept in them.

``scope["session"]`` is a plain dict as with Starlette's SessionMiddleware (``user_id``, the
CSRF token, flashes), but it lives in the ``web_session`` table; the ``pair_session`` cookie
holds only a random id (HttpOnly, SameSite=Lax, Secure per ``PAIR_SESSION_COOKIE_SECURE``).
A change of user (sign-in, sign-out) always issues a new id, so a pre-login id is never reused.
"""

from __future__ import annotations

import copy
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pair.accounts import websessions
from pair.core.node import Node

COOKIE = "pair_session"
USER_KEY = "user_id"
SESSION_ID_KEY = "pair.web_session_id"
FLASH_KEY = "flash"
FLASH_HEADER = "x-pair-flash"  # internal: set by redirect_with_flash, moved into the session
SKIP_PREFIXES = ("/static/", "/healthz")


def flash(request: Request, message: str, kind: str = "success") -> None:
    """Show ``message`` on the next page this browser renders (never taken from a URL)."""
    request.session.setdefault(FLASH_KEY, []).append([kind, message[:500]])


def redirect_with_flash(url: str, message: str, kind: str = "success") -> RedirectResponse:
    """A 303 to ``url`` whose next page shows ``message``; for handlers without the request
    at hand. The middleware moves the message into the session and strips the header."""
    response = RedirectResponse(url, status_code=303)
    response.headers[FLASH_HEADER] = quote(f"{kind}:{message[:500]}")
    return response


def pop_flash(request: Request) -> tuple[str, str] | None:
    """The oldest pending flash as (kind, message), removed from the session."""
    session = request.scope.get("session")
    pending = session.get(FLASH_KEY) if session else None
    if not pending:
        return None
    kind, message = pending.pop(0)
    if not pending:
        session.pop(FLASH_KEY, None)  # type: ignore[union-attr]
    return str(kind), str(message)


def current_session_id(request: Request) -> int | None:
    value = request.scope.get(SESSION_ID_KEY)
    return int(value) if value is not None else None


class ServerSessionMiddleware:
    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node
        self.lifetimes = websessions.Lifetimes.from_settings(node.settings)
        self.secure = node.settings.session_cookie_secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(SKIP_PREFIXES):
            await self.app(scope, receive, send)
            return
        cookie = _cookie(scope)
        loaded = await run_in_threadpool(self._load, cookie) if cookie else None
        data: dict[str, Any] = dict(loaded.data) if loaded else {}
        if loaded and loaded.user_id is not None:
            data[USER_KEY] = loaded.user_id
        scope["session"] = data
        scope[SESSION_ID_KEY] = loaded.id if loaded else None
        initial = copy.deepcopy(data)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                now = scope["session"]
                headers = MutableHeaders(scope=message)
                if FLASH_HEADER in headers:
                    kind, _, text = unquote(headers[FLASH_HEADER]).partition(":")
                    del headers[FLASH_HEADER]
                    now.setdefault(FLASH_KEY, []).append([kind, text])
                changed = now != initial
                stale_cookie = cookie is not None and loaded is None
                if changed or stale_cookie or (loaded is not None and _due(loaded)):
                    header = await run_in_threadpool(
                        self._save, scope, cookie, loaded, now, initial
                    )
                    if header:
                        headers.append("set-cookie", header)
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _load(self, cookie: str) -> websessions.Loaded | None:
        with self.node.db.session() as s:
            return websessions.load(s, self.lifetimes, cookie)

    def _save(
        self,
        scope: Scope,
        cookie: str | None,
        loaded: websessions.Loaded | None,
        now: dict[str, Any],
        initial: dict[str, Any],
    ) -> str | None:
        """Write what changed; returns a Set-Cookie value when the browser's cookie changes."""
        user_id = now.get(USER_KEY)
        data = {k: v for k, v in now.items() if k != USER_KEY}
        with self.node.db.session() as s:
            if loaded is not None and loaded.user_id == user_id:
                if now != initial:
                    websessions.save(s, loaded.id, data)
                elif _due(loaded):
                    websessions.save(s, loaded.id, None)
                return None
            if loaded is not None:  # sign-in or sign-out: this id ends, a new one starts
                websessions.delete_one(s, loaded.id)
            if user_id is None and not data:
                return self._cookie_header("", 0) if cookie else None
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            client = scope.get("client")
            _id, plain = websessions.create(
                s,
                self.lifetimes,
                int(user_id) if user_id is not None else None,
                data,
                client[0] if client else "",
                headers.get("user-agent", ""),
            )
        return self._cookie_header(plain, int(self.lifetimes.absolute_s))

    def _cookie_header(self, value: str, max_age: int) -> str:
        parts = [f"{COOKIE}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Lax"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


def _due(loaded: websessions.Loaded) -> bool:
    return time.time() - loaded.last_seen_s > websessions.TOUCH_EVERY_S


def _cookie(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header is treated as no cookie
                continue
            if COOKIE in jar:
                return jar[COOKIE].value
    return None
