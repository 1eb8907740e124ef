"""Audit log API: a facility admin sees its facility's events, the node operator every event."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from pair.accounts.policy import Action, scope
from pair.audit.models import AuditEvent
from pair.audit.service import Actor
from pair.web.deps import SessionDep, own_facility

router = APIRouter(prefix="/api/audit", tags=["audit"])


class AuditOut(BaseModel):
    id: int
    at: datetime
    user_name: str
    facility_id: int | None
    action: str
    object_type: str
    object_id: str
    source: str
    outcome: str
    detail: dict[str, Any]


@router.get("", response_model=list[AuditOut])
def list_audit(
    user: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    session: Session = SessionDep,
    actor: Actor = Depends(own_facility(Action.AUDIT_READ)),
) -> list[AuditOut]:
    stmt = select(AuditEvent).order_by(AuditEvent.id.desc())
    facility_id = scope(actor, Action.AUDIT_READ)
    if facility_id is not None:
        stmt = stmt.where(AuditEvent.facility_id == facility_id)
    if user:
        stmt = stmt.where(AuditEvent.user_name == user)
    if action:
        stmt = stmt.where(AuditEvent.action.startswith(action))
    if object_type:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at <= until)
    rows = session.scalars(stmt.limit(limit).offset(offset))
    return [AuditOut.model_validate(r, from_attributes=True) for r in rows]
