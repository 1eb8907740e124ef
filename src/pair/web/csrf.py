"""Per-session CSRF tokens for the portal's forms and cookie-authenticated API calls.

A form carries the token in the ``csrf_token`` field, a script in the ``X-CSRF-Token`` header.
Bearer-token clients are not exposed to CSRF (browsers never attach the header by themselves).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from pair.core.errors import Forbidden

SESSION_KEY = "csrf"
FORM_FIELD = "csrf_token"
HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_token(request: Request) -> str:
    """The session's token, created on first use (also before login, for the login form)."""
    session = request.scope.get("session")
    if session is None:
        return ""
    token = session.get(SESSION_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return str(token)


def _matches(request: Request, presented: str | None) -> bool:
    expected = request.scope.get("session", {}).get(SESSION_KEY)
    return bool(expected and presented and hmac.compare_digest(str(expected), presented))


def header_ok(request: Request) -> bool:
    """True for safe methods, after a page form passed ``csrf_protect``, or with the header."""
    if request.method in SAFE_METHODS or getattr(request.state, "csrf_checked", False):
        return True
    return _matches(request, request.headers.get(HEADER))


async def csrf_protect(request: Request) -> None:
    """Dependency for every portal router: unsafe methods need the session's token."""
    if request.method in SAFE_METHODS:
        return
    presented = request.headers.get(HEADER)
    if not presented:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(FORM_FIELD)
            presented = value if isinstance(value, str) else None
    if not _matches(request, presented):
        raise Forbidden(
            "The form's security token is missing or out of date (CSRF check). "
            "Reload the page and submit the form again."
        )
    request.state.csrf_checked = True
