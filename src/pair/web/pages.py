"""Portal shell: sign-in/out and error pages (page dependencies live in ``web.deps``)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from pair.accounts import service as accounts
from pair.accounts import throttle
from pair.accounts.models import User
from pair.audit.service import Actor, record
from pair.core.errors import TooManyRequests, Unauthorized
from pair.core.node import Node
from pair.web.csrf import csrf_protect, csrf_token
from pair.web.deps import SESSION_USER_KEY, SessionDep, client_address, get_node
from pair.web.sessions import flash
from pair.web.templating import PACKAGE_ROOT, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])

ERROR_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported file type",
    422: "Invalid input",
    429: "Too many attempts",
    500: "Something went wrong",
}


def render_error(request: Request, status: int, message: str) -> Response:
    """HTML error pages (registered as ``app.state.html_error_renderer``)."""
    if status == 401 and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    title = ERROR_TITLES.get(status, "Error")
    return render(
        request, "error.html", {"status": status, "title": title, "message": message}, status
    )


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


@router.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on their own; answer it instead of logging a 404."""
    return FileResponse(
        PACKAGE_ROOT / "web" / "static" / "favicon.ico",
        media_type="image/x-icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    if request.session.get(SESSION_USER_KEY):
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


def _printable(text: str) -> str:
    """What an audit row or throttle key may hold of a typed-in user name (no NUL, no controls)."""
    return "".join(c for c in text if c.isprintable())[:128]


@router.post("/login")
def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    next: str = Form("/"),
    session: Session = SessionDep,
    node: Node = Depends(get_node),
) -> Response:
    """Password sign-in, throttled per account and per address (``pair.accounts.throttle``)."""
    name = _printable(username.strip())
    address = client_address(request)
    rules = throttle.Rules.from_settings(node.settings)
    attempt = Actor(None, name, None, "", address)
    ctx = {"next": _safe_next(next), "username": name}
    try:
        throttle.check(session, rules, name, address)
        user = accounts.authenticate_password(session, username.strip(), password)
    except TooManyRequests as exc:
        record(session, attempt, "portal.login", "user", outcome="failure", detail={"throttled": 1})
        response = render(request, "login.html", {**ctx, "error": exc.message}, 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except Unauthorized as exc:
        throttle.failure(session, rules, name, address, attempt)
        record(session, attempt, "portal.login", "user", outcome="failure")
        return render(request, "login.html", {**ctx, "error": exc.message}, 401)
    throttle.success(session, rules, name)
    request.session.clear()  # no session fixation: a new session id, a fresh CSRF token
    request.session[SESSION_USER_KEY] = user.id
    csrf_token(request)
    record(
        session,
        accounts.actor_for(user, address),
        "portal.login",
        "user",
        str(user.id),
    )
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, session: Session = SessionDep) -> Response:
    """Ends the session on the server: its row is deleted, so a copy of the cookie is void."""
    user_id = request.session.get(SESSION_USER_KEY)
    if user_id is not None:
        user = session.get(User, int(user_id))
        if user is not None:
            actor = accounts.actor_for(user, client_address(request))
            record(session, actor, "portal.logout", "user", str(user.id))
    request.session.clear()
    flash(request, "You have signed out.")
    return RedirectResponse("/login", status_code=303)
