"""Portal pages for sign-in sessions: an admin's session list with forced sign-out (own
facility only) and every user's password change."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from pair.accounts import websessions
from pair.accounts.models import Role
from pair.accounts.sessions_api import change_password, lifetimes
from pair.audit.service import Actor
from pair.core.errors import PairError
from pair.core.node import Node
from pair.web.admin_shell import TABS
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_any_actor, page_roles
from pair.web.sessions import current_session_id, flash, redirect_with_flash
from pair.web.templating import render

admin_only = page_roles(Role.ADMIN)
admin_router = APIRouter(
    prefix="/admin",
    include_in_schema=False,
    dependencies=[Depends(csrf_protect), Depends(admin_only)],
)
account_router = APIRouter(
    prefix="/account", include_in_schema=False, dependencies=[Depends(csrf_protect)]
)


@admin_router.get("/sessions")
def sessions_page(
    request: Request,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    rows = websessions.list_for_facility(session, lifetimes(node.settings), actor.facility_id)
    ctx = {"tabs": TABS, "rows": rows, "current_id": current_session_id(request)}
    return render(request, "accounts/sessions.html", ctx)


@admin_router.post("/sessions/{session_id}/end")
def session_end(
    session_id: int, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> Response:
    row = websessions.end_for_facility(session, session_id, actor)
    name = row.user.name if row.user else "?"
    return redirect_with_flash("/admin/sessions", f"Session {session_id} of {name} ended.")


@account_router.get("/password")
def password_form(
    request: Request, node: Node = Depends(get_node), _: Actor = Depends(page_any_actor)
) -> Response:
    ctx = {"min_length": node.settings.password_min_length}
    return render(request, "accounts/password.html", ctx)


@account_router.post("/password")
def password_change(
    request: Request,
    current_password: str = Form(""),
    new_password: str = Form(""),
    confirm_password: str = Form(""),
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(page_any_actor),
) -> Response:
    try:
        if new_password != confirm_password:
            raise PairError("The new password and its confirmation differ.")
        ended = change_password(
            session,
            node.settings,
            actor,
            current_password,
            new_password,
            current_session_id(request),
        )
    except PairError as exc:
        session.rollback()
        ctx = {
            "flash": exc.message,
            "flash_kind": "error",
            "min_length": node.settings.password_min_length,
        }
        response = render(request, "accounts/password.html", ctx, exc.http_status)
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            response.headers["Retry-After"] = str(retry)
        return response
    others = f" {ended} other session(s) signed out." if ended else ""
    flash(request, "Password changed." + others)
    return RedirectResponse("/account/password", status_code=303)
