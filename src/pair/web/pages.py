"""Portal shell: sign-in/out, home page, error pages and the dependencies pages share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts import policy, throttle
from pair.accounts import service as accounts
from pair.accounts.models import Role, User
from pair.accounts.policy import Action
from pair.audit.service import Actor, record
from pair.core.errors import Forbidden, TooManyRequests, Unauthorized
from pair.core.node import Node
from pair.web.csrf import csrf_protect, csrf_token
from pair.web.deps import SESSION_USER_KEY, SessionDep, client_address, get_node, optional_user
from pair.web.sessions import flash
from pair.web.templating import PACKAGE_ROOT, register_nav, render

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


@dataclass(frozen=True)
class PortalUser:
    """What templates know about the signed-in user (a plain copy: safe after a rollback)."""

    id: int
    name: str
    role: str
    facility_id: int
    facility_name: str


def page_user(request: Request, user: User | None = Depends(optional_user)) -> User:
    """The signed-in user of a portal page (HTML 401 pages redirect to the sign-in form)."""
    if user is None:
        raise Unauthorized("Please sign in to see this page.")
    request.state.user = PortalUser(
        user.id, user.name, user.role, user.facility_id, user.facility.name
    )
    return user


def page_any_actor(request: Request, user: User = Depends(page_user)) -> Actor:
    """Any signed-in account, the node operator included (administration pages)."""
    return accounts.actor_for(user, client_address(request))


def page_actor(actor: Actor = Depends(page_any_actor)) -> Actor:
    """A facility member: the node operator opens no facility's data pages."""
    if policy.is_operator(actor):
        raise Forbidden("The node operator has no access to facility data.")
    return actor


def page_may(action: Action) -> Callable[..., Actor]:
    """Pages counterpart of ``web.deps.own_facility``: the actor's role may do ``action``."""

    def check(actor: Actor = Depends(page_any_actor)) -> Actor:
        if not policy.may_role(actor, action):
            raise Forbidden(f"Your role ({actor.role}) cannot open this page.")
        return actor

    return check


def page_roles(*roles: Role) -> Callable[..., Actor]:
    """Like ``require_roles`` for pages: admins pass, others need one of ``roles``."""
    allowed = {r.value for r in roles}

    def check(actor: Actor = Depends(page_actor)) -> Actor:
        if actor.role != Role.ADMIN.value and actor.role not in allowed:
            names = ", ".join(sorted(allowed | {Role.ADMIN.value}))
            raise Forbidden(f"Your role ({actor.role}) cannot open this page; it needs: {names}.")
        return actor

    return check


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


@router.get("/")
def home(
    request: Request,
    session: Session = SessionDep,
    user: User = Depends(page_user),
) -> Response:
    """Counts for the user's facility (every page is facility-scoped, as DICOMweb is)."""
    from pair.repository.models import Patient, QuarantineItem, Study

    counts: dict[str, Any] = {}
    if user.role == Role.NODE_OPERATOR:  # the operator sees no facility's data
        return render(request, "home.html", {"counts": counts})
    for label, model in (("cases", Patient), ("studies", Study)):
        stmt = select(func.count()).select_from(model).where(model.facility_id == user.facility_id)
        counts[label] = session.scalar(stmt) or 0
    if user.role == Role.ADMIN:
        pending = (
            select(func.count())
            .select_from(QuarantineItem)
            .where(
                QuarantineItem.status == "pending", QuarantineItem.facility_id == user.facility_id
            )
        )
        counts["quarantine"] = session.scalar(pending) or 0
    return render(request, "home.html", {"counts": counts})


def install_portal(app: FastAPI) -> None:
    """Mount static files, the error renderer and every capability's page router."""
    from pair.accounts.pages import account_router, admin_router
    from pair.admin.pages import router as admin_pages
    from pair.cde.pages import router as cde_pages
    from pair.clinical.pages import router as clinical_pages
    from pair.evalruns.pages import router as evalruns_pages
    from pair.reporting.pages import router as reporting_pages
    from pair.usecases.pages import router as usecases_pages

    app.mount("/static", StaticFiles(directory=PACKAGE_ROOT / "web" / "static"), name="static")
    app.state.html_error_renderer = render_error
    register_nav("Home", "/", order=0)
    app.include_router(router)
    app.include_router(clinical_pages)
    app.include_router(admin_pages)
    app.include_router(admin_router)
    app.include_router(account_router)
    app.include_router(evalruns_pages)
    app.include_router(reporting_pages)
    app.include_router(cde_pages)
    app.include_router(usecases_pages)
