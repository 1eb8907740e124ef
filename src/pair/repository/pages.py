"""The repository's portal pages: the home page (the facility's counts) and the upload page."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.models import Role, User
from pair.audit.service import Actor
from pair.repository.models import Patient, QuarantineItem, Study
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, page_roles, page_user
from pair.web.templating import home_cards, register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Upload", "/upload", roles=(Role.DATA_MANAGER.value,), order=20)


@router.get("/")
def home(
    request: Request,
    session: Session = SessionDep,
    user: User = Depends(page_user),
) -> Response:
    """Counts for the user's facility (every page is facility-scoped, as DICOMweb is)."""
    counts: dict[str, Any] = {}
    if user.role == Role.NODE_OPERATOR:  # the operator sees no facility's data
        return render(request, "home.html", {"counts": counts, "cards": []})
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
    cards = home_cards(session, user)  # other capabilities' counts (the reporting worklist)
    return render(request, "home.html", {"counts": counts, "cards": cards})


@router.get("/upload")
def upload_page(request: Request, _: Actor = Depends(page_roles(Role.DATA_MANAGER))) -> Response:
    """Drag-and-drop upload to ``POST /api/upload`` (files, folders, zips), one XHR per file."""
    return render(request, "repository/upload.html", {})
