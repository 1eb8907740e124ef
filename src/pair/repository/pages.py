"""The repository's portal pages: the home page (the facility's counts), the upload page, the
series viewer and the quarantine review under the administration tabs."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pair.accounts.models import Role, User
from pair.accounts.policy import Action, check_role, scope
from pair.audit.service import Actor, record
from pair.core.errors import NotFound
from pair.core.node import Node
from pair.repository import quarantine as quarantine_review
from pair.repository import viewer as viewer_data
from pair.repository.burned_in import burned_in_review
from pair.repository.cases import get_case
from pair.repository.models import Instance, Patient, QuarantineItem, Series, Study
from pair.repository.service import list_quarantine
from pair.web.admin_shell import admin_only, render_admin
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, get_node, page_actor, page_roles, page_user
from pair.web.sessions import redirect_with_flash
from pair.web.templating import home_cards, register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
quarantine_router = APIRouter(
    prefix="/admin/quarantine",
    include_in_schema=False,
    dependencies=[Depends(csrf_protect), Depends(admin_only)],
)
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


@router.get("/studies/{study_uid}")
def study_page(
    study_uid: str, session: Session = SessionDep, actor: Actor = Depends(page_actor)
) -> Response:
    """A study by its UID (upload results link here): its case page, in the caller's facility."""
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None:
        raise NotFound("No such study.")
    case = get_case(session, actor, study.patient_pk)  # another facility's: 404 like a missing one
    return RedirectResponse(f"/cases/{case.id}", status_code=303)


# ---- series viewer ----


@router.get("/viewer/{study_uid}/{series_uid}")
def viewer(
    study_uid: str,
    series_uid: str,
    request: Request,
    report: int | None = None,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    """One series; ``report`` (a report id of this study) adds the way back to the form."""
    series = session.scalar(select(Series).where(Series.series_uid == series_uid))
    if series is None or series.study.study_uid != study_uid:
        raise NotFound("No such series in this study.")
    patient = get_case(session, actor, series.study.patient_pk)
    instances = list(
        session.scalars(
            select(Instance)
            .where(Instance.series_pk == series.id)
            .order_by(Instance.instance_number, Instance.id)
        )
    )
    record(session, actor, "series.view", "series", series_uid)
    return render(
        request,
        "repository/viewer.html",
        {
            "case": patient,
            "study": series.study,
            "series": series,
            "instances": [i.sop_instance_uid for i in instances],
            "modality": series.modality,
            "presets": viewer_data.window_presets(series.modality),
            "strip": viewer_data.series_strip(session, series.study),
            "report_id": report,
        },
    )


@router.get("/viewer/dictionary.json")
def tag_names(_: Actor = Depends(page_actor)) -> Response:
    """Tag -> keyword for the header panel (from pydicom's data dictionary), cached a day."""
    return Response(
        _tag_names_json(),
        media_type="application/json",
        headers={"Cache-Control": "private, max-age=86400"},
    )


@lru_cache(maxsize=1)
def _tag_names_json() -> str:
    from pydicom.datadict import DicomDictionary

    return json.dumps({f"{tag:08X}": entry[4] for tag, entry in DicomDictionary.items()})


# ---- burned-in text review (an administration tab) ----


@router.get("/admin/burned-in")
def burned_in_page(
    request: Request,
    offset: int = 0,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    """Stored instances whose pixels may carry burned-in text: thumbnails, reasons, viewer."""
    check_role(actor, Action.DEID_BURNED_IN_REVIEW)  # the operator sees no patient images
    if actor.facility_id is None:
        raise NotFound("This account belongs to no facility.")
    rows = burned_in_review(session, actor.facility_id, actor, limit=51, offset=max(0, offset))
    return render_admin(
        request,
        "repository/burned_in.html",
        {"rows": rows[:50], "more": len(rows) > 50, "offset": max(0, offset)},
    )


# ---- quarantine review (an administration tab) ----


@quarantine_router.get("")
def quarantine(
    request: Request,
    status: str = "pending",
    offset: int = 0,
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    total, items = list_quarantine(
        session, scope(actor, Action.QUARANTINE_REVIEW), status or None, 25, max(0, offset)
    )
    return render_admin(
        request,
        "repository/quarantine.html",
        {
            "items": items,
            "total": total,
            "status": status,
            "statuses": quarantine_review.STATUSES,
            "offset": offset,
            "limit": 25,
        },
    )


@quarantine_router.get("/{item_id}")
def quarantine_item(
    request: Request,
    item_id: int,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    item = quarantine_review.review(node, session, item_id, actor)
    return render_admin(request, "repository/quarantine_item.html", {"item": item})


@quarantine_router.get("/{item_id}/preview.png")
def quarantine_preview(
    item_id: int,
    node: Node = Depends(get_node),
    session: Session = SessionDep,
    actor: Actor = Depends(admin_only),
) -> Response:
    png = quarantine_review.preview_png(node, session, item_id, actor)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


def _decided(decision: quarantine_review.Decision, done: str) -> Response:
    """Redirect after a decision (committed before the response is sent); the message travels
    in the server-side session, never in the URL."""
    if decision.outcome == "quarantined":
        n = len(decision.reasons)
        return redirect_with_flash(
            f"/admin/quarantine/{decision.item_id}",
            f"Quarantine item {decision.item_id} is still held: the re-scan found {n} "
            "element(s) with residual PHI.",
        )
    return redirect_with_flash("/admin/quarantine", f"Quarantine item {decision.item_id} {done}.")


@quarantine_router.post("/{item_id}/remove-and-store")
def quarantine_remove_and_store(
    item_id: int,
    note: str = Form(""),
    paths: list[str] = Form(default_factory=list),
    node: Node = Depends(get_node),
    actor: Actor = Depends(admin_only),
) -> Response:
    decision = quarantine_review.remove_and_store(node, item_id, actor, note, paths or None)
    return _decided(decision, "stored without the flagged elements")


@quarantine_router.post("/{item_id}/rerun-and-store")
def quarantine_rerun_and_store(
    item_id: int,
    note: str = Form(""),
    node: Node = Depends(get_node),
    actor: Actor = Depends(admin_only),
) -> Response:
    decision = quarantine_review.rerun_and_store(node, item_id, actor, note)
    return _decided(decision, "de-identified again with the strict profile and stored")


@quarantine_router.post("/{item_id}/reject")
def quarantine_reject(
    item_id: int,
    note: str = Form(""),
    node: Node = Depends(get_node),
    actor: Actor = Depends(admin_only),
) -> Response:
    quarantine_review.reject(node, item_id, actor, note)
    return redirect_with_flash("/admin/quarantine", f"Quarantine item {item_id} rejected.")
