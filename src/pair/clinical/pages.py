"""Portal pages for cases: browser and case page with clinical data (the series viewer is the
repository's, ``pair.repository.pages``)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts import service as accounts
from pair.audit.service import Actor
from pair.clinical import service
from pair.clinical.dictionary import load_dictionary
from pair.core.errors import Invalid
from pair.repository.cases import facility_scope, get_case
from pair.repository.models import Instance, Series, Study
from pair.web.csrf import csrf_protect
from pair.web.deps import SessionDep, page_actor
from pair.web.templating import register_nav, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(csrf_protect)])
register_nav("Cases", "/cases", order=10)
PAGE_SIZE = 25


def _query_from(request: Request) -> service.CaseQuery:
    p = request.query_params

    def text(name: str) -> str | None:
        value = p.get(name, "").strip()
        return value or None

    def number(name: str, default: int) -> int:
        value = p.get(name, "")
        return int(value) if value.isdigit() else default

    facility = text("facility_id")
    order: Literal["asc", "desc"] = "desc" if p.get("order") == "desc" else "asc"
    return service.CaseQuery(
        study_date_from=text("study_date_from"),
        study_date_to=text("study_date_to"),
        modality=text("modality"),
        covid19_positive=text("covid19_positive"),
        sex=text("sex"),
        age_band=text("age_band"),
        facility_id=int(facility) if facility and facility.isdigit() else None,
        text=text("text"),
        sort=text("sort") or "pseudonym",
        order=order,
        limit=PAGE_SIZE,
        offset=number("offset", 0),
    )


@router.get("/cases")
def case_browser(
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    q = _query_from(request)
    error = None
    try:
        result = service.list_cases(session, actor, q)
    except Invalid as exc:
        error, result = exc.message, service.CaseResult(0, [])
    scope = facility_scope(actor)
    modality_stmt = select(Series.modality).join(Study, Study.id == Series.study_pk).distinct()
    if scope is not None:
        modality_stmt = modality_stmt.where(Study.facility_id == scope)
    modalities = sorted(m for m in session.scalars(modality_stmt) if m)
    facilities = accounts.list_facilities(session) if scope is None else []
    return render(
        request,
        "clinical/cases.html",
        {
            "q": q,
            "result": result,
            "error": error,
            "dictionary": load_dictionary(),
            "modalities": modalities,
            "facilities": facilities,
            "limit": PAGE_SIZE,
        },
    )


def _case_context(session: Session, actor: Actor, case_id: int) -> dict[str, Any]:
    patient = get_case(session, actor, case_id)
    studies = []
    study_rows = service.case_studies(session, patient)
    for study in study_rows:
        series_rows = []
        for se in service.study_series(session, study):
            middle = _middle_instance(session, se)
            series_rows.append({"series": se, "thumb": middle})
        studies.append({"study": study, "series": series_rows})
    from pair.reporting.pages import study_panel

    return {
        **study_panel(session, actor, list(study_rows)),
        "case": patient,
        "facility": accounts.get_facility(session, patient.facility_id),
        "studies": studies,
        "dictionary": load_dictionary(),
        "can_edit": actor.role in service.WRITE_ROLES,
    }


def _middle_instance(session: Session, series: Series) -> Instance | None:
    uids = list(
        session.scalars(
            select(Instance)
            .where(Instance.series_pk == series.id)
            .order_by(Instance.instance_number, Instance.id)
        )
    )
    return uids[len(uids) // 2] if uids else None


@router.get("/cases/{case_id}")
def case_page(
    case_id: int,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    ctx = _case_context(session, actor, case_id)
    ctx["values"] = service.read_clinical(session, actor, case_id)
    ctx["errors"] = {}
    if request.query_params.get("saved"):
        ctx["flash"] = "Clinical data saved."
    return render(request, "clinical/case.html", ctx)


@router.post("/cases/{case_id}/clinical")
async def case_clinical_save(
    case_id: int,
    request: Request,
    session: Session = SessionDep,
    actor: Actor = Depends(page_actor),
) -> Response:
    form = await request.form()
    names = load_dictionary().names
    raw = {n: str(form.get(n, "")) for n in names}
    try:
        service.write_clinical(session, actor, case_id, raw)
    except Invalid as exc:
        session.rollback()
        ctx = _case_context(session, actor, case_id)
        ctx["values"] = raw
        ctx["errors"] = {d["field"]: d["message"] for d in (exc.details or [])}
        ctx["flash"], ctx["flash_kind"] = exc.message, "error"
        return render(request, "clinical/case.html", ctx, 422)
    return RedirectResponse(f"/cases/{case_id}?saved=1", status_code=303)
