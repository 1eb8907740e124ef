"""Admin pages: thin handlers over ``pair.accounts.service`` and ``pair.admin.service``."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from pair.accounts import service as accounts
from pair.accounts.models import Role
from pair.accounts.policy import GRANTABLE_ROLES, Action
from pair.admin import audit_view, service
from pair.audit.service import Actor, record
from pair.core.errors import Invalid, PairError
from pair.web.admin_shell import admin_only, render_admin
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep
from pair.web.sessions import redirect_with_flash
from pair.web.templating import register_nav

router = APIRouter(
    prefix="/admin",
    include_in_schema=False,
    dependencies=[Depends(csrf_protect), Depends(admin_only)],
)
_ADMINS = (Role.ADMIN.value, Role.NODE_OPERATOR.value)
register_nav("Admin", "/admin", roles=_ADMINS, order=80)
register_nav("Audit log", "/admin/audit", roles=_ADMINS, order=90)


def _page(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> Response:
    return render_admin(request, f"admin/{name}", ctx, status)


def _back(path: str, message: str) -> Response:
    """Redirect after a write (the session dependency commits before the response is sent);
    the message travels in the server-side session, never in the URL."""
    return redirect_with_flash(path, message)


@router.get("")
def admin_home() -> Response:
    return RedirectResponse("/admin/users", status_code=303)


# ---- users ----


def _users_page(
    request: Request, session: Session, actor: Actor, status: int = 200, **extra: Any
) -> Response:
    ctx = {
        "users": accounts.list_users(session, actor=actor),
        "facilities": accounts.list_facilities(session, actor),
        "roles": list(GRANTABLE_ROLES),
        "form": {},
        **extra,
    }
    return _page(request, "users.html", ctx, status)


@router.get("/users")
def users(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> Response:
    return _users_page(request, session, actor)


@router.post("/users")
def user_create(
    request: Request,
    name: str = Form(""),
    role: str = Form(""),
    facility_id: str = Form(""),
    password: str = Form(""),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    try:
        facility = accounts.get_facility(session, facility_id, actor, Action.USER_CREATE)
        user = accounts.create_user(session, facility, name, role, password or None, actor)
    except PairError as exc:
        session.rollback()
        form = {"name": name, "role": role, "facility_id": facility_id}
        return _users_page(
            request,
            session,
            actor,
            exc.http_status,
            flash=exc.message,
            flash_kind="error",
            form=form,
        )
    return _back("/admin/users", f"User {user.name} created.")


@router.post("/users/{user_id}/active")
def user_active(
    user_id: int,
    active: str = Form(...),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    user = service.set_user_active(session, user_id, active == "1", actor)
    return _back(
        "/admin/users", f"User {user.name} {'activated' if user.active else 'deactivated'}."
    )


# ---- tokens ----


@router.get("/tokens")
def tokens(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> Response:
    return _page(
        request,
        "tokens.html",
        {
            "tokens": accounts.list_tokens(session, actor=actor),
            "users": accounts.list_users(session, actor=actor),
        },
    )


@router.post("/tokens")
def token_create(
    request: Request,
    user_id: int = Form(...),
    label: str = Form(""),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    user = accounts.get_user_by_id(session, user_id, actor, Action.TOKEN_CREATE)
    _token, plain = accounts.create_token(session, user, label, actor)
    ctx = {
        "tokens": accounts.list_tokens(session, actor=actor),
        "users": accounts.list_users(session, actor=actor),
        "new_token": plain,
        "new_token_user": user.name,
        "flash": f"Token created for {user.name}. Copy it now: it is shown only once.",
    }
    response = _page(request, "tokens.html", ctx, 201)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/tokens/{token_id}/revoke")
def token_revoke(
    token_id: int,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    accounts.revoke_token(session, token_id, actor)
    return _back("/admin/tokens", f"Token {token_id} revoked.")


# ---- AE titles ----


def _ae_page(
    request: Request, session: Session, actor: Actor, status: int = 200, **extra: Any
) -> Response:
    ctx = {
        "aes": accounts.list_ae_titles(session, actor=actor),
        "facilities": accounts.list_facilities(session, actor),
        "form": {},
        **extra,
    }
    return _page(request, "ae_titles.html", ctx, status)


@router.get("/ae-titles")
def ae_titles(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> Response:
    return _ae_page(request, session, actor)


@router.post("/ae-titles")
def ae_add(
    request: Request,
    ae_title: str = Form(""),
    facility_id: str = Form(""),
    description: str = Form(""),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    try:
        facility = accounts.get_facility(session, facility_id, actor, Action.AE_ADD)
        ae = accounts.add_ae_title(session, facility, ae_title, description, actor)
    except PairError as exc:
        session.rollback()
        form = {"ae_title": ae_title, "facility_id": facility_id, "description": description}
        return _ae_page(
            request,
            session,
            actor,
            exc.http_status,
            flash=exc.message,
            flash_kind="error",
            form=form,
        )
    return _back("/admin/ae-titles", f"AE title {ae.ae_title} added.")


@router.post("/ae-titles/remove")
def ae_remove(
    ae_title: str = Form(...),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    accounts.remove_ae_title(session, ae_title, actor)
    return _back("/admin/ae-titles", f"AE title {ae_title} removed.")


# ---- de-identification profiles ----


@router.get("/deid")
def deid(
    request: Request,
    facility: int | None = None,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    facilities = accounts.list_facilities(session, actor)
    current = next(
        (f for f in facilities if f.id == facility), facilities[0] if facilities else None
    )
    return _page(
        request,
        "deid.html",
        {
            "facilities": facilities,
            "current": current,
            "text": (current.deid_profile or "") if current else "",
            "default_text": service.default_deid_profile(),
            "warnings": service.deid_warnings(current.deid_profile) if current else [],
        },
    )


@router.post("/deid/{facility_id}")
def deid_save(
    request: Request,
    facility_id: int,
    profile: str = Form(""),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    try:
        service.set_deid_profile(session, facility_id, profile, actor)
    except Invalid as exc:
        session.rollback()
        facilities = accounts.list_facilities(session, actor)
        current = next((f for f in facilities if f.id == facility_id), None)
        return _page(
            request,
            "deid.html",
            {
                "facilities": facilities,
                "current": current,
                "text": profile,
                "flash": exc.message,
                "flash_kind": "error",
            },
            422,
        )
    return _back(f"/admin/deid?facility={facility_id}", "Profile saved.")


# ---- audit log ----


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"Not a date: {value!r} (use YYYY-MM-DD).") from None


def _audit_query(request: Request) -> service.AuditQuery:
    p = request.query_params
    offset = int(p["offset"]) if p.get("offset", "").isdigit() else 0
    return service.AuditQuery(
        user=p.get("user") or None,
        action=p.get("action") or None,
        object_type=p.get("object_type") or None,
        object_id=p.get("object_id") or None,
        date_from=_date(p.get("date_from")),
        date_to=_date(p.get("date_to")),
        limit=50,
        offset=offset,
    )


@router.get("/audit")
def audit(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> Response:
    q = _audit_query(request)
    total, events = service.search_audit(session, q, actor)
    facets = service.audit_facets(session, actor)
    rows = [
        {
            "e": e,
            "link": audit_view.object_link(e.object_type, e.object_id),
            "detail": audit_view.detail_rows(e.detail),
        }
        for e in events
    ]
    export = "/admin/audit/export.csv"
    if request.url.query:
        export += "?" + request.url.query
    return _page(
        request,
        "audit.html",
        {"q": q, "total": total, "rows": rows, "facets": facets, "export_url": export},
    )


@router.get("/audit/export.csv")
def audit_export(
    request: Request, session: Session = SessionDep, actor: Actor = Depends(admin_only)
) -> Response:
    """The filtered events as CSV (what the page shows, every page of it)."""
    q = _audit_query(request)
    record(session, actor, "audit.export", "audit", "", detail={"filters": request.url.query})
    # built before returning: the request's session closes when this function returns
    body = "".join(audit_view.export_csv(session, q, actor))
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="pair-audit.csv"'},
    )
