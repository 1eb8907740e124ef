"""De-identification administration API: the facility's profile and the mapping export (the
instances flagged for burned-in text review are the repository's: ``repository.burned_in``)."""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Body, Depends
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from pair.accounts.models import Facility
from pair.accounts.policy import Action
from pair.audit.service import Actor
from pair.core.errors import NotFound
from pair.deid import service
from pair.deid.profile import default_profile_text, profile_for, profile_warnings
from pair.web.deps import SessionDep, facility_member, own_facility

router = APIRouter(prefix="/api/deid", tags=["de-identification"])
# the operator has no facility of its own here: these routes act on the caller's facility
_member = [Depends(facility_member)]


class ProfileOut(BaseModel):
    facility_id: int
    custom: bool
    yaml: str
    label: str
    warnings: list[str] = []


def _facility(session: Session, actor: Actor) -> Facility:
    facility = session.get(Facility, actor.facility_id or 0)
    if facility is None:
        raise NotFound("This account belongs to no facility.")
    return facility


@router.get("/profile", response_model=ProfileOut, dependencies=_member)
def get_profile(
    session: Session = SessionDep, actor: Actor = Depends(own_facility(Action.DEID_PROFILE_READ))
) -> ProfileOut:
    f = _facility(session, actor)
    text = f.deid_profile or default_profile_text()
    return ProfileOut(
        facility_id=f.id,
        custom=f.deid_profile is not None,
        yaml=text,
        label=profile_for(f.deid_profile).label,
        warnings=profile_warnings(profile_for(f.deid_profile)),
    )


@router.put("/profile", response_model=ProfileOut, dependencies=_member)
def put_profile(
    yaml_text: str = Body(..., media_type="text/plain"),
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.DEID_PROFILE_WRITE)),
) -> ProfileOut:
    """Replace the facility's profile (YAML); invalid profiles are refused with the reason."""
    f = _facility(session, actor)
    service.set_facility_profile(session, f, yaml_text, actor)
    profile = profile_for(yaml_text)
    return ProfileOut(
        facility_id=f.id,
        custom=True,
        yaml=yaml_text,
        label=profile.label,
        warnings=profile_warnings(profile),
    )


@router.get("/mapping.csv", response_class=PlainTextResponse, dependencies=_member)
def export_mapping(
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.DEID_MAPPING_EXPORT)),
) -> Response:
    """The re-identification mapping (PHI). Admins only; audited; never leaves the site."""
    rows = service.export_mapping(session, _facility(session, actor).id, actor=actor)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(service.EXPORT_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return Response(
        buf.getvalue(),
        media_type="text/csv",
        headers={
            "Cache-Control": "no-store",
            "Content-Disposition": 'attachment; filename="pair-mapping.csv"',
        },
    )
