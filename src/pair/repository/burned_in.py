"""The burned-in text review: stored instances flagged at ingest (the repository's data, under
the de-identification API path where admins look for it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action, authorize
from pair.audit.service import Actor, record
from pair.core.errors import NotFound
from pair.repository.models import Instance, Series, Study
from pair.web.deps import SessionDep, facility_member, own_facility

router = APIRouter(prefix="/api/deid", tags=["de-identification"])
# the operator has no facility of its own here: the route acts on the caller's facility
_member = [Depends(facility_member)]


class BurnedInOut(BaseModel):
    sop_instance_uid: str
    series_uid: str
    study_uid: str
    modality: str
    reasons: list[str]
    received_at: datetime


def _facility_id(session: Session, actor: Actor) -> int:
    facility = session.get(Facility, actor.facility_id or 0)
    if facility is None:
        raise NotFound("This account belongs to no facility.")
    return facility.id


def burned_in_review(
    session: Session, facility_id: int, actor: Actor, *, limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """The facility's stored instances flagged at ingest for burned-in text review (pixels are
    never cleaned; an admin looks at them). Reasons only, no header values; audited."""
    authorize(actor, Action.DEID_BURNED_IN_REVIEW, facility_id, missing="No such facility.")
    rows = session.execute(
        select(
            Instance.sop_instance_uid,
            Series.series_uid,
            Study.study_uid,
            Series.modality,
            Instance.burned_in_risk,
            Instance.received_at,
        )
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .where(Study.facility_id == facility_id, Instance.burned_in_risk != "")
        .order_by(Instance.id)
        .limit(limit)
        .offset(offset)
    ).all()
    record(
        session,
        actor,
        "deid.burned_in.list",
        "facility",
        str(facility_id),
        detail={"rows": len(rows)},
    )
    return [
        {
            "sop_instance_uid": r[0],
            "series_uid": r[1],
            "study_uid": r[2],
            "modality": r[3],
            "reasons": r[4].split("; "),
            "received_at": r[5],
        }
        for r in rows
    ]


@router.get("/burned-in-review", response_model=list[BurnedInOut], dependencies=_member)
def burned_in_review_route(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.DEID_BURNED_IN_REVIEW)),
) -> list[BurnedInOut]:
    """Stored instances of the admin's facility whose pixels may carry burned-in text."""
    rows = burned_in_review(
        session, _facility_id(session, actor), actor, limit=limit, offset=offset
    )
    return [BurnedInOut(**r) for r in rows]
