"""Cases and clinical data API. The request/response schema comes from the data dictionary."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query
from sqlalchemy.orm import Session

from pair.audit.service import Actor
from pair.clinical import service
from pair.clinical.dictionary import load_dictionary
from pair.web.deps import SessionDep, current_actor

router = APIRouter(prefix="/api", tags=["cases"])
_SCHEMA = load_dictionary().json_schema()
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": _SCHEMA}}}}
_RESPONSE = {
    200: {"content": {"application/json": {"schema": _SCHEMA}}},
    422: {"description": "Rules broken: details list field, rule, value, message."},
}


@router.get("/clinical/dictionary")
def dictionary() -> dict[str, Any]:
    """The data dictionary in force (version, fields, JSON schema)."""
    d = load_dictionary()
    return {
        "name": d.name,
        "version": d.version,
        "schema": _SCHEMA,
        "age_bands": [b.label for b in d.age_bands],
    }


@router.get("/cases")
def list_cases(
    study_date_from: str | None = Query(None, description="Shifted study date ≥ (YYYYMMDD)"),
    study_date_to: str | None = Query(None, description="Shifted study date ≤ (YYYYMMDD)"),
    modality: str | None = None,
    covid19_positive: str | None = None,
    sex: str | None = None,
    age_band: str | None = None,
    facility_id: int | None = None,
    text: str | None = Query(None, description="Matches pseudonym and study/series descriptions"),
    sort: str = "pseudonym",
    order: Literal["asc", "desc"] = "asc",
    limit: int = Query(25, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    """Cases of the caller's facility (admins: every facility) matching the filters."""
    q = service.CaseQuery(
        study_date_from=study_date_from,
        study_date_to=study_date_to,
        modality=modality,
        covid19_positive=covid19_positive,
        sex=sex,
        age_band=age_band,
        facility_id=facility_id,
        text=text,
        sort=sort,
        order=order,
        limit=limit,
        offset=offset,
    )
    result = service.list_cases(session, actor, q)
    return {
        "total": result.total,
        "limit": limit,
        "offset": offset,
        "items": [vars(r) for r in result.items],
    }


@router.get("/cases/{case_id}/clinical", responses=_RESPONSE)  # type: ignore[arg-type]
def get_clinical(
    case_id: int,
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    return service.read_clinical(session, actor, case_id)


@router.put("/cases/{case_id}/clinical", openapi_extra=_BODY, responses=_RESPONSE)  # type: ignore[arg-type]
def put_clinical(
    case_id: int,
    body: dict[str, Any] = Body(...),
    session: Session = SessionDep,
    actor: Actor = Depends(current_actor),
) -> dict[str, Any]:
    """Replace the clinical record (data managers and admins); 422 lists every broken rule."""
    data = service.write_clinical(session, actor, case_id, body)
    return data
